"""Agent runs and their steps: what the agent did, in order, and what it cost."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiosqlite

from daemon.core.clock import Clock
from daemon.core.errors import RecordNotFound
from daemon.core.redact import redact, redact_data
from memory._codec import dump_json, from_db_time, from_db_time_opt, load_json, to_db_time
from memory.store import SqliteStore

__all__ = ["AgentRun", "Compaction", "RunRepo", "RunStep", "compactions_db"]

log = logging.getLogger(__name__)

_RUN_COLUMNS = "id, kind, trigger, conversation_id, status, started_at, finished_at, error, tokens"
_STEP_COLUMNS = (
    "id, run_id, step_index, kind, name, input, output, error, duration_ms, tokens, created_at"
)
INTERRUPTED_ERROR = "the daemon stopped while this run was in progress"
# Inserts nothing (rowcount 0) for an unknown run, so the existence check costs no statement.
_INSERT_STEP = (
    "INSERT INTO run_steps (run_id, step_index, kind, name, input, output, error, duration_ms,"
    " tokens, created_at) SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?"
    " WHERE EXISTS (SELECT 1 FROM agent_runs WHERE id = ?)"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentRun:
    """One agent run: an incident investigation, a reply to a message, or a task."""

    id: int
    kind: str
    trigger: str
    conversation_id: int | None
    status: str
    started_at: datetime
    finished_at: datetime | None
    error: str | None
    tokens: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RunStep:
    """One step of a run (a model call, a tool call…); input and output are decoded JSON."""

    id: int
    run_id: int
    index: int
    kind: str
    name: str | None
    input: Any
    output: Any
    error: str | None
    duration_ms: float
    tokens: int
    created_at: datetime


def _run(row: aiosqlite.Row) -> AgentRun:
    return AgentRun(
        id=row["id"],
        kind=row["kind"],
        trigger=row["trigger"],
        conversation_id=row["conversation_id"],
        status=row["status"],
        started_at=from_db_time(row["started_at"]),
        finished_at=from_db_time_opt(row["finished_at"]),
        error=row["error"],
        tokens=row["tokens"],
    )


def _step(row: aiosqlite.Row) -> RunStep:
    return RunStep(
        id=row["id"],
        run_id=row["run_id"],
        index=row["step_index"],
        kind=row["kind"],
        name=row["name"],
        input=load_json(row["input"]),
        output=load_json(row["output"]),
        error=row["error"],
        duration_ms=row["duration_ms"],
        tokens=row["tokens"],
        created_at=from_db_time(row["created_at"]),
    )


class RunRepo:
    """Start, record and finish agent runs."""

    def __init__(self, store: SqliteStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def start(self, kind: str, trigger: str, conversation_id: int | None = None) -> int:
        """Record a new run with status "running" and return its id."""
        cur = await self._store.execute_write(
            "INSERT INTO agent_runs (kind, trigger, conversation_id, status, started_at)"
            " VALUES (?, ?, ?, 'running', ?)",
            (kind, trigger, conversation_id, to_db_time(self._clock.now())),
        )
        run_id = cur.lastrowid
        assert run_id is not None
        return run_id

    async def add_step(
        self,
        run_id: int,
        *,
        index: int,
        kind: str,
        name: str | None = None,
        input: Any = None,  # noqa: A002 - the public name other modules use
        output: Any = None,
        error: str | None = None,
        duration_ms: float = 0,
        tokens: int = 0,
    ) -> int:
        """Record a step, secrets redacted (values that are not JSON are stored as str); adds to
        the run's tokens."""
        encoded_in = dump_json(redact_data(input), lenient=True)
        encoded_out = dump_json(redact_data(output), lenient=True)
        error = None if error is None else redact(error)
        now = to_db_time(self._clock.now())
        params = (
            run_id,
            index,
            kind,
            name,
            encoded_in,
            encoded_out,
            error,
            duration_ms,
            tokens,
            now,
            run_id,
        )
        if not tokens:  # nothing to add to the run: one statement, atomic on its own
            cur = await self._store.execute_write(_INSERT_STEP, params)
        else:
            async with self._store.write() as db:
                cur = await db.execute(_INSERT_STEP, params)
                if cur.rowcount:
                    await db.execute(
                        "UPDATE agent_runs SET tokens = tokens + ? WHERE id = ?", (tokens, run_id)
                    )
        if cur.rowcount == 0:
            raise RecordNotFound("run", run_id)
        step_id = cur.lastrowid
        assert step_id is not None
        return step_id

    async def finish(self, run_id: int, status: str, error: str | None = None) -> None:
        """Set the run's final status (e.g. "ok", "failed") and finish time."""
        error = None if error is None else redact(error)
        cur = await self._store.execute_write(
            "UPDATE agent_runs SET status = ?, error = ?, finished_at = ? WHERE id = ?",
            (status, error, to_db_time(self._clock.now()), run_id),
        )
        if cur.rowcount == 0:
            raise RecordNotFound("run", run_id)

    async def get(self, run_id: int) -> AgentRun:
        """The run with this id; RecordNotFound if there is none."""
        async with self._store.read() as db:
            rows = list(
                await db.execute_fetchall(
                    f"SELECT {_RUN_COLUMNS} FROM agent_runs WHERE id = ?", (run_id,)
                )
            )
        if not rows:
            raise RecordNotFound("run", run_id)
        return _run(rows[0])

    async def steps(self, run_id: int) -> list[RunStep]:
        """The run's steps in the order they were recorded (``index`` is kept as given)."""
        async with self._store.read() as db:
            rows = await db.execute_fetchall(
                f"SELECT {_STEP_COLUMNS} FROM run_steps WHERE run_id = ? ORDER BY id",
                (run_id,),
            )
        return [_step(row) for row in rows]

    async def recent(self, limit: int = 20) -> list[AgentRun]:
        """The latest runs, newest first."""
        async with self._store.read() as db:
            rows = await db.execute_fetchall(
                f"SELECT {_RUN_COLUMNS} FROM agent_runs ORDER BY id DESC LIMIT ?", (limit,)
            )
        return [_run(row) for row in rows]

    async def compactions(
        self, conversation_id: int | None = None, limit: int = 20
    ) -> list[Compaction]:
        """The latest compactions (of one conversation, or all), newest first."""
        async with self._store.read() as db:
            return await compactions_db(db, conversation_id, limit)

    async def mark_interrupted(self) -> int:
        """At startup: runs left "running" by a previous process become "interrupted"."""
        cur = await self._store.execute_write(
            "UPDATE agent_runs SET status = 'interrupted', finished_at = ?,"
            " error = COALESCE(error, ?) WHERE status = 'running'",
            (to_db_time(self._clock.now()), INTERRUPTED_ERROR),
        )
        count = cur.rowcount
        if count:
            log.warning("marked %d unfinished runs as interrupted", count)
        return count


