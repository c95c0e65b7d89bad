"""Group commit of usage and audit rows: together on the wire, separate in their outcomes."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from daemon.core.clock import ManualClock
from memory.audit import AuditEntry, AuditRepo
from memory.store import SqliteStore
from memory.usage import LlmUsage, UsageRepo


def _usage(purpose: str, run_id: int | None = None) -> LlmUsage:
    return LlmUsage(
        run_id=run_id,
        model="kimi-k2.6",
        purpose=purpose,
        prompt_tokens=90,
        completion_tokens=10,
        cached_tokens=0,
        total_tokens=100,
        cost_usd=0.0001,
        latency_ms=100.0,
        ok=True,
    )


def _entry(tool: str) -> AuditEntry:
    return AuditEntry(
        actor="bench",
        action="tool_call",
        tool=tool,
        tier="read_only",
        reason="r",
        arguments={"n": tool},
        result="ok",
        ok=True,
        duration_ms=1.0,
    )


async def _count(store: SqliteStore, table: str) -> int:
    async with store.read() as db:
        rows = list(await db.execute_fetchall(f"SELECT COUNT(*) FROM {table}"))
    return int(rows[0][0])


async def test_rows_made_together_share_one_statement_and_keep_their_ids(
    store: SqliteStore, clock: ManualClock
) -> None:
    repo = UsageRepo(store, clock)
    ids = await asyncio.gather(*(repo.record(_usage(f"p{i}")) for i in range(50)))
    assert repo._rows.groups == 1
    assert len(set(ids)) == 50
    async with store.read() as db:
        stored = {row[0]: row[1] for row in await db.execute_fetchall(
            "SELECT id, purpose FROM llm_usage")}  # fmt: skip
    assert {row_id: stored[row_id] for row_id in ids} == {
        row_id: f"p{i}" for i, row_id in enumerate(ids)
    }


async def test_a_failing_row_reaches_its_caller_and_only_its_caller(
    store: SqliteStore, clock: ManualClock
) -> None:
    repo = UsageRepo(store, clock)
    results = await asyncio.gather(
        repo.record(_usage("a")),
        repo.record(_usage("bad", run_id=424242)),  # no such agent run: foreign key fails
        repo.record(_usage("b")),
        return_exceptions=True,
    )
    assert isinstance(results[1], sqlite3.IntegrityError)
    assert isinstance(results[0], int) and isinstance(results[2], int)
    assert await _count(store, "llm_usage") == 2


async def test_a_clean_stop_writes_every_queued_row_even_of_cancelled_callers(
    db_path: Path, clock: ManualClock
) -> None:
    store = await SqliteStore.open(db_path)
    usage, audit = UsageRepo(store, clock), AuditRepo(store, clock)
    callers = [asyncio.create_task(usage.record(_usage(f"p{i}"))) for i in range(20)]
    callers += [asyncio.create_task(audit.record(_entry(f"t{i}"))) for i in range(20)]
    await asyncio.sleep(0)  # every caller has queued its row
    for caller in callers:
        caller.cancel()
    await store.close()
    reopened = await SqliteStore.open(db_path)
    try:
        assert await _count(reopened, "llm_usage") == 20
        assert await _count(reopened, "audit_log") == 20
    finally:
        await reopened.close()


async def test_inside_a_write_block_a_row_joins_the_callers_transaction(
    store: SqliteStore, clock: ManualClock
) -> None:
    audit = AuditRepo(store, clock)
    with pytest.raises(RuntimeError):
        async with store.write():
            await audit.record(_entry("rolled back"))
            raise RuntimeError("abort")
    async with store.write():
        kept = await audit.record(_entry("kept"))
    assert [entry.id for entry in await audit.recent()] == [kept]
