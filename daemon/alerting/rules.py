"""The rule engine: Observations in, alert state changes out. Pure: time comes from the inputs.

Per rule and label set (one *series*, identified by the alert's fingerprint)::

    inactive ──active──▶ pending ──active for `for_seconds`──▶ firing
        ▲                  │                                     │ inactive for keep_firing_for
        └──── inactive ────┘◀──────────── resolved ◀─────────────┘

*Active* means the condition held on the latest reading — or, with ``times``/``within_seconds``,
that it held at least ``times`` times within the window (catches flapping that ``for`` misses).
While firing, a numeric condition is judged against ``clear_threshold`` (hysteresis). Event
metrics (log lines, file changes) have no "false" reading: their alerts go inactive when the
window empties, then resolve after ``keep_firing_for_seconds`` (default 300 s without a window).
"""

from __future__ import annotations

import operator
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from daemon.alerting.settings import RuleSettings
from daemon.alerting.templates import render
from daemon.core.alerts import (
    EVENT_METRICS,
    AlertEvent,
    AlertState,
    Change,
    Observation,
    SeriesState,
    fingerprint,
)
from daemon.core.patterns import PatternFilter, compile_pattern

DEFAULT_EVENT_KEEP_SECONDS = 300.0
MAX_TEXT_IN_ANNOTATION = 500

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}


class CompiledRule:
    """A validated RuleSettings with its regexes compiled and its operators resolved."""

    def __init__(self, settings: RuleSettings) -> None:
        self.settings = settings
        self.name = settings.name
        self.is_event = settings.metric in EVENT_METRICS
        self._match = compile_pattern(settings.match) if settings.match else None
        self._where_re = {key: compile_pattern(p) for key, p in settings.where_re.items()}
        self._op = _OPS[settings.op] if settings.op else None
        self.for_seconds = timedelta(seconds=settings.for_seconds)
        self.window = timedelta(seconds=settings.within_seconds or 0)
        keep = settings.keep_firing_for_seconds
        if keep is None:
            keep = DEFAULT_EVENT_KEEP_SECONDS if self.is_event and not self.window else 0.0
        self.keep_firing_for = timedelta(seconds=keep)

    def selects(self, obs: Observation) -> bool:
        labels = obs.labels
        for key, value in self.settings.where.items():
            if labels.get(key) != value:
                return False
        return all(
            key in labels and pattern.fullmatch(labels[key])
            for key, pattern in self._where_re.items()
        )

    def judge(self, obs: Observation, *, firing: bool) -> tuple[bool, dict[str, str]]:
        """Whether the condition holds for ``obs`` (and the regex's named groups)."""
        if self._match is not None:
            found = self._match.search(obs.text)
            if found is None:
                return False, {}
            return True, {k: v for k, v in found.groupdict().items() if v is not None}
        if obs.value is None or self._op is None:
            return False, {}
        settings = self.settings
        limit = settings.threshold
        if firing and settings.clear_threshold is not None:
            limit = settings.clear_threshold
        assert limit is not None
        return self._op(obs.value, limit), {}

    def alert_labels(self, obs: Observation, captures: Mapping[str, str]) -> dict[str, str]:
        labels = {**obs.labels, **self.settings.labels}
        for name in self.settings.capture_labels:
            if name in captures:
                labels[name] = captures[name]
        labels["alertname"] = self.name
        labels["severity"] = self.settings.severity
        return labels

    def annotations(
        self, labels: Mapping[str, str], obs: Observation, captures: Mapping[str, str]
    ) -> dict[str, str]:
        values: dict[str, Any] = {
            **captures,
            **labels,
            "labels": labels,
            "value": obs.value if obs.value is not None else "",
            "threshold": self.settings.threshold if self.settings.threshold is not None else "",
            "text": obs.text[:MAX_TEXT_IN_ANNOTATION],
        }
        settings = self.settings
        found = {
            "summary": render(settings.summary or _default_summary(settings), values),
            "description": render(settings.description, values),
            "runbook": settings.runbook,
        }
        return {key: value for key, value in found.items() if value}


