"""Config models for rules, incidents, silences, maintenance, inhibition and remediation."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from daemon.alerting.templates import check_template
from daemon.core.alerts import EVENT_METRICS, METRICS, TEXT_METRICS
from daemon.core.patterns import compile_pattern
from daemon.core.section import Section, check_hhmm, check_regex, check_regexes, check_zone

Severity = Literal["info", "warning", "critical"]
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_LABEL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class RuleSettings(Section):
    """One alerting rule: a condition on a watcher metric, with timing and presentation."""

    name: str = Field(min_length=1)  # the alertname
    metric: str
    where: dict[str, str] = Field(default_factory=dict)  # observation labels, exact
    where_re: dict[str, str] = Field(default_factory=dict)  # observation labels, regex
    op: Literal[">", ">=", "<", "<=", "==", "!="] | None = None
    threshold: float | None = None
    match: str | None = None  # regex searched in the observation text (log line, output…)
    clear_threshold: float | None = None  # hysteresis: stays firing until past this value
    for_seconds: float = Field(default=0.0, ge=0, le=7 * 86400)
    times: int = Field(default=1, ge=1, le=1_000_000)  # "X times within Y"
    within_seconds: float | None = Field(default=None, gt=0, le=7 * 86400)
    keep_firing_for_seconds: float | None = Field(default=None, ge=0, le=7 * 86400)
    severity: Severity = "warning"
    labels: dict[str, str] = Field(default_factory=dict)
    capture_labels: list[str] = Field(default_factory=list)  # named regex groups → labels
    summary: str = ""
    description: str = ""
    runbook: str = ""  # a file in incidents.runbooks_dir, or a URL
    enabled: bool = True

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError(f"rule name {value!r} must be letters, digits, '_', '.', '-'")
        return value

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if value not in METRICS:
            raise ValueError(f"unknown metric {value!r}; known: {', '.join(sorted(METRICS))}")
        return value

    _where_re = field_validator("where_re")(lambda cls, patterns: check_regexes(patterns))

    @field_validator("match")
    @classmethod
    def _match(cls, value: str | None) -> str | None:
        return None if value is None else check_regex(value)

    @field_validator("labels")
    @classmethod
    def _labels(cls, labels: dict[str, str]) -> dict[str, str]:
        for key in labels:
            if not _LABEL.fullmatch(key) or key in ("alertname", "severity"):
                raise ValueError(
                    f"label {key!r}: use letters, digits and '_' (alertname and severity are set "
                    "from the rule's name and severity)"
                )
        return labels

    @field_validator("summary", "description")
    @classmethod
    def _templates(cls, value: str) -> str:
        return check_template(value)

    @model_validator(mode="after")
    def _coherent(self) -> RuleSettings:
        numeric = self.op is not None or self.threshold is not None
        if numeric and (self.op is None or self.threshold is None):
            raise ValueError('give both op and threshold (e.g. op = ">", threshold = 90)')
        if numeric == (self.match is not None):
            raise ValueError(
                'give exactly one condition: op + threshold for a number, or match = "regex" '
                "for text"
            )
        if self.match is not None and self.metric not in TEXT_METRICS:
            raise ValueError(
                f"match needs a text metric ({', '.join(sorted(TEXT_METRICS))}); "
                f"{self.metric!r} is a number: use op and threshold"
            )
        if self.op is not None and self.metric in EVENT_METRICS:
            raise ValueError(f'{self.metric!r} carries text: use match = "regex"')
        if self.clear_threshold is not None:
            self._check_clear()
        if self.times > 1 and self.within_seconds is None:
            raise ValueError(f"times = {self.times} needs within_seconds (the window Y)")
        if self.capture_labels:
            groups = compile_pattern(self.match or "").groupindex
            missing = [name for name in self.capture_labels if name not in groups]
            if missing:
                raise ValueError(
                    f"capture_labels {missing} are not named groups of match (use (?P<name>…))"
                )
        return self

    def _check_clear(self) -> None:
        assert self.threshold is not None and self.clear_threshold is not None
        if self.op in (">", ">=") and self.clear_threshold > self.threshold:
            raise ValueError(
                f"clear_threshold {self.clear_threshold:g} must be at or below threshold "
                f"{self.threshold:g} for op {self.op!r}"
            )
        if self.op in ("<", "<=") and self.clear_threshold < self.threshold:
            raise ValueError(
                f"clear_threshold {self.clear_threshold:g} must be at or above threshold "
                f"{self.threshold:g} for op {self.op!r}"
            )
        if self.op in ("==", "!="):
            raise ValueError("clear_threshold works with <, <=, > and >= only")


def _check_matchers(texts: list[str]) -> list[str]:
    from daemon.alerting.matchers import parse_matchers

    parse_matchers(texts)
    return texts


def _check_any_matchers(texts: list[str]) -> list[str]:
    from daemon.alerting.matchers import parse_matchers

    parse_matchers(texts, narrow=False)
    return texts


class InhibitSettings(Section):
    """While a source alert fires, mute target alerts that share the ``equal`` labels."""

    source: list[str] = Field(min_length=1)  # matchers, e.g. ["alertname=HostDown"]
    target: list[str] = Field(min_length=1)  # matchers, e.g. ["severity=~warning|info"]
    equal: list[str] = Field(default_factory=list)  # labels that must be the same on both

    _source = field_validator("source")(_check_matchers)
    _target = field_validator("target")(_check_any_matchers)


_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class MaintenanceSettings(Section):
    """A recurring window during which matching alerts are recorded but not notified."""

    name: str = Field(min_length=1)
    matchers: list[str] = Field(min_length=1)
    days: list[str] = Field(default_factory=lambda: list(_WEEKDAYS))  # mon…sun
    start: str  # "HH:MM" local time
    duration_minutes: int = Field(gt=0, le=7 * 24 * 60)
    timezone: str = "UTC"

    _matchers = field_validator("matchers")(_check_matchers)

    @field_validator("days")
    @classmethod
    def _days(cls, days: list[str]) -> list[str]:
        bad = [day for day in days if day.lower() not in _WEEKDAYS]
        if bad:
            raise ValueError(f"unknown day(s) {bad}; use {', '.join(_WEEKDAYS)}")
        return [day.lower() for day in days]

    _start = field_validator("start")(lambda cls, value: check_hhmm(value))
    _zone = field_validator("timezone")(lambda cls, value: check_zone(value))


class AutoRemediationSettings(Section):
    """An exact action that may run without asking a person, for alerts matching ``matchers``."""

    matchers: list[str] = Field(min_length=1)
    tool: str = Field(min_length=1)  # e.g. "restart_service"
    arguments: dict[str, str | int | float | bool] = Field(default_factory=dict)

    _matchers = field_validator("matchers")(_check_matchers)


class RemediationSettings(Section):
    """Fixes proposed by investigations: approval, allowlist, loop breaker, verification."""

    enabled: bool = True
    approval_ttl_seconds: float = Field(default=900.0, gt=0, le=86400)  # expiry means deny
    max_actions: int = Field(default=3, ge=1)  # per alert name …
    window_minutes: float = Field(default=60.0, gt=0)  # … within this many minutes
    verify_seconds: float = Field(default=300.0, gt=0)  # does the incident resolve in time?
    restart_command: list[str] = Field(  # how restart_service restarts; {service} is replaced
        default_factory=lambda: ["systemctl", "restart", "{service}"], min_length=1
    )
    clean_dirs: list[Path] = Field(default_factory=list)  # directories clean_directory may prune
    auto: list[AutoRemediationSettings] = Field(default_factory=list)

    @field_validator("restart_command")
    @classmethod
    def _has_placeholder(cls, argv: list[str]) -> list[str]:
        if not any("{service}" in part for part in argv):
            raise ValueError(
                f"restart_command {argv} has no {{service}} placeholder; e.g. "
                '["systemctl", "restart", "{service}"]'
            )
        return argv


class IncidentSettings(Section):
    """How alerts become incidents and notifications (Alertmanager's discipline)."""

    group_by: list[str] = Field(default_factory=lambda: ["alertname"])
    group_wait_seconds: float = Field(default=30.0, ge=0, le=86400)
    group_interval_seconds: float = Field(default=300.0, gt=0, le=7 * 86400)
    repeat_interval_seconds: float = Field(default=4 * 3600.0, gt=0, le=30 * 86400)
    send_resolved: bool = True
    investigate: list[Severity] = Field(default_factory=lambda: ["warning", "critical"])  # type: ignore[arg-type]
    # A flood of incidents must not spend the day's tokens: beyond these, incidents are
    # announced rule-only with a note that the investigation was skipped.
    max_concurrent_investigations: int = Field(default=3, ge=1, le=100)
    max_investigations_per_hour: int = Field(default=20, ge=1, le=10_000)
    max_investigation_tokens_per_hour: int = Field(default=500_000, ge=1_000, le=10**9)
    runbooks_dir: Path | None = None  # markdown runbooks; default: <state dir>/runbooks
    postmortems: bool = True
    inhibit: list[InhibitSettings] = Field(default_factory=list)
    maintenance: list[MaintenanceSettings] = Field(default_factory=list)
    remediation: RemediationSettings = Field(default_factory=RemediationSettings)

    @model_validator(mode="after")
    def _intervals(self) -> IncidentSettings:
        if self.repeat_interval_seconds < self.group_interval_seconds:
            raise ValueError(
                f"repeat_interval_seconds ({self.repeat_interval_seconds:g}) is shorter than "
                f"group_interval_seconds ({self.group_interval_seconds:g}); a reminder cannot "
                "come sooner than an update"
            )
        return self
