"""The ``[memory]`` config section: how long the database keeps each kind of record."""

from __future__ import annotations

from pydantic import Field, ValidationInfo, field_validator

from daemon.core.section import Section

__all__ = ["MemorySettings"]


class MemorySettings(Section):
    """Retention per kind of record (days; 0 keeps forever) and the database size cap.

    What is still needed is never pruned, whatever the window: open incidents, pending outbox
    messages, unhandled alert events, firing alert state, task runs (``[scheduler]
    keep_runs_days``) and facts (curated memory; a postmortem fact goes with its incident).
    """

    alert_events_days: float = 14.0  # raw alert events (handled ones; incidents keep their own)
    outbox_days: float = 30.0  # delivered or failed messages
    incidents_days: float = 365.0  # resolved incidents: timeline, alerts, postmortem fact
    audit_days: float = 90.0  # the tool-call audit log
    agent_runs_days: float = 90.0  # finished agent runs and their steps
    usage_days: float = 400.0  # model calls (cost reports, budgets)
    component_events_days: float = 90.0  # supervisor history
    inbound_days: float = 30.0  # inbound message ids (a platform's redelivery window)
    conversations_days: float = 0.0  # idle conversations and their messages: searchable memory
    max_db_mb: float = Field(default=0.0, ge=0)  # 0: no cap; else an alert near it
    storage_alert_percent: float = Field(default=90.0, ge=50, le=100)  # of disk or cap
    prune_batch: int = Field(default=500, ge=1, le=100_000)  # rows per delete transaction
    # Caps on live facts per kind (0: no cap). At 80 % a warning is logged and shown in
    # `nightshift status`; at the cap a new fact is refused with an error, never dropped.
    facts_max_host: int = Field(default=500, ge=0, le=100_000)
    facts_max_preference: int = Field(default=200, ge=0, le=100_000)
    facts_max_procedure: int = Field(default=300, ge=0, le=100_000)
    facts_max_contact: int = Field(default=200, ge=0, le=100_000)
    facts_max_note: int = Field(default=500, ge=0, le=100_000)
    facts_max_postmortem: int = Field(default=0, ge=0)  # bounded by incidents_days instead

    @field_validator("*")
    @classmethod
    def _days(cls, value: object, info: ValidationInfo) -> object:
        name = info.field_name or ""
        if name.endswith("_days") and isinstance(value, int | float) and value < 0:
            raise ValueError(f"{value:g} is negative; give a number of days (0 keeps forever)")
        return value

    def fact_caps(self) -> dict[str, int]:
        """The cap per kind of fact (0: no cap)."""
        return {
            name.removeprefix("facts_max_"): value
            for name, value in self.model_dump().items()
            if name.startswith("facts_max_")
        }

    def windows(self) -> dict[str, float]:
        """The retention window in days per kind of record, kept-forever kinds left out."""
        return {
            name.removesuffix("_days"): value
            for name, value in self.model_dump().items()
            if name.endswith("_days") and value > 0
        }