@dataclass(slots=True)
class _Series:
    rule: CompiledRule
    fingerprint: str
    labels: dict[str, str]
    annotations: dict[str, str]
    value: float | None
    state: SeriesState | None = None  # None = inactive (not stored)
    active: bool = False
    active_since: datetime | None = None
    fired_at: datetime | None = None
    inactive_since: datetime | None = None
    last_true_at: datetime | None = None
    hits: deque[datetime] = field(default_factory=deque)

    def snapshot(self, now: datetime) -> AlertState:
        assert self.state is not None and self.active_since is not None
        return AlertState(
            fingerprint=self.fingerprint,
            rule=self.rule.name,
            state=self.state,
            labels=dict(self.labels),
            annotations=dict(self.annotations),
            value=self.value,
            active_since=self.active_since,
            fired_at=self.fired_at,
            updated_at=now,
        )

    def event(self, status: Literal["firing", "resolved"], now: datetime) -> AlertEvent:
        assert self.fired_at is not None
        return AlertEvent(
            fingerprint=self.fingerprint,
            status=status,
            labels=dict(self.labels),
            annotations=dict(self.annotations),
            starts_at=self.fired_at,
            ends_at=now if status == "resolved" else None,
            at=now,
            value=self.value,
            source="rule",
        )


class _MetricRules:
    """The rules on one metric, and one pass over the text that rules most regexes out."""

    def __init__(self, rules: list[CompiledRule]) -> None:
        self.rules = rules
        patterns = [rule.settings.match for rule in rules if rule.settings.match]
        slots = iter(range(len(patterns)))
        self.slots = [next(slots) if rule.settings.match else None for rule in rules]
        self.prefilter = PatternFilter(patterns) if len(patterns) > 1 else None


