"""AuditRepo: tool calls stored as given and listed per run."""

from __future__ import annotations

import pytest

from daemon.core.clock import ManualClock
from memory.audit import AuditEntry, AuditRepo
from memory.runs import RunRepo
from memory.store import SqliteStore


def _entry(run_id: int | None, tool: str, *, ok: bool = True) -> AuditEntry:
    return AuditEntry(
        actor="slack:U123",
        action="call",
        tool=tool,
        tier="privileged",
        reason="disk on db-1 is 97% full",
        arguments={"unit": "nginx", "options": ["--no-block"], "token": "[REDACTED]"},
        result="ok" if ok else "permission denied",
        ok=ok,
        duration_ms=41.5,
        run_id=run_id,
    )


@pytest.fixture
def repo(store: SqliteStore, clock: ManualClock) -> AuditRepo:
    return AuditRepo(store, clock)


async def test_entries_are_stored_as_given(repo: AuditRepo, clock: ManualClock) -> None:
    entry = _entry(None, "restart_service", ok=False)
    record_id = await repo.record(entry)

    [record] = await repo.recent()

    assert record.id == record_id
    assert record.created_at == clock.now()
    for field in (
        "actor",
        "action",
        "tool",
        "tier",
        "reason",
        "arguments",
        "result",
        "ok",
        "duration_ms",
        "run_id",
    ):
        assert getattr(record, field) == getattr(entry, field)


async def test_recent_is_newest_first_and_for_run_in_order(
    repo: AuditRepo, store: SqliteStore, clock: ManualClock
) -> None:
    run_id = await RunRepo(store, clock).start("incident", "alert:disk")
    first = await repo.record(_entry(run_id, "disk_usage"))
    other = await repo.record(_entry(None, "uptime"))
    second = await repo.record(_entry(run_id, "restart_service"))

    assert [r.id for r in await repo.recent(limit=2)] == [second, other]
    assert [r.tool for r in await repo.for_run(run_id)] == ["disk_usage", "restart_service"]
    assert [r.id for r in await repo.for_run(run_id)] == [first, second]
