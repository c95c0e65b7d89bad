"""The daily digest: composed from memory without the LLM; nothing happened → no digest."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from daemon.core.clock import ManualClock
from daemon.core.tasks import TaskSpec
from daemon.tasks import digest
from memory.components import ComponentEventRepo
from memory.incidents import IncidentRepo
from memory.store import SqliteStore
from memory.tasks import TaskRepo
from memory.usage import UsageRepo

NOW = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)


@pytest.fixture
async def repos(tmp_path: Path) -> AsyncIterator[tuple[SqliteStore, ManualClock]]:
    store = await SqliteStore.open(tmp_path / "d.db")
    yield store, ManualClock(NOW - timedelta(hours=5))
    await store.close()


async def compose(store: SqliteStore, clock: ManualClock) -> str:
    return await digest.compose(
        NOW, incidents=IncidentRepo(store, clock), tasks=TaskRepo(store, clock),
        usage=UsageRepo(store, clock), events=ComponentEventRepo(store, clock),
    )  # fmt: skip


async def test_a_quiet_day_has_no_digest(repos: tuple[SqliteStore, ManualClock]) -> None:
    store, clock = repos
    tasks = TaskRepo(store, clock)
    task, _ = await tasks.upsert(
        TaskSpec(name="check", interval_seconds=900, command=["true"]), source="config",
        owner="config",
    )  # fmt: skip
    run_id = await tasks.claim(task.id, "2026-03-03T05:00:00.000000Z")
    assert run_id is not None
    await tasks.finish(run_id, "nothing_to_do")
    assert await compose(store, clock) == ""


async def test_a_day_with_an_incident_and_a_failed_task_is_summarised(
    repos: tuple[SqliteStore, ManualClock],
) -> None:
    store, clock = repos
    async with store.write() as db:
        await IncidentRepo.create(
            db, group_key="alertname=DiskFull", title="DiskFull", severity="critical",
            labels={"alertname": "DiskFull"}, opened_at=clock.now(), flush_at=clock.now(),
        )  # fmt: skip
    tasks = TaskRepo(store, clock)
    task, _ = await tasks.upsert(
        TaskSpec(name="backup", cron="0 3 * * *", command=["false"]), source="config",
        owner="config",
    )  # fmt: skip
    run_id = await tasks.claim(task.id, "2026-03-03T03:00:00.000000Z")
    assert run_id is not None
    await tasks.finish(run_id, "failed", error="false exited 1")
    text = await compose(store, clock)
    assert text.startswith("Daily digest — the last 24 hours up to 2026-03-03 09:00 UTC")
    assert "Incidents: 1 opened, 0 resolved, 1 still open." in text
    assert "• open: #1 DiskFull (critical)" in text
    assert "Tasks: 0 ran, 0 had nothing to do, 1 failed." in text
    assert "• failed: backup — false exited 1" in text