class RuleEngine:
    """Holds every series; ``evaluate`` and ``tick`` return the changes to persist and announce."""

    def __init__(self, rules: Iterable[RuleSettings]) -> None:
        self.rules = [CompiledRule(rule) for rule in rules if rule.enabled]
        by_metric: dict[str, list[CompiledRule]] = {}
        for rule in self.rules:
            by_metric.setdefault(rule.settings.metric, []).append(rule)
        self._by_metric = {metric: _MetricRules(found) for metric, found in by_metric.items()}
        self._series: dict[str, _Series] = {}
        self.evaluations = 0

    def restore(self, states: Iterable[AlertState], now: datetime) -> int:
        """Load stored pending/firing alerts, so a restart neither forgets nor re-announces."""
        by_name = {rule.name: rule for rule in self.rules}
        restored = 0
        for stored in states:
            rule = by_name.get(stored.rule)
            if rule is None:
                continue  # the rule was removed from config: the caller resolves these
            series = _Series(
                rule=rule,
                fingerprint=stored.fingerprint,
                labels=dict(stored.labels),
                annotations=dict(stored.annotations),
                value=stored.value,
                state=stored.state,
                active=not rule.is_event,
                active_since=stored.active_since,
                fired_at=stored.fired_at,
                last_true_at=stored.updated_at,
            )
            if rule.is_event:
                series.inactive_since = now
            self._series[stored.fingerprint] = series
            restored += 1
        return restored

    def evaluate(self, obs: Observation) -> list[Change]:
        """Judge one observation against every rule on its metric."""
        changes: list[Change] = []
        found = self._by_metric.get(obs.metric)
        if found is None:
            return changes
        maybe = found.prefilter.candidates(obs.text) if found.prefilter is not None else None
        for rule, slot in zip(found.rules, found.slots, strict=True):
            if not rule.selects(obs):
                continue
            self.evaluations += 1
            miss = maybe is not None and slot is not None and slot not in maybe
            change = self._evaluate_rule(rule, obs, miss=miss)
            if change is not None:
                changes.append(change)
        return changes

    def _evaluate_rule(self, rule: CompiledRule, obs: Observation, *, miss: bool) -> Change | None:
        """``miss``: the prefilter already knows the rule's regex cannot match ``obs.text``."""
        now = obs.at
        held, captures = (False, {}) if miss else rule.judge(obs, firing=False)
        if rule.is_event and not held:
            return None  # a line that does not match says nothing about the alert
        labels = rule.alert_labels(obs, captures)
        key = fingerprint(labels)
        series = self._series.get(key)
        if series is not None and series.state == "firing" and not held and not miss:
            held, _ = rule.judge(obs, firing=True)  # hysteresis: judged against clear_threshold
        if series is None:
            if not held:
                return None
            series = _Series(rule=rule, fingerprint=key, labels=labels, annotations={}, value=None)
            self._series[key] = series
        if rule.is_event and not held:
            return None  # a line that does not match says nothing about the alert
        if held:
            series.hits.append(now)
            series.last_true_at = now
            series.value = obs.value
            series.annotations = rule.annotations(labels, obs, captures)
        elif not rule.is_event:
            series.value = obs.value
        series.active = self._active(series, now, held)
        return self._advance(series, now)

    def tick(self, now: datetime) -> list[Change]:
        """Apply time-based transitions (for, keep_firing_for, event windows) due by ``now``."""
        changes = []
        for series in list(self._series.values()):
            if series.rule.is_event or series.rule.window:
                series.active = self._active(series, now, held=False)
            change = self._advance(series, now)
            if change is not None:
                changes.append(change)
        return changes

    def next_deadline(self) -> datetime | None:
        """When ``tick`` next has something to do (None: nothing is waiting on time)."""
        deadlines = [d for s in self._series.values() if (d := _deadline(s)) is not None]
        return min(deadlines, default=None)

    def alerts(self) -> list[AlertState]:
        """Pending and firing alerts, for status and chat."""
        return [
            s.snapshot(s.last_true_at or s.active_since)  # type: ignore[arg-type]
            for s in self._series.values()
            if s.state is not None
        ]

    @staticmethod
    def _active(series: _Series, now: datetime, held: bool) -> bool:
        rule = series.rule
        if rule.window:
            while series.hits and series.hits[0] <= now - rule.window:
                series.hits.popleft()
            return len(series.hits) >= rule.settings.times
        while len(series.hits) > 1:
            series.hits.popleft()
        return held

    def _advance(self, series: _Series, now: datetime) -> Change | None:
        before = series.state
        announce: AlertEvent | None = None
        if series.active:
            series.inactive_since = None
            if series.state is None:
                series.state, series.active_since = "pending", now
            if series.state == "pending" and now - series.active_since >= series.rule.for_seconds:  # type: ignore[operator]
                series.state, series.fired_at = "firing", now
                announce = series.event("firing", now)
        elif series.state == "firing":
            if series.inactive_since is None:
                series.inactive_since = now
            if now - series.inactive_since >= series.rule.keep_firing_for:
                announce = series.event("resolved", now)
                series.state = None
        else:
            series.state = None
        if series.state is None:
            if series.rule.window and series.hits and announce is None:
                return None  # still counting hits toward `times` within the window
            del self._series[series.fingerprint]
            if before is None:
                return None
            return Change(fingerprint=series.fingerprint, state=None, event=announce)
        if series.state == before and announce is None:
            return None
        return Change(fingerprint=series.fingerprint, state=series.snapshot(now), event=announce)


def _deadline(series: _Series) -> datetime | None:
    rule = series.rule
    if series.state == "pending" and series.active and series.active_since is not None:
        return series.active_since + rule.for_seconds
    if series.state == "firing" and series.inactive_since is not None:
        return series.inactive_since + rule.keep_firing_for
    if series.state is None and series.hits:
        return series.hits[0] + rule.window  # forget hits that leave the window
    if rule.is_event and series.active and series.hits:
        if rule.window:
            index = len(series.hits) - rule.settings.times
            return series.hits[max(index, 0)] + rule.window
        return series.hits[-1]
    return None


def _default_summary(settings: RuleSettings) -> str:
    if settings.match is not None:
        return f"{settings.metric} matched {settings.match!r}: {{text}}"
    return f"{settings.metric} {settings.op} {settings.threshold:g} (now {{value}})"
