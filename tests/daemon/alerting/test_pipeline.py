"""The alert pipeline: the built-in WatcherFailing rule, removed rules, batching into SQLite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from daemon.alerting.pipeline import AlertPipeline
from daemon.alerting.settings import RuleSettings
from daemon.core.alerts import Observation
from daemon.core.clock import ManualClock
from memory.alerts import AlertRepo
from memory.store import SqliteStore


@pytest.fixture
async def repo(tmp_path: Path) -> AsyncIterator[AlertRepo]:
    store = await SqliteStore.open(tmp_path / "a.db")
    yield AlertRepo(store)
    await store.close()


def failing(clock: ManualClock, value: float) -> Observation:
    return Observation(source="log:app", metric="watcher_error", at=clock.now(), value=value,
                       text="/var/log/app.log: not found",
                       labels={"watcher": "log:app", "target": "/var/log/app.log"})  # fmt: skip


async def test_a_watcher_failing_for_a_minute_raises_the_meta_alert(repo: AlertRepo) -> None:
    clock = ManualClock()
    woken: list[int] = []
    pipeline = AlertPipeline([], repo, clock, on_events=lambda: woken.append(1))
    pipeline.emit(failing(clock, 1))
    await pipeline.flush()
    assert await repo.unhandled() == [] and woken == []
    clock.advance(60)
    pipeline.emit(failing(clock, 1))
    await pipeline.flush()
    [stored] = await repo.unhandled()
    assert stored.event.name == "WatcherFailing" and stored.event.status == "firing"
    assert stored.event.annotations["summary"] == (
        "watcher log:app is failing: /var/log/app.log: not found"
    )
    pipeline.emit(failing(clock, 0))
    await pipeline.flush()
    assert [s.event.status for s in await repo.unhandled()] == ["firing", "resolved"]
    assert woken == [1, 1]


async def test_alerts_of_a_removed_rule_are_resolved_at_restart(repo: AlertRepo) -> None:
    clock = ManualClock()
    rule = RuleSettings(name="HighCpu", metric="cpu_percent", op=">", threshold=90)
    first = AlertPipeline([rule], repo, clock)
    first.emit(Observation(source="host", metric="cpu_percent", at=clock.now(), value=99))
    await first.flush()
    second = AlertPipeline([], repo, clock)  # the rule was deleted from the config
    assert await second.restore() == 0
    events = [s.event for s in await repo.unhandled()]
    assert [(e.name, e.status) for e in events] == [("HighCpu", "firing"), ("HighCpu", "resolved")]
    assert events[1].annotations["resolved_by"] == "rule removed"
    assert await repo.states() == []


async def test_a_user_rule_named_watcherfailing_replaces_the_built_in(repo: AlertRepo) -> None:
    clock = ManualClock()
    mine = RuleSettings(name="WatcherFailing", metric="watcher_error", op=">", threshold=0,
                        severity="critical")  # fmt: skip
    pipeline = AlertPipeline([mine], repo, clock)
    pipeline.emit(failing(clock, 1))
    await pipeline.flush()
    [stored] = await repo.unhandled()
    assert stored.event.severity == "critical"
