"""Remediation: run a proposed fix only after a person approves it (or the allowlist does).

For each proposal, in order: stop if the incident is over; stop and escalate when the budget
("max_actions within window_minutes for the same alert") is spent; run it if it exactly matches
an ``[[incidents.remediation.auto]]`` entry, else ask in chat (expiry means deny); then verify —
does the incident resolve within ``verify_seconds``? — and record the outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any

from daemon.agent.executor import ToolExecutor
from daemon.agent.tools.base import ToolContext
from daemon.alerting.matchers import match_all, parse_matchers
from daemon.config import Settings
from daemon.core.abc import Approver
from daemon.core.clock import Clock
from daemon.incidents.poster import IncidentPoster
from daemon.response.investigation import Proposal
from memory.incidents import IncidentAlert, IncidentRepo

log = logging.getLogger(__name__)

SETTLE_TIMEOUT_SECONDS = 60.0


class Remediator:
    """Asks, runs, verifies and records; one proposal at a time per incident."""

    def __init__(
        self,
        settings: Callable[[], Settings],
        *,
        executor: ToolExecutor,
        approvals: Approver,
        incidents: IncidentRepo,
        poster: IncidentPoster,
        clock: Clock,
    ) -> None:
        self._settings = settings
        self._executor = executor
        self._approvals = approvals
        self._incidents = incidents
        self._poster = poster
        self._clock = clock
        self._resolved: dict[int, asyncio.Event] = {}
        self._working: dict[int, asyncio.Event] = {}

    def incident_resolved(self, incident_id: int) -> None:
        if len(self._resolved) > 1000:  # forget long-settled incidents
            for key in [k for k, e in self._resolved.items() if e.is_set()]:
                del self._resolved[key]
        self._resolved.setdefault(incident_id, asyncio.Event()).set()

    async def settled(self, incident_id: int) -> None:
        """Wait (bounded) until this incident's remediation has recorded its outcome."""
        done = self._working.get(incident_id)
        if done is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), SETTLE_TIMEOUT_SECONDS)

    async def handle(self, incident_id: int, proposals: Sequence[Proposal]) -> None:
        done = self._working[incident_id] = asyncio.Event()
        try:
            for proposal in proposals:
                if await self._try(incident_id, proposal):
                    return
        finally:
            done.set()
            self._working.pop(incident_id, None)

    async def _try(self, incident_id: int, proposal: Proposal) -> bool:
        """Handle one proposal; True when nothing more should be tried."""
        settings = self._settings()
        rem = settings.incidents.remediation
        incident = await self._incidents.get(incident_id)
        if incident.state != "open" or self._is_resolved(incident_id):
            return True
        if not rem.enabled:
            await self._incidents.note(incident_id, "remediation off", proposal.describe())
            return True
        if proposal.tool not in self._executor.registry.names():
            await self._incidents.note(
                incident_id, "proposal rejected", f"unknown tool {proposal.tool}"
            )
            return False
        alerts = [a for a in await self._incidents.alerts(incident_id) if a.status == "firing"]
        alertname = alerts[0].name if alerts else incident.title
        since = self._clock.now() - timedelta(minutes=rem.window_minutes)
        used = await self._incidents.remediations_since(alertname, since)
        if used >= rem.max_actions:
            message = (
                f"Incident #{incident_id}: {used} remediation action(s) for {alertname} in the "
                f"last {rem.window_minutes:g} minutes — the limit. I will not try "
                f"{proposal.describe()}; a person needs to look."
            )
            await self._incidents.note(incident_id, "escalated", message)
            await self._poster.post(incident_id, message, "remediation")
            return True
        decided_by = self._allowlisted(proposal, alerts, rem.auto)
        if decided_by is None:
            decided_by = await self._ask(incident_id, incident, proposal, rem.approval_ttl_seconds)
            if decided_by is None:
                return False
        return await self._run(incident_id, alertname, proposal, decided_by, rem.verify_seconds)

    async def _ask(
        self, incident_id: int, incident: Any, proposal: Proposal, ttl: float
    ) -> str | None:
        await self._incidents.note(incident_id, "approval requested", proposal.describe())
        decision = await self._approvals.request(
            tool=proposal.tool,
            arguments=dict(proposal.arguments),
            actor=f"incident #{incident_id}",
            reason=proposal.reason or f"fix for incident #{incident_id}",
            ttl_seconds=ttl,
            conversation=self._poster.origin(incident),
        )
        if decision.approved:
            await self._incidents.note(incident_id, "approved", proposal.describe(), decision.by)
            return decision.by
        await self._incidents.note(
            incident_id, "denied", f"{proposal.describe()} {decision.note}".strip(), decision.by
        )
        await self._incidents.record_remediation(
            incident_id, incident.title, proposal.describe(), decision.by, "denied"
        )
        return None

    async def _run(
        self, incident_id: int, alertname: str, proposal: Proposal, decided_by: str, verify: float
    ) -> bool:
        settings = self._settings()
        ctx = ToolContext(
            actor=f"incident #{incident_id} (approved by {decided_by})",
            reason=proposal.reason,
            settings=settings,
            clock=self._clock,
        )
        outcome = await self._executor.execute(
            proposal.tool, json.dumps(dict(proposal.arguments)), ctx, approved_by=decided_by
        )
        result = "ran" if outcome.ok else "failed"
        await self._incidents.record_remediation(
            incident_id, alertname, proposal.describe(), decided_by, result
        )
        await self._incidents.note(
            incident_id, f"action {result}", f"{proposal.describe()}: {outcome.text[:500]}"
        )
        if not outcome.ok:
            await self._poster.post(
                incident_id,
                f"Incident #{incident_id}: {proposal.describe()} failed: {outcome.text[:300]}",
                "remediation",
            )
            return False
        await self._poster.post(
            incident_id,
            f"Incident #{incident_id}: ran {proposal.describe()} (approved by {decided_by}); "
            f"checking for up to {verify:g}s that the alert resolves.",
            "remediation",
        )
        fixed = await self._wait_resolved(incident_id, verify)
        verdict = "resolved after the action" if fixed else f"still firing {verify:g}s later"
        await self._incidents.note(incident_id, "verified" if fixed else "not fixed", verdict)
        if not fixed:
            await self._poster.post(
                incident_id,
                f"Incident #{incident_id}: {proposal.describe()} did not fix it ({verdict}). "
                "A person needs to look.",
                "remediation",
            )
        return fixed

    async def _wait_resolved(self, incident_id: int, seconds: float) -> bool:
        event = self._resolved.setdefault(incident_id, asyncio.Event())
        try:
            await asyncio.wait_for(event.wait(), seconds)
        except TimeoutError:
            return False
        return True

    def _is_resolved(self, incident_id: int) -> bool:
        event = self._resolved.get(incident_id)
        return event is not None and event.is_set()

    @staticmethod
    def _allowlisted(
        proposal: Proposal, alerts: Sequence[IncidentAlert], allowlist: Sequence[Any]
    ) -> str | None:
        for entry in allowlist:
            if entry.tool != proposal.tool or not _same(entry.arguments, proposal.arguments):
                continue
            matchers = parse_matchers(entry.matchers)
            if any(match_all(matchers, alert.labels) for alert in alerts):
                return "allowlist"
        return None


def _same(allowed: Mapping[str, Any], proposed: Mapping[str, Any]) -> bool:
    return {k: str(v) for k, v in allowed.items()} == {k: str(v) for k, v in proposed.items()}