@dataclass(frozen=True, slots=True, kw_only=True)
class Compaction:
    """One compaction pass: which messages were folded into the conversation summary.

    Stored as a ``compaction`` step of the run that triggered it (so it is kept as long as
    runs are, ``[memory] agent_runs_days``); the messages themselves stay stored and searchable.
    """

    run_id: int
    conversation_id: int
    first_message_id: int
    last_message_id: int
    messages: int
    tokens_before: int
    tokens_after: int
    pass_number: int
    summary: str
    created_at: datetime


async def compactions_db(
    db: aiosqlite.Connection, conversation_id: int | None = None, limit: int = 20
) -> list[Compaction]:
    """The compactions recorded in ``db``, newest first (usable on a read-only connection)."""
    where = "s.kind = 'compaction'" + (" AND r.conversation_id = ?" if conversation_id else "")
    params: tuple[int, ...] = (conversation_id, limit) if conversation_id else (limit,)
    rows = await db.execute_fetchall(
        "SELECT s.run_id, r.conversation_id, s.input, s.output, s.created_at"
        " FROM run_steps s JOIN agent_runs r ON r.id = s.run_id"
        f" WHERE {where} ORDER BY s.id DESC LIMIT ?",
        params,
    )
    found = []
    for row in rows:
        facts = load_json(row[2]) or {}
        found.append(
            Compaction(
                run_id=row[0],
                conversation_id=row[1],
                first_message_id=int(facts.get("first_message", 0)),
                last_message_id=int(facts.get("last_message", 0)),
                messages=int(facts.get("messages", 0)),
                tokens_before=int(facts.get("tokens_before", 0)),
                tokens_after=int(facts.get("tokens_after", 0)),
                pass_number=int(facts.get("round", 1)),
                summary=str(load_json(row[3]) or ""),
                created_at=from_db_time(row[4]),
            )
        )
    return found
