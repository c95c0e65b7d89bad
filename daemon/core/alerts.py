"""The alert model shared by watchers, rules, the Alertmanager receiver and incidents.

watcher ── Observation ──▶ rules ── AlertEvent ──▶ incidents
Alertmanager webhook ───────────── AlertEvent ──▶ incidents
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

AlertStatus = Literal["firing", "resolved"]
SeriesState = Literal["pending", "firing"]  # a stored series; resolved ones are deleted
Severity = Literal["info", "warning", "critical"]
SEVERITIES = ("info", "warning", "critical")

# Every metric a watcher can report, by watcher. Rules are validated against this catalogue.
METRIC_CATALOGUE: dict[str, tuple[str, ...]] = {
    "host": (
        "cpu_percent",
        "memory_percent",
        "swap_percent",
        "load1",
        "load5",
        "load15",
        "disk_percent",  # labels: mount
        "inode_percent",  # labels: mount
        "net_errors",  # errors+drops per second, labels: interface
        "temperature_c",  # labels: sensor
    ),
    "process": (
        "process_up",  # 1 present / 0 absent, labels: process
        "process_count",
        "process_restarts",  # restarts seen since the watcher started
        "process_rss_mb",
        "process_cpu_percent",
    ),
    "port": ("port_open", "port_latency_ms"),  # labels: target
    "http": (
        "http_up",  # 1 when status and body are as expected, labels: target
        "http_status",
        "http_latency_ms",
        "tls_days_left",
    ),
    "file": ("file_changed",),  # text: created/modified/deleted/permissions/checksum, labels: path
    "log": ("log_line",),  # text: the line, labels: path
    "command": ("command_ok", "command_exit_code", "command_output"),  # labels: check
    "meta": (
        "watcher_error",  # 1 while a watcher is failing, labels: watcher; text: why
        "storage_percent",  # the state disk or the database cap used, labels: what; text: sizes
    ),
}
METRICS: frozenset[str] = frozenset(m for names in METRIC_CATALOGUE.values() for m in names)
TEXT_METRICS = frozenset({"file_changed", "log_line", "command_output"})
# Metrics that are events (a match now, silence otherwise): their alerts end after a quiet time.
EVENT_METRICS = frozenset({"file_changed", "log_line"})


@dataclass(frozen=True, kw_only=True, slots=True)
class Observation:
    """One reading from a watcher: a number, a line of text, or both."""

    source: str  # the watcher that saw it, e.g. "host", "log:/var/log/auth.log"
    metric: str  # one of METRICS
    at: datetime
    value: float | None = None
    text: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)  # what was observed: mount, process…


@dataclass(frozen=True, kw_only=True, slots=True)
class AlertEvent:
    """An alert starting or ending. ``labels`` include ``alertname`` and ``severity``."""

    fingerprint: str
    status: AlertStatus
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: datetime
    at: datetime  # when this event happened
    ends_at: datetime | None = None
    value: float | None = None
    source: str = "rule"  # "rule" or "alertmanager"

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "")

    @property
    def severity(self) -> str:
        return self.labels.get("severity", "warning")


def fingerprint(labels: Mapping[str, str]) -> str:
    """A stable id for an alert: the hash of its sorted labels (alertname included)."""
    text = "\x1f".join(f"{key}\x1e{labels[key]}" for key in sorted(labels))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True, kw_only=True, slots=True)
class AlertState:
    """A pending or firing alert as stored in memory (resolved ones are deleted)."""

    fingerprint: str
    rule: str
    state: SeriesState
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    value: float | None
    active_since: datetime
    fired_at: datetime | None
    updated_at: datetime


@dataclass(frozen=True, kw_only=True, slots=True)
class Change:
    """What to persist: the new state (None = delete the row) and the event to announce."""

    fingerprint: str
    state: AlertState | None
    event: AlertEvent | None = None
