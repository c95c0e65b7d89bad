"""The runtime's housekeeping: the daily prune and the storage meta-alert."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from daemon.alerting.pipeline import AlertPipeline
from daemon.core.clock import ManualClock
from daemon.runtime.housekeeping import Housekeeping
from memory.alerts import AlertRepo
from memory.retention import RetentionRepo
from memory.settings import MemorySettings
from memory.store import SqliteStore
from tests.memory.workload import Rates, Workload


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = await SqliteStore.open(tmp_path / "nightshift.db")
    try:
        yield store
    finally:
        await store.close()


def _keeper(
    store: SqliteStore, clock: ManualClock, settings: MemorySettings, pipeline: AlertPipeline
) -> Housekeeping:
    return Housekeeping(
        RetentionRepo(store, clock),
        lambda: settings,
        state_dir=store.path.parent,
        clock=clock,
        emit=pipeline.emit,
    )


async def test_a_database_near_its_cap_raises_the_storage_alert_and_clears(
    store: SqliteStore,
) -> None:
    clock = ManualClock()
    alerts = AlertRepo(store)
    pipeline = AlertPipeline([], alerts, clock, storage_alert_percent=90)
    settings = MemorySettings(max_db_mb=0.05)  # 50 kB: a fresh database is past 90 % of it
    keeper = _keeper(store, clock, settings, pipeline)
    await keeper.sample()
    await pipeline.flush()
    events = [e.event for e in await alerts.unhandled()]
    fired = [e for e in events if e.labels["alertname"] == "NightshiftStorageFull"]
    assert [(e.status, e.labels["what"], e.labels["severity"]) for e in fired] == [
        ("firing", "database cap", "critical")
    ]
    assert "max_db_mb 0.05" in fired[0].annotations["summary"]
    settings.max_db_mb = 1000
    clock.advance(3600)
    await keeper.sample()
    await pipeline.flush()
    events = [e.event for e in await alerts.unhandled()]
    assert [e.status for e in events if e.labels.get("what") == "database cap"] == [
        "firing",
        "resolved",
    ]


async def test_the_daily_prune_applies_the_configured_windows(store: SqliteStore) -> None:
    clock = ManualClock()
    workload = Workload(store, clock, Rates(events_per_minute=2, incidents_per_hour=0))
    await workload.hour(48)
    pipeline = AlertPipeline([], AlertRepo(store), clock)
    keeper = _keeper(store, clock, MemorySettings(alert_events_days=1), pipeline)
    removed = await keeper.prune()
    assert removed["alert_events"] == 24 * 120
    assert keeper.last_prune == removed and keeper.last_prune_at is not None
    assert "conversations" not in removed  # kept unless configured
