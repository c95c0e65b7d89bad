"""A herd: many tasks due at the same instant, woken by the scheduler's one timer.

The rig of test_scheduler.py (real SQLite, the real runner, a manual clock); the timer's firing
is driven directly (``_on_timer``) at exact clock times.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from daemon.core.tasks import TaskSpec
from daemon.tasks.scheduler import START_BATCH
from memory.tasks import StoredTask
from tests.daemon.tasks.test_scheduler import T0, Rig, rig_fixture  # noqa: F401  (fixture)

SLOT = "2026-03-02T08:01:00.000000Z"


async def _nothing() -> str:
    return ""


def minutely(count: int, prefix: str = "h") -> list[TaskSpec]:
    return [
        TaskSpec(name=f"{prefix}{i:04d}", interval_seconds=60, builtin="digest", catch_up="skip")
        for i in range(count)
    ]


async def slots(rig: Rig) -> list[tuple[int, str, str]]:
    async with rig.store.read() as db:
        rows = await db.execute_fetchall("SELECT task_id, slot, status FROM task_runs")
    return [(row[0], row[1], row[2]) for row in rows]


async def test_one_timer_wakes_the_whole_herd_and_each_slot_runs_once(rig: Rig) -> None:
    rig.runner._builtins["digest"] = lambda now: _nothing()
    specs = minutely(300)
    await rig.scheduler.start(specs)
    await rig.scheduler.wait_idle()
    assert {rig.scheduler.next_run(s.name) for s in specs} == {T0 + timedelta(minutes=1)}
    rig.clock.advance(60)
    rig.scheduler._on_timer()
    rig.scheduler._on_timer()  # fired again meanwhile: the wake-up in progress takes it
    await rig.scheduler.wait_idle()
    rows = await slots(rig)
    assert len(rows) == 300 and {(r[1], r[2]) for r in rows} == {(SLOT, "nothing_to_do")}
    assert {rig.scheduler.next_run(s.name) for s in specs} == {T0 + timedelta(minutes=2)}
    rig.scheduler._on_timer()  # at the same moment again: nothing more is due
    await rig.scheduler.wait_idle()
    assert len(await slots(rig)) == 300


async def test_a_herd_starts_its_runs_a_batch_per_loop_turn(rig: Rig) -> None:
    """1,000 runs started in one loop turn stall the loop (every other component waits)."""
    turn = 0
    started: list[int] = []

    def count_turns() -> None:
        nonlocal turn
        turn += 1
        loop.call_soon(count_turns)

    async def noted() -> str:
        started.append(turn)
        return ""

    rig.runner._builtins["digest"] = lambda now: noted()
    specs = minutely(1000)
    await rig.scheduler.start(specs)
    await rig.scheduler.wait_idle()
    rig.clock.advance(60)
    loop = asyncio.get_running_loop()
    loop.call_soon(count_turns)
    await rig.scheduler._wake_many([s.name for s in specs])
    await rig.scheduler.wait_idle()
    assert len(started) == 1000
    per_turn = max(started.count(t) for t in set(started))
    assert per_turn <= START_BATCH


async def test_a_late_wake_up_runs_only_the_latest_slot_and_rearms_after_it(rig: Rig) -> None:
    spec = TaskSpec(name="tick", interval_seconds=1, command=["true"], catch_up="skip")
    await rig.scheduler.start([spec])
    await rig.scheduler.wait_idle()
    rig.clock.advance(3.2)  # the loop was busy: slots :01, :02 and :03 passed
    rig.scheduler._on_timer()
    await rig.scheduler.wait_idle()
    assert sorted((r[1], r[2]) for r in await slots(rig)) == [
        ("2026-03-02T08:00:02.000000Z", "skipped"),  # :01 and :02, with the reason
        ("2026-03-02T08:00:03.000000Z", "ok"),
    ]
    [skipped] = [
        run
        for run in await rig.repo.runs((await rig.repo.get("tick")).id)
        if run.status == "skipped"
    ]
    assert skipped.error == "2 slot(s) missed: the wake-up came late: only the latest slot ran"
    assert rig.scheduler.next_run("tick") == T0 + timedelta(seconds=4)


async def test_a_wake_up_beyond_the_misfire_grace_runs_nothing(rig: Rig) -> None:
    spec = TaskSpec(name="late", cron="0 9 * * *", command=["true"], catch_up="skip")
    await rig.scheduler.start([spec])
    await rig.scheduler.wait_idle()
    rig.clock.advance(3600 + 301)  # 09:00:01 plus the 300 s grace and a second
    rig.scheduler._on_timer()
    await rig.scheduler.wait_idle()
    assert [(r[1], r[2]) for r in await slots(rig)] == [("2026-03-02T09:00:00.000000Z", "skipped")]
    [run] = await rig.repo.runs((await rig.repo.get("late")).id)
    assert run.error is not None and "past the misfire grace" in run.error
    assert rig.scheduler.next_run("late") == T0 + timedelta(days=1, hours=1)


async def test_paused_removed_and_finished_tasks_are_not_woken(rig: Rig) -> None:
    once = TaskSpec(name="once", at=datetime(2026, 3, 2, 8, 1, tzinfo=UTC), command=["true"])
    specs = [*minutely(2, "m"), once]
    await rig.scheduler.start(specs)
    await rig.scheduler.wait_idle()
    await rig.scheduler.pause("m0000", "maintenance")
    assert rig.scheduler.next_run("m0000") is None
    rig.clock.advance(60)
    rig.scheduler._on_timer()
    await rig.scheduler.wait_idle()
    ran = {r[0] for r in await slots(rig)}
    ids = {t.name: t.id for t in await rig.repo.all()}
    assert ran == {ids["m0001"], ids["once"]}
    assert rig.scheduler.next_run("once") is None  # a one-shot that is over is not re-armed
    resumed: StoredTask = await rig.scheduler.resume("m0000")
    assert rig.scheduler.next_run(resumed.name) == T0 + timedelta(minutes=2)


async def test_a_failed_claim_keeps_the_tasks_armed_for_their_next_slot(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig.runner._builtins["digest"] = lambda now: _nothing()
    specs = minutely(3)
    await rig.scheduler.start(specs)
    await rig.scheduler.wait_idle()
    real = rig.repo.get_many

    async def broken(names: Sequence[str]) -> list[StoredTask]:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(rig.repo, "get_many", broken)
    rig.clock.advance(60)
    rig.scheduler._on_timer()
    await rig.scheduler.wait_idle()
    assert await slots(rig) == []
    assert {rig.scheduler.next_run(s.name) for s in specs} == {T0 + timedelta(minutes=2)}
    monkeypatch.setattr(rig.repo, "get_many", real)
    rig.clock.advance(60)
    rig.scheduler._on_timer()
    await rig.scheduler.wait_idle()
    assert {r[1] for r in await slots(rig)} == {"2026-03-02T08:02:00.000000Z"}
