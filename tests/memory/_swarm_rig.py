"""Swarm runs built through SwarmRepo's public API, for the views and `nightshift runs` tests."""

from __future__ import annotations

from dataclasses import dataclass

from daemon.core.clock import ManualClock
from memory.runs import RunRepo
from memory.store import SqliteStore
from memory.swarm import SwarmRepo, TaskSpec
from memory.swarm_steps import StepLog
from memory.usage import LlmUsage, UsageRepo


@dataclass(frozen=True, slots=True)
class Built:
    """Ids of what :func:`build` wrote."""

    old_run: int
    live_run: int
    agent_run: int
    done: int  # depth 1, done, 2 steps (llm + tool)
    child: int  # depth 2 under ``done``, stalled
    failed: int  # depth 1, failed on its 2nd attempt, a failed tool step
    running: int  # depth 1, running, a side-effecting step in flight (intent only)
    queued: int  # depth 1, queued


def spec(goal: str, role: str = "checker") -> TaskSpec:
    return TaskSpec(goal=goal, role=role, tools=("echo",), max_tokens=5000, max_steps=10)


async def build(store: SqliteStore, clock: ManualClock) -> Built:
    """An old finished run (two days back), then a live one with a tree of five sub-agents,
    steps of every kind, and priced model usage of the coordinator's agent run."""
    repo, steps = SwarmRepo(store, clock), StepLog(store, clock)
    old = await repo.start_run(
        actor="cron", goal="nightly disk sweep", agent_run_id=None, max_tokens=10_000,
        max_steps=100, max_spawns=10,
    )  # fmt: skip
    [old_task] = await repo.add_tasks(old, None, 1, [spec("check /var on web1")])
    epoch = await repo.claim(old_task)
    steps.step(old_task, epoch, 1, run_id=old, kind="llm", name="m", tokens=50)
    await steps.durable()
    await repo.finish(old_task, epoch, "done", result={"ok": True})
    await repo.finish_run(old, "done")
    clock.advance(2 * 86400)

    agent_run = await RunRepo(store, clock).start("chat", "slack:U1")
    live = await repo.start_run(
        actor="slack:U1", goal="why is web1 slow? check every web host", agent_run_id=agent_run,
        max_tokens=100_000, max_steps=500, max_spawns=50,
    )  # fmt: skip
    done, failed, running, queued = await repo.add_tasks(
        live, None, 1,
        [spec("check load on web1"), spec("check disks on web2", "disk"),
         spec("check nginx on web3"), spec("check db pool")],
    )  # fmt: skip
    e_done = await repo.claim(done)
    [child] = await repo.add_tasks(live, done, 2, [spec("look at iowait on web1", "io")])
    clock.advance(1.5)
    steps.step(done, e_done, 1, run_id=live, kind="llm", name="kimi", tokens=1200,
               duration_ms=900)  # fmt: skip
    steps.step(done, e_done, 2, run_id=live, kind="tool", name="host_metrics", output="load 9",
               duration_ms=210)  # fmt: skip
    await steps.durable()
    await repo.finish(done, e_done, "done", result={"load": 9})

    e_child = await repo.claim(child)
    clock.advance(30)
    await repo.finish(child, e_child, "stalled", reason="no progress for 30s")

    e_failed = await repo.claim(failed)
    await repo.reassign(failed, reason="worker cancelled")
    e_failed = await repo.claim(failed)
    steps.step(failed, e_failed, 1, run_id=live, kind="tool", name="du", state="intent",
               input={"path": "/"})  # fmt: skip
    await steps.durable()
    steps.outcome(failed, e_failed, 1, run_id=live, ok=False, output=None,
                  error="du: permission denied", duration_ms=40)  # fmt: skip
    await steps.durable()
    await repo.finish(failed, e_failed, "failed", reason="the disk tool was refused")

    e_running = await repo.claim(running)
    steps.step(running, e_running, 1, run_id=live, kind="tool", name="restart_service",
               state="intent", input={"name": "nginx"})  # fmt: skip
    await steps.durable()
    usage = UsageRepo(store, clock)
    for purpose, cost in (("swarm", 0.25), ("swarm", 0.5), ("chat", 9.0)):
        await usage.record(
            LlmUsage(
                run_id=agent_run, model="kimi", purpose=purpose, prompt_tokens=100,
                completion_tokens=10, cached_tokens=0, total_tokens=110, cost_usd=cost,
                latency_ms=5.0, ok=True,
            )
        )  # fmt: skip
    return Built(old, live, agent_run, done, child, failed, running, queued)
