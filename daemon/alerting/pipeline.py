"""Watchers → rule engine → stored alert events: the alerting half of the data path.

``emit`` is what watchers call: it judges the observation at once (the engine is pure and
cheap) and queues the resulting changes; ``run`` commits queued changes in batches, applies
time-based transitions at their deadlines, and wakes the incident manager.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

from daemon.alerting.rules import RuleEngine
from daemon.alerting.settings import RuleSettings
from daemon.core.alerts import AlertEvent, Change, Observation
from daemon.core.clock import Clock
from memory.alerts import AlertRepo

log = logging.getLogger(__name__)

MAX_BATCH = 1000  # changes per transaction: a storm commits in slices, the loop stays responsive

WATCHER_FAILING = RuleSettings(
    name="WatcherFailing",
    metric="watcher_error",
    op=">",
    threshold=0,
    for_seconds=60,  # a file briefly gone during rotation is not worth waking anyone
    severity="warning",
    summary="watcher {watcher} is failing: {text}",
)


def storage_rule(percent: float) -> RuleSettings:
    """The built-in NightshiftStorageFull: the state disk or ``[memory] max_db_mb`` is nearly
    used up (the housekeeping job reports ``storage_percent`` hourly)."""
    return RuleSettings(
        name="NightshiftStorageFull",
        metric="storage_percent",
        op=">=",
        threshold=percent,
        clear_threshold=max(percent - 5, 0),
        severity="critical",
        summary="nightshift's {what} is {value:.0f}% full: {text}",
        description="Lower the retention windows in [memory], raise max_db_mb, or free disk "
        "space; when it is full, alerts and notifications can no longer be stored.",
    )


def effective_rules(
    rules: Sequence[RuleSettings], *, storage_alert_percent: float = 90.0
) -> list[RuleSettings]:
    """The configured rules plus the built-in meta-alerts (unless a rule of that name exists)."""
    names = {rule.name for rule in rules}
    builtins = [WATCHER_FAILING, storage_rule(storage_alert_percent)]
    return [*rules, *(rule for rule in builtins if rule.name not in names)]


class AlertPipeline:
    """Owns the rule engine for the life of the process."""

    name = "alerting"

    def __init__(
        self,
        rules: Sequence[RuleSettings],
        repo: AlertRepo,
        clock: Clock,
        on_events: Callable[[], None] = lambda: None,
        *,
        storage_alert_percent: float = 90.0,
    ) -> None:
        self.engine = RuleEngine(
            effective_rules(rules, storage_alert_percent=storage_alert_percent)
        )
        self._repo = repo
        self._clock = clock
        self._on_events = on_events
        self._pending: list[Change] = []
        self._dirty = asyncio.Event()
        self.observations = 0
        self.events = 0

    async def restore(self) -> int:
        """Load pending/firing state; alerts of rules no longer configured are resolved."""
        states = await self._repo.states()
        now = self._clock.now()
        restored = self.engine.restore(states, now)
        known = {rule.name for rule in self.engine.rules}
        gone = [state for state in states if state.rule not in known]
        if gone:
            changes = [
                Change(
                    fingerprint=state.fingerprint,
                    state=None,
                    event=AlertEvent(
                        fingerprint=state.fingerprint,
                        status="resolved",
                        labels=state.labels,
                        annotations={**state.annotations, "resolved_by": "rule removed"},
                        starts_at=state.fired_at or state.active_since,
                        ends_at=now,
                        at=now,
                        value=state.value,
                    )
                    if state.state == "firing"
                    else None,
                )
                for state in gone
            ]
            await self._repo.apply(changes)
            log.info("alerting: %d alert(s) of removed rules resolved", len(gone))
        return restored

    def emit(self, observation: Observation) -> None:
        """Judge one observation now; never blocks, never raises into the watcher."""
        self.observations += 1
        try:
            changes = self.engine.evaluate(observation)
        except Exception:  # a rule bug must not kill the watcher that fed it
            log.exception("alerting: evaluating %s failed", observation.metric)
            return
        if changes:
            self._pending.extend(changes)
            self._dirty.set()

    async def run(self) -> None:
        while True:
            self._dirty.clear()
            self._pending.extend(self.engine.tick(self._clock.now()))
            await self.flush()
            deadline = self.engine.next_deadline()
            timeout = None
            if deadline is not None:
                timeout = max((deadline - self._clock.now()).total_seconds(), 0.0) + 0.001
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), timeout)

    async def flush(self) -> None:
        """Commit queued changes (one transaction) and wake the incident manager."""
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            try:
                await self._repo.apply(batch)
            except BaseException:
                self._pending[:0] = batch  # keep them for the next attempt: nothing is lost
                raise
            announced = sum(1 for change in batch if change.event is not None)
            self.events += announced
            if announced:
                self._on_events()

    def summary(self) -> dict[str, Any]:
        alerts = self.engine.alerts()
        return {
            "rules": len(self.engine.rules),
            "observations": self.observations,
            "firing": sum(1 for a in alerts if a.state == "firing"),
            "pending": sum(1 for a in alerts if a.state == "pending"),
        }
