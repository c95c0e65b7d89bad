"""Finishing task runs: runs that finish together are committed together, each call returning
once its row is committed; inside a caller's transaction a finish joins it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from daemon.core.clock import ManualClock
from daemon.core.tasks import TaskSpec
from memory.store import SqliteStore
from memory.tasks import TaskRepo


async def claimed(repo: TaskRepo, count: int) -> list[int]:
    task, _ = await repo.upsert(TaskSpec(name="t", interval_seconds=60, command=["true"]),
                                source="config", owner="config")  # fmt: skip
    ids = await repo.claim_many([(task.id, f"slot-{i:04d}") for i in range(count)])
    assert None not in ids
    return [i for i in ids if i is not None]


async def statuses(store: SqliteStore) -> dict[str, int]:
    async with store.read() as db:
        rows = await db.execute_fetchall("SELECT status, count(*) FROM task_runs GROUP BY status")
    return {row[0]: row[1] for row in rows}


async def test_runs_finishing_together_are_committed_in_a_few_hops(
    store: SqliteStore, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """500 runs of a herd finishing at once: one hop to the writer thread each was 500."""
    repo = TaskRepo(store, clock)
    ids = await claimed(repo, 500)
    writer = store._writer
    assert writer is not None
    hops = 0
    real_execute: Any = writer._execute  # aiosqlite: every call to the worker thread goes here

    async def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal hops
        hops += 1
        return await real_execute(*args, **kwargs)

    monkeypatch.setattr(writer, "_execute", counting)
    seen: list[dict[str, int]] = []

    async def finish(run_id: int) -> None:
        await repo.finish(run_id, "nothing_to_do")
        if run_id == ids[0]:
            seen.append(await statuses(store))  # committed when finish() returns

    await asyncio.gather(*(finish(i) for i in ids))
    assert hops <= 12
    assert seen[0].get("nothing_to_do", 0) >= 1
    assert await statuses(store) == {"nothing_to_do": 500}


async def test_a_finish_inside_a_write_block_joins_that_transaction(
    store: SqliteStore, clock: ManualClock
) -> None:
    repo = TaskRepo(store, clock)
    run_id = (await claimed(repo, 1))[0]
    with pytest.raises(RuntimeError):
        async with store.write():
            await repo.finish(run_id, "ok", output="done")
            raise RuntimeError("rolled back")
    assert await statuses(store) == {"running": 1}
    async with store.write():
        await repo.finish(run_id, "ok", output="done")
    assert await statuses(store) == {"ok": 1}


async def test_a_failed_group_commit_fails_every_finish_in_it(
    store: SqliteStore, clock: ManualClock
) -> None:
    repo = TaskRepo(store, clock)
    ids = await claimed(repo, 3)
    async with store.write() as db:  # a trigger that refuses one row fails the transaction
        await db.execute(
            "CREATE TEMP TRIGGER refuse BEFORE UPDATE ON task_runs WHEN NEW.id = "
            f"{ids[1]} BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
    results = await asyncio.gather(*(repo.finish(i, "ok") for i in ids), return_exceptions=True)
    assert all(isinstance(r, Exception) and "refused" in str(r) for r in results)
    assert await statuses(store) == {"running": 3}
    await repo.finish(ids[0], "ok")  # the next one is written on its own
    assert await statuses(store) == {"ok": 1, "running": 2}
