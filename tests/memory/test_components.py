"""ComponentEventRepo: the supervisor's crash and restart history."""

from __future__ import annotations

from daemon.core.clock import ManualClock
from memory.components import ComponentEventRepo
from memory.store import SqliteStore


async def test_events_are_listed_newest_first_and_per_component(
    store: SqliteStore, clock: ManualClock
) -> None:
    repo = ComponentEventRepo(store, clock)
    await repo.record("slack", "crashed", "TimeoutError: socket mode")
    clock.advance(5)
    await repo.record("slack", "restarted")
    await repo.record("disk-watcher", "crashed", "PermissionError")

    events = await repo.recent()
    assert [(e.component, e.event) for e in events] == [
        ("disk-watcher", "crashed"),
        ("slack", "restarted"),
        ("slack", "crashed"),
    ]
    slack = await repo.recent(component="slack")
    assert [e.event for e in slack] == ["restarted", "crashed"]
    assert slack[1].detail == "TimeoutError: socket mode"
    assert slack[0].detail == "" and slack[0].created_at == clock.now()
    assert len(await repo.recent(limit=1)) == 1
