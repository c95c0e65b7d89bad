"""SwarmRepo and StepLog: the run tree, spawn caps in the statement, and epoch fencing."""

from __future__ import annotations

import pytest

from daemon.core.clock import ManualClock
from daemon.core.errors import FencedError
from memory.store import SqliteStore
from memory.swarm import SwarmRepo, TaskSpec
from memory.swarm_steps import StepLog


def spec(goal: str = "check web1") -> TaskSpec:
    return TaskSpec(
        goal=goal,
        role="checker",
        tools=("echo",),
        max_tokens=1000,
        max_steps=5,
        result_shape={"type": "object"},
    )


async def _run(repo: SwarmRepo, max_spawns: int = 10) -> int:
    return await repo.start_run(
        actor="test", goal="check hosts", agent_run_id=None, max_tokens=10_000, max_steps=100,
        max_spawns=max_spawns,
    )  # fmt: skip


async def test_tasks_are_queued_claimed_stepped_and_finished(
    store: SqliteStore, clock: ManualClock
) -> None:
    repo, steps = SwarmRepo(store, clock), StepLog(store, clock)
    run_id = await _run(repo)
    [task_id] = await repo.add_tasks(run_id, None, 1, [spec()])
    assert (await repo.get_task(task_id)).status == "queued"
    epoch = await repo.claim(task_id)
    steps.step(task_id, epoch, 1, run_id=run_id, kind="llm", name="m", output={"c": 1}, tokens=7)
    steps.step(task_id, epoch, 2, run_id=run_id, kind="tool", name="rm", state="intent", input="x")
    await steps.durable()
    [_, intent] = await repo.steps(task_id)
    assert intent.state == "intent"  # durable before the side effect runs
    steps.outcome(task_id, epoch, 2, run_id=run_id, ok=True, output="gone", error=None,
                  duration_ms=3)  # fmt: skip
    await steps.durable()
    await repo.finish(task_id, epoch, "done", result={"ok": True})
    task = await repo.get_task(task_id)
    assert (task.status, task.result, task.tokens, task.steps) == ("done", {"ok": True}, 7, 2)
    assert [(s.index, s.state) for s in await repo.steps(task_id)] == [(1, "done"), (2, "done")]
    run = await repo.get_run(run_id)
    assert (run.tokens, run.steps, run.spawns) == (7, 2, 1)
    assert steps.refused == 0


async def test_a_stale_epoch_write_is_refused_by_the_statement(
    store: SqliteStore, clock: ManualClock
) -> None:
    repo, steps = SwarmRepo(store, clock), StepLog(store, clock)
    run_id = await _run(repo)
    [task_id] = await repo.add_tasks(run_id, None, 1, [spec()])
    old = await repo.claim(task_id)
    await repo.reassign(task_id, reason="stalled", goal="check web1 again")
    new = await repo.claim(task_id)
    assert new > old
    # the old worker's writes: its final status, a direct step and batched steps
    with pytest.raises(FencedError):
        await repo.finish(task_id, old, "done", result={"ok": "stale"})
    with pytest.raises(FencedError):
        await repo.add_step_now(task_id, old, 1, "llm", "m", {"stale": True})
    steps.step(task_id, old, 1, run_id=run_id, kind="llm", name="m", tokens=99)
    steps.outcome(task_id, old, 1, run_id=run_id, ok=True, output="x", error=None, duration_ms=0)
    steps.step(task_id, new, 1, run_id=run_id, kind="llm", name="m", tokens=5)
    await steps.durable()
    assert steps.refused == 2
    task = await repo.get_task(task_id)
    assert (task.status, task.attempt, task.goal, task.tokens) == (
        "running",
        2,
        "check web1 again",
        5,
    )
    assert [(s.epoch, s.index) for s in await repo.steps(task_id)] == [(new, 1)]
    await repo.finish(task_id, new, "done", result={"ok": True})
    assert (await repo.get_task(task_id)).result == {"ok": True}


