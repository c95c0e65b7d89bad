"""SqliteStore: opening, migrations, refusals, transactions and concurrency."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import memory.store
from daemon.core.clock import ManualClock
from daemon.core.errors import SchemaTooNewError, StoreError
from memory._migrate import Migration, load_migrations, split_statements
from memory.audit import AuditEntry, AuditRepo
from memory.components import ComponentEventRepo
from memory.conversations import ConversationRepo
from memory.outbox import OutboxRepo
from memory.runs import RunRepo
from memory.store import SqliteStore
from memory.usage import LlmUsage, UsageRepo


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def _write_garbage(db_path: Path) -> bytes:
    garbage = b"not sqlite at all\n" * 100
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(garbage)
    return garbage


def _add_event(db_path: Path) -> None:
    conn = sqlite3.connect(db_path)
    with conn:
        conn.execute(
            "INSERT INTO component_events (component, event, detail, created_at)"
            " VALUES ('x', 'y', '', '2026-01-01T00:00:00.000000Z')"
        )
    conn.close()


async def test_open_creates_the_directory_in_wal_mode_with_foreign_keys(
    store: SqliteStore, db_path: Path
) -> None:
    assert db_path.name in _snapshot(db_path.parent)
    async with store.write() as db:
        rows = list(await db.execute_fetchall("PRAGMA foreign_keys"))
        assert rows[0][0] == 1
        with pytest.raises(sqlite3.IntegrityError):
            await db.execute(
                "INSERT INTO messages (conversation_id, role, created_at) VALUES (999, 'user', '')"
            )
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


async def test_migrations_are_recorded(store: SqliteStore) -> None:
    migrations = load_migrations()
    assert store.schema_version == migrations[-1].version
    async with store.read() as db:
        rows = await db.execute_fetchall("SELECT version, name FROM schema_version ORDER BY 1")
    assert [(r["version"], r["name"]) for r in rows] == [(m.version, m.name) for m in migrations]


async def test_reopen_is_idempotent_and_keeps_data(db_path: Path) -> None:
    clock = ManualClock()
    async with await SqliteStore.open(db_path) as store:
        event_id = await ComponentEventRepo(store, clock).record("slack", "started")
        first_version = store.schema_version
    async with await SqliteStore.open(db_path) as store:
        assert store.schema_version == first_version
        events = await ComponentEventRepo(store, clock).recent()
        async with store.read() as db:
            rows = list(await db.execute_fetchall("SELECT COUNT(*) FROM schema_version"))
    assert [e.id for e in events] == [event_id]
    assert rows[0][0] == len(load_migrations())


async def test_newer_schema_is_refused_and_the_file_left_untouched(db_path: Path) -> None:
    async with await SqliteStore.open(db_path):
        pass
    conn = sqlite3.connect(db_path)
    with conn:
        conn.execute("INSERT INTO schema_version VALUES (999, 'future', '2030-01-01T00:00:00Z')")
    conn.close()
    before = _snapshot(db_path.parent)

    with pytest.raises(SchemaTooNewError) as caught:
        await SqliteStore.open(db_path)

    assert (caught.value.found, caught.value.known) == (999, load_migrations()[-1].version)
    assert str(db_path) in str(caught.value)
    assert _snapshot(db_path.parent) == before


async def test_a_file_that_is_not_a_database_is_refused_with_its_path(db_path: Path) -> None:
    garbage = _write_garbage(db_path)

    with pytest.raises(StoreError, match="not a database") as caught:
        await SqliteStore.open(db_path)

    assert str(db_path) in str(caught.value)
    assert "Hint:" in str(caught.value)
    assert _snapshot(db_path.parent) == {db_path.name: garbage}


async def test_a_directory_in_place_of_the_file_is_refused(db_path: Path) -> None:
    os.makedirs(db_path)

    with pytest.raises(StoreError) as caught:
        await SqliteStore.open(db_path)

    assert str(db_path) in str(caught.value)


async def test_another_programs_database_is_refused(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY)")
    conn.close()

    with pytest.raises(StoreError, match="not nightshift's"):
        await SqliteStore.open(db_path)


async def test_a_failing_migration_is_rolled_back(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = load_migrations()
    broken = Migration(
        version=real[-1].version + 1,
        name="broken",
        sql="CREATE TABLE half_done (a INTEGER);\nINSERT INTO no_such_table VALUES (1);",
    )
    monkeypatch.setattr(memory.store, "load_migrations", lambda: [*real, broken])

    with pytest.raises(StoreError, match="broken"):
        await SqliteStore.open(db_path)

    monkeypatch.setattr(memory.store, "load_migrations", lambda: real)
    async with await SqliteStore.open(db_path) as store:
        assert store.schema_version == real[-1].version
        async with store.read() as db:
            rows = list(
                await db.execute_fetchall("SELECT name FROM sqlite_master WHERE name = 'half_done'")
            )
    assert rows == []


def test_split_statements_keeps_trigger_bodies_whole() -> None:
    script = (
        "-- a comment; with a semicolon\nCREATE TABLE t (a TEXT DEFAULT ';');\n"
        "CREATE TRIGGER t_ai AFTER INSERT ON t BEGIN SELECT 1; SELECT 2; END;\n-- trailing\n"
    )
    statements = split_statements(script)
    assert len(statements) == 2
    assert statements[1].startswith("CREATE TRIGGER") and statements[1].endswith("END;")


async def test_a_failed_write_is_rolled_back(store: SqliteStore, clock: ManualClock) -> None:
    events = ComponentEventRepo(store, clock)
    with pytest.raises(RuntimeError):
        async with store.write() as db:
            await db.execute(
                "INSERT INTO component_events (component, event, created_at) VALUES ('a', 'b', '')"
            )
            raise RuntimeError("boom")
    assert await events.recent() == []
    assert await events.record("a", "after") > 0  # the writer is usable again


async def test_reads_proceed_while_a_write_transaction_is_open(
    store: SqliteStore, clock: ManualClock
) -> None:
    events = ComponentEventRepo(store, clock)
    await events.record("slack", "started")
    async with store.write() as db:
        await db.execute(
            "INSERT INTO component_events (component, event, created_at)"
            " VALUES ('x', 'y', '2026-01-01T00:00:01.000000Z')"
        )
        async with asyncio.timeout(1):
            seen = await events.recent()
        assert [e.event for e in seen] == ["started"]  # uncommitted row not visible
    assert [e.event for e in await events.recent()] == ["y", "started"]


async def test_concurrent_writers_are_serialised(store: SqliteStore, clock: ManualClock) -> None:
    events = ComponentEventRepo(store, clock)
    ids = await asyncio.gather(*(events.record("c", f"e{i}") for i in range(50)))
    assert len(set(ids)) == 50
    assert len(await events.recent(limit=100)) == 50


_INSERT_EVENT = (
    "INSERT INTO component_events (component, event, created_at)"
    " VALUES (?, ?, '2026-01-01T00:00:00.000000Z')"
)


async def _committed_events(store: SqliteStore) -> list[str]:
    """Events as the read connection sees them, i.e. committed ones only."""
    return [e.event for e in await ComponentEventRepo(store, ManualClock()).recent()]


async def test_nested_writes_commit_together_with_the_outer_block(
    store: SqliteStore, clock: ManualClock
) -> None:
    events = ComponentEventRepo(store, clock)
    async with store.write() as outer:
        await outer.execute(_INSERT_EVENT, ("a", "outer"))
        async with store.write() as inner:
            assert inner is outer
            await inner.execute(_INSERT_EVENT, ("a", "inner"))
            await events.record("a", "repo")  # a repository write joins as well
        assert outer.in_transaction  # the nested blocks did not commit
        assert await _committed_events(store) == []
        rows = await outer.execute_fetchall("SELECT event FROM component_events ORDER BY id")
        assert [r["event"] for r in rows] == ["outer", "inner", "repo"]
    assert await _committed_events(store) == ["repo", "inner", "outer"]


async def test_an_exception_in_a_nested_write_rolls_back_the_outer_block(
    store: SqliteStore, clock: ManualClock
) -> None:
    events = ComponentEventRepo(store, clock)
    with pytest.raises(RuntimeError, match="inner boom"):
        async with store.write() as outer:
            await outer.execute(_INSERT_EVENT, ("a", "outer"))
            await events.record("a", "repo")
            async with store.write() as inner:
                await inner.execute(_INSERT_EVENT, ("a", "inner"))
                raise RuntimeError("inner boom")
    assert await _committed_events(store) == []
    assert await events.record("a", "after") > 0  # the writer is usable again
    assert await _committed_events(store) == ["after"]


async def test_a_caught_nested_failure_still_rolls_back_the_outer_block(
    store: SqliteStore, clock: ManualClock
) -> None:
    with pytest.raises(StoreError, match="nested write") as caught:
        async with store.write() as outer:
            await outer.execute(_INSERT_EVENT, ("a", "outer"))
            try:
                async with store.write() as inner:
                    await inner.execute(_INSERT_EVENT, ("a", "half done"))
                    raise RuntimeError("inner boom")
            except RuntimeError:
                pass
            await outer.execute(_INSERT_EVENT, ("a", "later"))
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert await _committed_events(store) == []
    async with store.write() as db:  # the failure does not leak into the next transaction
        await db.execute(_INSERT_EVENT, ("a", "next"))
    assert await _committed_events(store) == ["next"]


async def test_another_tasks_write_waits_until_the_outer_block_commits(
    store: SqliteStore, clock: ManualClock
) -> None:
    events = ComponentEventRepo(store, clock)
    async with store.write() as outer:
        await outer.execute(_INSERT_EVENT, ("a", "outer"))
        other = asyncio.create_task(events.record("b", "other task"))
        await asyncio.sleep(0.05)
        assert not other.done()
        async with store.write() as inner:  # this task's nested write does not wait
            await inner.execute(_INSERT_EVENT, ("a", "inner"))
        await asyncio.sleep(0.05)
        assert not other.done()
        assert await _committed_events(store) == []
    async with asyncio.timeout(1):
        other_id = await other
    rows = await ComponentEventRepo(store, clock).recent()
    assert [e.event for e in rows] == ["other task", "inner", "outer"]
    assert rows[0].id == other_id


async def test_hot_write_paths_take_one_thread_hop_per_statement(
    store: SqliteStore, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    conversations, runs = ConversationRepo(store, clock), RunRepo(store, clock)
    audit, usage, outbox = (
        AuditRepo(store, clock),
        UsageRepo(store, clock),
        OutboxRepo(store, clock),
    )
    conversation = await conversations.get_or_create("slack", "C1")
    run_id = await runs.start("chat", "alice", conversation.id)
    message_id = await outbox.enqueue("slack", "C1", "hi")
    writer = store._writer
    assert writer is not None
    hops = 0
    # aiosqlite: every call to the worker thread goes here
    real_execute: Callable[..., Awaitable[Any]] = writer._execute

    async def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal hops
        hops += 1
        return await real_execute(*args, **kwargs)

    monkeypatch.setattr(writer, "_execute", counting)

    async def count(operation: Awaitable[object]) -> int:
        nonlocal hops
        hops = 0
        await operation
        return hops

    async def loop_pair() -> None:  # what the agent loop does for each step
        async with store.write():
            await runs.add_step(run_id, index=2, kind="llm", tokens=7)
            await conversations.append(conversation.id, "assistant", "hello")

    entry = AuditEntry(
        actor="alice",
        action="call",
        tool="echo",
        tier="read_only",
        reason="r",
        arguments={},
        result="ok",
        ok=True,
        duration_ms=1.0,
        run_id=run_id,
    )
    llm_usage = LlmUsage(
        run_id=run_id,
        model="m",
        purpose="agent",
        prompt_tokens=1,
        completion_tokens=1,
        cached_tokens=0,
        total_tokens=2,
        cost_usd=0.0,
        latency_ms=1.0,
        ok=True,
    )
    assert await count(runs.add_step(run_id, index=1, kind="tool")) == 1
    assert await count(runs.add_step(run_id, index=1, kind="llm", tokens=5)) == 4
    assert await count(conversations.append(conversation.id, "user", "hi")) == 4
    assert await count(audit.record(entry)) == 1
    assert await count(usage.record(llm_usage)) == 1
    assert await count(outbox.enqueue("slack", "C1", "hello")) == 1
    assert await count(outbox.mark_delivered(message_id, "p1")) == 1
    assert await count(runs.finish(run_id, "ok")) == 1
    assert await count(loop_pair()) == 6  # BEGIN, 2 + 2 statements, COMMIT
    assert (await runs.get(run_id)).tokens == 12


async def test_check_reports_health(store: SqliteStore, db_path: Path) -> None:
    report = await store.check()
    assert report["ok"] is True
    assert report["quick_check"] == "ok"
    assert report["wal"] is True
    assert report["schema_version"] == store.schema_version
    assert isinstance(report["size_bytes"], int) and report["size_bytes"] > 0
    assert report["path"] == str(db_path)


async def test_close_is_idempotent_and_later_use_is_refused(db_path: Path) -> None:
    store = await SqliteStore.open(db_path)
    await store.close()
    await store.close()
    assert store.closed
    with pytest.raises(StoreError, match="closed"):
        async with store.read():
            pass
    with pytest.raises(StoreError, match="closed"):
        async with store.write():
            pass


async def test_external_writer_changes_are_seen(store: SqliteStore, db_path: Path) -> None:
    _add_event(db_path)
    events = await ComponentEventRepo(store, ManualClock()).recent()
    assert [e.component for e in events] == ["x"]


async def test_reads_inside_a_write_block_see_its_uncommitted_rows(store: SqliteStore) -> None:
    from daemon.core.clock import ManualClock
    from daemon.core.tasks import TaskSpec
    from memory.tasks import TaskRepo

    repo = TaskRepo(store, ManualClock())
    async with store.write():
        task, _ = await repo.upsert(TaskSpec(name="t", interval_seconds=60, command=["true"]),
                                    source="runtime", owner="console:ann")  # fmt: skip
        assert (await repo.get("t")).id == task.id
        await repo.set_paused("t", "maintenance")
        assert (await repo.get("t")).paused_reason == "maintenance"
    assert (await repo.get("t")).paused_reason == "maintenance"
