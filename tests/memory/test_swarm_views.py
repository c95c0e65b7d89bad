"""Swarm views: runs with sub-agents by status and cost, the tree, steps and the live summary."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import aiosqlite

from daemon.core.clock import ManualClock
from memory.store import SqliteStore
from memory.swarm import SwarmRepo
from memory.swarm_views import (
    get_run,
    has_swarm_schema,
    list_runs,
    live_swarm,
    run_tasks,
    task_run_id,
    task_steps,
)
from memory.usage import LlmUsage, UsageRepo
from tests.memory._swarm_rig import build


async def test_runs_are_listed_newest_first_with_counts_and_the_swarm_cost(
    store: SqliteStore, clock: ManualClock
) -> None:
    built = await build(store, clock)
    async with store.read() as db:
        everything = await list_runs(db, since=None)
        recent = await list_runs(db, since=clock.now() - timedelta(days=1))
        one = await list_runs(db, since=None, limit=1)
        missing = await get_run(db, 999)
    assert [run.id for run in everything] == [built.live_run, built.old_run]
    assert [run.id for run in recent] == [built.live_run] == [run.id for run in one]
    live, old = everything
    assert live.by_status == {"done": 1, "stalled": 1, "failed": 1, "running": 1, "queued": 1}
    assert live.sub_agents == 5 and live.spawns == 5
    assert live.cost_usd == 0.75  # the sub-agents' calls only, not the coordinator's chat
    assert (live.coordinator_cost_usd, live.total_cost_usd) == (9.0, 9.75)  # ...which is here
    assert (live.steps, live.tokens) == (3, 1200)
    assert (old.status, old.by_status, old.cost_usd) == ("done", {"done": 1}, None)
    assert old.finished_at is not None and missing is None


async def test_two_swarm_runs_of_one_agent_run_each_cost_their_own_calls(
    store: SqliteStore, clock: ManualClock
) -> None:
    built = await build(store, clock)  # the live run's calls so far: $0.75
    repo, usage = SwarmRepo(store, clock), UsageRepo(store, clock)
    await repo.finish_run(built.live_run, "done")
    clock.advance(60)
    again = await repo.start_run(
        actor="slack:U1", goal="and web4?", agent_run_id=built.agent_run, max_tokens=1000,
        max_steps=10, max_spawns=1,
    )  # fmt: skip
    await usage.record(
        LlmUsage(
            run_id=built.agent_run, model="kimi", purpose="swarm", prompt_tokens=1,
            completion_tokens=1, cached_tokens=0, total_tokens=2, cost_usd=2.0, latency_ms=1.0,
            ok=True,
        )
    )  # fmt: skip
    async with store.read() as db:
        first, second = await get_run(db, built.live_run), await get_run(db, again)
    assert first is not None and second is not None
    assert (first.cost_usd, second.cost_usd) == (0.75, 2.0)


async def test_a_running_run_is_listed_however_old(store: SqliteStore, clock: ManualClock) -> None:
    built = await build(store, clock)
    clock.advance(10 * 86400)
    async with store.read() as db:
        assert [run.id for run in await list_runs(db, since=clock.now())] == [built.live_run]


async def test_the_tree_and_the_steps_of_a_sub_agent(
    store: SqliteStore, clock: ManualClock
) -> None:
    built = await build(store, clock)
    async with store.read() as db:
        tasks = {task.id: task for task in await run_tasks(db, built.live_run)}
        failed_steps = await task_steps(db, built.failed)
        done_steps = await task_steps(db, built.done)
        assert await task_run_id(db, built.child) == built.live_run
        assert await task_run_id(db, 999) is None
    child = tasks[built.child]
    assert (child.parent_task_id, child.depth, child.status) == (built.done, 2, "stalled")
    assert child.reason == "no progress for 30s"
    failed = tasks[built.failed]
    assert (failed.status, failed.attempt, failed.role) == ("failed", 2, "disk")
    assert tasks[built.queued].started_at is None
    [step] = failed_steps
    assert (step.kind, step.name, step.state, step.error) == (
        "tool", "du", "failed", "du: permission denied"
    )  # fmt: skip
    assert step.epoch == 3  # the second claim, after the reassign
    assert [(s.kind, s.name, s.tokens) for s in done_steps] == [
        ("llm", "kimi", 1200), ("tool", "host_metrics", 0)
    ]  # fmt: skip


async def test_live_swarm_counts_only_running_runs(store: SqliteStore, clock: ManualClock) -> None:
    built = await build(store, clock)
    async with store.read() as db:
        live = await live_swarm(db)
    assert (live.runs, live.running, live.queued, live.steps, live.tokens) == (1, 1, 1, 3, 1200)
    await SwarmRepo(store, clock).finish_run(built.live_run, "partial", "stopped at the cap")
    async with store.read() as db:
        idle = await live_swarm(db)
    assert (idle.runs, idle.running, idle.queued, idle.steps, idle.tokens) == (0, 0, 0, 0, 0)


async def test_an_older_database_has_no_swarm_schema(tmp_path: Path) -> None:
    async with aiosqlite.connect(tmp_path / "old.db") as db:
        await db.execute("CREATE TABLE agent_runs (id INTEGER PRIMARY KEY)")
        assert not await has_swarm_schema(db)