async def test_the_spawn_cap_is_checked_by_the_insert(
    store: SqliteStore, clock: ManualClock
) -> None:
    repo = SwarmRepo(store, clock)
    run_id = await _run(repo, max_spawns=3)
    assert len(await repo.add_tasks(run_id, None, 1, [spec(), spec()])) == 2
    assert await repo.add_tasks(run_id, None, 1, [spec(), spec()]) == []
    assert len(await repo.add_tasks(run_id, None, 1, [spec()])) == 1
    assert (await repo.get_run(run_id)).spawns == 3
    assert len(await repo.tasks(run_id)) == 3


async def test_claim_of_a_task_not_queued_is_refused(
    store: SqliteStore, clock: ManualClock
) -> None:
    repo = SwarmRepo(store, clock)
    run_id = await _run(repo)
    [task_id] = await repo.add_tasks(run_id, None, 1, [spec()])
    await repo.claim(task_id)
    with pytest.raises(FencedError):
        await repo.claim(task_id)


async def test_at_startup_unfinished_tasks_become_unknown_and_are_fenced(
    store: SqliteStore, clock: ManualClock
) -> None:
    repo = SwarmRepo(store, clock)
    run_id = await _run(repo)
    running, queued, done = await repo.add_tasks(run_id, None, 1, [spec(), spec(), spec()])
    old = await repo.claim(running)
    finished = await repo.claim(done)
    await repo.finish(done, finished, "done", result={"ok": True})
    assert await repo.mark_unknown() == 2
    states = {t.id: (t.status, t.reason) for t in await repo.tasks(run_id)}
    assert states == {
        running: ("unknown", "the daemon stopped while this sub-agent was running"),
        queued: ("unknown", "the daemon stopped while this sub-agent was queued"),
        done: ("done", None),
    }
    assert (await repo.get_run(run_id)).status == "unknown"
    with pytest.raises(FencedError):  # a worker of the old process could not write either
        await repo.add_step_now(running, old, 1, "llm", "m", {})


async def test_resuming_a_task_fences_the_dead_worker_and_moves_its_steps_along(
    store: SqliteStore, clock: ManualClock
) -> None:
    repo, steps = SwarmRepo(store, clock), StepLog(store, clock)
    run_id = await repo.start_run(
        actor="test", goal="g", agent_run_id=None, max_tokens=100, max_steps=10, max_spawns=5,
        unattended=False, origin="slack|C1|t1",
    )  # fmt: skip
    [task_id, queued] = await repo.add_tasks(run_id, None, 1, [spec(), spec("other")])
    dead = await repo.claim(task_id)
    steps.step(task_id, dead, 1, run_id=run_id, kind="llm", name="m", output={"c": 1}, tokens=7)
    steps.step(task_id, dead, 2, run_id=run_id, kind="tool", name="restart", state="intent",
               input="{}", phase="authorising")  # fmt: skip
    steps.phase(task_id, dead, 2, "acting")
    await steps.durable()
    [run] = await repo.unfinished_runs()
    assert (run.id, run.unattended, run.origin) == (run_id, False, "slack|C1|t1")
    epoch, replay = await repo.resume_task(task_id)
    assert epoch == dead + 1
    assert [(s.index, s.kind, s.state, s.phase, s.epoch) for s in replay] == [
        (1, "llm", "done", None, epoch),
        (2, "tool", "intent", "acting", epoch),
    ]
    steps.outcome(task_id, dead, 2, run_id=run_id, ok=True, output="late", error=None,
                  duration_ms=0)  # fmt: skip
    await steps.durable()
    assert steps.refused == 1  # the dead worker's late write
    with pytest.raises(FencedError):
        await repo.resume_task(queued)  # only a task left running is resumed
    with pytest.raises(FencedError):
        await repo.finish(task_id, dead, "done")
    await repo.finish(task_id, epoch, "done")
