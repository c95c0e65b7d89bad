"""RunRepo: runs, ordered steps with JSON payloads, token totals, interrupted runs."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from daemon.core.clock import ManualClock
from daemon.core.errors import RecordNotFound
from memory.conversations import ConversationRepo
from memory.runs import RunRepo
from memory.store import SqliteStore


@pytest.fixture
def repo(store: SqliteStore, clock: ManualClock) -> RunRepo:
    return RunRepo(store, clock)


async def test_a_run_is_started_stepped_and_finished(
    repo: RunRepo, store: SqliteStore, clock: ManualClock
) -> None:
    conv = await ConversationRepo(store, clock).get_or_create("slack", "C1")
    run_id = await repo.start("message", "slack:C1", conversation_id=conv.id)
    started = clock.now()

    run = await repo.get(run_id)
    assert (run.status, run.kind, run.trigger) == ("running", "message", "slack:C1")
    assert (run.conversation_id, run.tokens, run.finished_at) == (conv.id, 0, None)
    assert run.started_at == started

    clock.advance(5)
    await repo.finish(run_id, "ok")
    run = await repo.get(run_id)
    assert (run.status, run.error, run.finished_at) == ("ok", None, clock.now())


async def test_steps_keep_recorded_order_payloads_and_add_up_tokens(repo: RunRepo) -> None:
    run_id = await repo.start("incident", "alert:disk_full")
    when = datetime(2026, 1, 2, tzinfo=UTC)
    await repo.add_step(
        run_id,
        index=1,
        kind="tool",
        name="disk_usage",
        input={"path": "/var"},
        output={"used": 0.97, "at": when},
        duration_ms=12.5,
    )
    await repo.add_step(
        run_id,
        index=0,
        kind="llm",
        input=[{"role": "user", "content": "hi"}],
        output="look at disk",
        tokens=120,
    )
    await repo.add_step(run_id, index=2, kind="llm", error="timeout", tokens=30)

    steps = await repo.steps(run_id)

    assert [(s.index, s.kind) for s in steps] == [(1, "tool"), (0, "llm"), (2, "llm")]
    assert steps[1].input == [{"role": "user", "content": "hi"}]
    assert steps[1].output == "look at disk"
    assert steps[0].output == {"used": 0.97, "at": str(when)}  # non-JSON stored as str
    assert (steps[0].name, steps[0].duration_ms) == ("disk_usage", 12.5)
    assert (steps[2].input, steps[2].output, steps[2].error) == (None, None, "timeout")
    assert (await repo.get(run_id)).tokens == 150


async def test_unknown_runs_are_lookup_errors(repo: RunRepo) -> None:
    with pytest.raises(RecordNotFound):
        await repo.get(404)
    with pytest.raises(RecordNotFound):
        await repo.add_step(404, index=0, kind="tool")
    with pytest.raises(RecordNotFound):
        await repo.add_step(404, index=1, kind="llm", tokens=10)
    with pytest.raises(RecordNotFound):
        await repo.finish(404, "ok")
    assert await repo.steps(404) == []


async def test_recent_lists_newest_first(repo: RunRepo) -> None:
    ids = [await repo.start("task", f"task:{i}") for i in range(5)]
    assert [r.id for r in await repo.recent(limit=3)] == list(reversed(ids))[:3]


async def test_mark_interrupted_closes_runs_left_running(repo: RunRepo, clock: ManualClock) -> None:
    crashed = [await repo.start("task", "a"), await repo.start("incident", "b")]
    done = await repo.start("task", "c")
    await repo.finish(done, "failed", "model unavailable")
    clock.advance(30)

    assert await repo.mark_interrupted() == 2
    assert await repo.mark_interrupted() == 0

    for run_id in crashed:
        run = await repo.get(run_id)
        assert run.status == "interrupted"
        assert run.finished_at == clock.now()
        assert run.error
    finished = await repo.get(done)
    assert (finished.status, finished.error) == ("failed", "model unavailable")
