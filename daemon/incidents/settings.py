"""Settings of incidents ([incidents], [[routes]]): grouping, muting, routing, remediation."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from daemon.core.alerts import Severity
from daemon.core.section import Section, check_hhmm, check_regexes, check_zone

CHANNEL_NAMES = ("console", "slack", "telegram", "matrix")


class RouteSettings(Section):
    """Where notifications with matching severity/labels go (first match wins unless continue)."""

    match: dict[str, str] = Field(default_factory=dict)  # exact values, e.g. severity = "critical"
    match_re: dict[str, str] = Field(default_factory=dict)  # regular expressions (full match)
    to: list[str] = Field(default_factory=list)  # "slack" (its default target) or "slack:C0OPS"
    continue_matching: bool = False  # also try the routes below

    _valid_regexes = field_validator("match_re")(lambda cls, patterns: check_regexes(patterns))

    @field_validator("to")
    @classmethod
    def _known_channels(cls, targets: list[str]) -> list[str]:
        for target in targets:
            channel = target.split(":", 1)[0]
            if channel not in CHANNEL_NAMES:
                raise ValueError(
                    f"unknown channel {channel!r} in {target!r}; use one of "
                    f"{', '.join(CHANNEL_NAMES)}, optionally with ':target' (e.g. 'slack:C0OPS')"
                )
        return targets


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
