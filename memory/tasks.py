"""Scheduled tasks and their runs (a run row is the claim on one slot)."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import aiosqlite

from daemon.core.clock import Clock
from daemon.core.errors import RecordNotFound
from daemon.core.redact import redact
from daemon.core.tasks import TaskSpec
from memory._codec import from_db_time, from_db_time_opt, to_db_time
from memory.store import SqliteStore

__all__ = ["StoredTask", "TaskRepo", "TaskRun"]

_CLAIM_ROWS = 200  # rows per multi-row INSERT (4 variables each, far below SQLite's limit)
# finish() calls per transaction: their callers all resume in one loop turn (and each logs)
_FINISH_ROWS = 200
FINISHED = ("ok", "nothing_to_do", "failed", "timeout", "skipped", "interrupted")
_FINISH = (
    "UPDATE task_runs SET status = ?, finished_at = ?, tokens = tokens + ?, output = ?,"
    " error = ?, outbox_id = COALESCE(?, outbox_id), settled = ? WHERE id = ?"
)


def slot_key(at: datetime) -> str:
    """The stored key of the schedule slot at ``at`` (UTC, fixed width: keys sort by time)."""
    return to_db_time(at)


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredTask:
    id: int
    name: str
    source: str  # config | runtime
    spec: TaskSpec
    enabled: bool
    paused_reason: str | None
    owner: str
    consecutive_failures: int
    failure_notified_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @property
    def active(self) -> bool:
        return self.enabled and self.spec.enabled and self.paused_reason is None


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskRun:
    id: int
    task_id: int
    slot: str
    attempt: int
    status: str
    started_at: datetime
    finished_at: datetime | None
    tokens: int
    output: str | None
    error: str | None
    outbox_id: int | None
    delivery: str | None  # the outbox row's status: pending | delivered | failed


class TaskRepo:
    def __init__(self, store: SqliteStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        # finish() calls waiting for the next group commit, and the task that writes them
        self._finishing: list[tuple[tuple[object, ...], asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    # -- definitions ----------------------------------------------------------------------------

    async def upsert(self, spec: TaskSpec, *, source: str, owner: str) -> tuple[StoredTask, bool]:
        """Create or update by name; True when the definition changed (or is new)."""
        now = to_db_time(self._clock.now())
        text = spec.model_dump_json()
        async with self._store.write() as db:
            rows = list(
                await db.execute_fetchall("SELECT spec FROM tasks WHERE name = ?", (spec.name,))
            )
            changed = not rows or rows[0][0] != text
            if not rows:
                await db.execute(
                    "INSERT INTO tasks (name, source, spec, owner, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (spec.name, source, text, owner, now, now),
                )
            elif changed:
                await db.execute(
                    "UPDATE tasks SET spec = ?, source = ?, updated_at = ? WHERE name = ?",
                    (text, source, now, spec.name),
                )
        return await self.get(spec.name), changed

    async def remove(self, name: str) -> bool:
        """Delete a task and its run history."""
        async with self._store.write() as db:
            rows = list(await db.execute_fetchall("SELECT id FROM tasks WHERE name = ?", (name,)))
            if not rows:
                return False
            await db.execute("DELETE FROM task_runs WHERE task_id = ?", (rows[0][0],))
            await db.execute("DELETE FROM tasks WHERE id = ?", (rows[0][0],))
        return True

    async def set_paused(self, name: str, reason: str | None) -> None:
        cur = await self._store.execute_write(
            "UPDATE tasks SET paused_reason = ?, consecutive_failures = CASE WHEN ? IS NULL"
            " THEN 0 ELSE consecutive_failures END, updated_at = ? WHERE name = ?",
            (reason, reason, to_db_time(self._clock.now()), name),
        )
        if cur.rowcount == 0:
            raise RecordNotFound("task", name)

    async def record_outcome(self, task_id: int, *, failed: bool) -> int:
        """Count consecutive failures (reset by a success); returns the new count."""
        async with self._store.write() as db:
            if failed:
                await db.execute(
                    "UPDATE tasks SET consecutive_failures = consecutive_failures + 1 WHERE id = ?",
                    (task_id,),
                )
            else:
                await db.execute(
                    "UPDATE tasks SET consecutive_failures = 0, failure_notified_at = NULL"
                    " WHERE id = ?",
                    (task_id,),
                )
            rows = list(
                await db.execute_fetchall(
                    "SELECT consecutive_failures FROM tasks WHERE id = ?", (task_id,)
                )
            )
        return int(rows[0][0]) if rows else 0

    async def mark_failure_notified(self, task_id: int) -> None:
        await self._store.execute_write(
            "UPDATE tasks SET failure_notified_at = ? WHERE id = ?",
            (to_db_time(self._clock.now()), task_id),
        )

    async def get_by_id(self, task_id: int) -> StoredTask:
        found = await self._tasks("WHERE id = ?", (task_id,))
        if not found:
            raise RecordNotFound("task", str(task_id))
        return found[0]

    async def get(self, name: str) -> StoredTask:
        found = await self._tasks("WHERE name = ?", (name,))
        if not found:
            raise RecordNotFound("task", name)
        return found[0]

    async def all(self) -> list[StoredTask]:
        return await self._tasks("ORDER BY name", ())

    async def _tasks(self, where: str, params: tuple[object, ...]) -> list[StoredTask]:
        # Inside a caller's open transaction, read through it to see its own changes.
        reading = self._store.write() if self._store.in_write() else self._store.read()
        async with reading as db:
            rows = await db.execute_fetchall(f"SELECT * FROM tasks {where}", params)
        return [_task(row) for row in rows]

    # -- runs -----------------------------------------------------------------------------------

    async def claim(self, task_id: int, slot: str, *, status: str = "running") -> int | None:
        """Claim a slot before running it; None when it was claimed before (never run twice)."""
        cur = await self._store.execute_write(
            "INSERT INTO task_runs (task_id, slot, status, started_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (task_id, slot) DO NOTHING",
            (task_id, slot, status, to_db_time(self._clock.now())),
        )
        return cur.lastrowid if cur.rowcount == 1 else None

    async def claim_many(self, claims: Sequence[tuple[int, str]]) -> list[int | None]:
        """Claim many (task id, slot) pairs in one transaction (a herd due at the same second):
        each pair's run id, or None when it was claimed before."""
        now = to_db_time(self._clock.now())
        claimed: dict[tuple[int, str], int] = {}
        async with self._store.write() as db:
            for start in range(0, len(claims), _CLAIM_ROWS):
                chunk = claims[start : start + _CLAIM_ROWS]
                values = ", ".join("(?, ?, 'running', ?)" for _ in chunk)
                params = [value for task_id, slot in chunk for value in (task_id, slot, now)]
                rows = await db.execute_fetchall(
                    f"INSERT INTO task_runs (task_id, slot, status, started_at) VALUES {values}"
                    " ON CONFLICT (task_id, slot) DO NOTHING RETURNING id, task_id, slot",
                    params,
                )
                claimed.update({(row[1], row[2]): row[0] for row in rows})
        return [claimed.get(pair) for pair in claims]

    async def claim_catch_up(
        self, task_id: int, skipped: tuple[str, str] | None, slots: Sequence[str]
    ) -> list[tuple[int, str]]:
        """Record a catch-up decision in one transaction: the skipped row (slot, reason) and a
        'claimed' row for each slot to run (started later by ``start_claimed``); returns the
        claimed (run id, slot) pairs, leaving out slots claimed before."""
        now = to_db_time(self._clock.now())
        claimed: list[tuple[int, str]] = []
        async with self._store.write() as db:
            if skipped is not None:
                await db.execute(
                    "INSERT INTO task_runs (task_id, slot, status, started_at, finished_at, error)"
                    " VALUES (?, ?, 'skipped', ?, ?, ?) ON CONFLICT (task_id, slot) DO NOTHING",
                    (task_id, skipped[0], now, now, redact(skipped[1])),
                )
            for slot in slots:
                cur = await db.execute(
                    "INSERT INTO task_runs (task_id, slot, status, started_at)"
                    " VALUES (?, ?, 'claimed', ?) ON CONFLICT (task_id, slot) DO NOTHING",
                    (task_id, slot, now),
                )
                if cur.rowcount == 1 and cur.lastrowid is not None:
                    claimed.append((cur.lastrowid, slot))
        return claimed

    async def start_claimed(self, run_id: int) -> None:
        """A claimed (caught-up) slot starts running now."""
        await self._store.execute_write(
            "UPDATE task_runs SET status = 'running', started_at = ? WHERE id = ?",
            (to_db_time(self._clock.now()), run_id),
        )

    async def get_many(self, names: Sequence[str]) -> list[StoredTask]:
        """The tasks named (unknown names are left out), in no particular order."""
        found: list[StoredTask] = []
        for start in range(0, len(names), _CLAIM_ROWS):
            chunk = list(names[start : start + _CLAIM_ROWS])
            marks = ", ".join("?" for _ in chunk)
            found += await self._tasks(f"WHERE name IN ({marks})", tuple(chunk))
        return found

    async def retry(self, run_id: int) -> None:
        await self._store.execute_write(
            "UPDATE task_runs SET attempt = attempt + 1, status = 'running', error = NULL,"
            " finished_at = NULL WHERE id = ?",
            (run_id,),
        )

    async def finish(
        self,
        run_id: int,
        status: str,
        *,
        tokens: int = 0,
        output: str | None = None,
        error: str | None = None,
        outbox_id: int | None = None,
    ) -> None:
        """Record a run's outcome; returns once committed. Runs that finish together are
        written together (a herd of 10,000 finishing runs: about 50 commits)."""
        if status not in FINISHED:
            raise ValueError(f"not a final run status: {status}")
        settled = 0 if status == "interrupted" else 1  # its owner is told at the next start
        params = (
            status,
            to_db_time(self._clock.now()),
            tokens,
            None if output is None else redact(output),
            None if error is None else redact(error),
            outbox_id,
            settled,
            run_id,
        )
        if self._store.in_write():  # part of the caller's transaction
            await self._store.execute_write(_FINISH, params)
            return
        done = asyncio.get_running_loop().create_future()
        self._finishing.append((params, done))
        if self._flusher is None:
            self._flusher = asyncio.ensure_future(self._write_finished())
        await done

    async def _write_finished(self) -> None:
        """Write the queued finish() calls, up to _FINISH_ROWS per transaction, until none are
        left."""
        batch: list[tuple[tuple[object, ...], asyncio.Future[None]]] = []
        try:
            while self._finishing:
                batch = self._finishing[:_FINISH_ROWS]
                del self._finishing[:_FINISH_ROWS]
                try:
                    async with self._store.write() as db:
                        await db.executemany(_FINISH, [params for params, _ in batch])
                except Exception as exc:
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                else:
                    for _, done in batch:
                        if not done.done():
                            done.set_result(None)
                batch = []
        finally:
            self._flusher = None
            for _, done in batch + self._finishing:  # cancelled: nobody is left to write them
                done.cancel()
            self._finishing = []

    async def last_slot(self, task_id: int) -> datetime | None:
        """The latest scheduled slot claimed (manual runs and retries do not count)."""
        async with self._store.read() as db:
            rows = list(
                await db.execute_fetchall(
                    "SELECT max(slot) FROM task_runs WHERE task_id = ?"
                    " AND slot NOT LIKE 'manual:%' AND slot NOT LIKE 'retry:%'",
                    (task_id,),
                )
            )
        return from_db_time_opt(rows[0][0]) if rows else None

    async def mark_interrupted(self) -> int:
        """At startup: runs left running by a previous process are over."""
        cur = await self._store.execute_write(
            "UPDATE task_runs SET status = 'interrupted', finished_at = ?, settled = 0,"
            " error = CASE status WHEN 'claimed' THEN 'the daemon stopped before this caught-up"
            " slot ran' ELSE 'the daemon stopped during the run' END"
            " WHERE status IN ('running', 'claimed')",
            (to_db_time(self._clock.now()),),
        )
        return cur.rowcount

    async def interrupted_unsettled(self) -> list[TaskRun]:
        """Interrupted runs whose owner was not told yet (nor retried), oldest first."""
        async with self._store.read() as db:
            rows = await db.execute_fetchall(
                "SELECT r.*, NULL AS delivery FROM task_runs r"
                " WHERE status = 'interrupted' AND settled = 0 ORDER BY id",
            )
        return [_run(row) for row in rows]

    async def settle(self, run_id: int, outbox_id: int | None) -> None:
        """The interrupted run's owner was told (``outbox_id``) or it was retried."""
        await self._store.execute_write(
            "UPDATE task_runs SET settled = 1, outbox_id = COALESCE(?, outbox_id) WHERE id = ?",
            (outbox_id, run_id),
        )

    async def prune(self, before: datetime) -> int:
        """Forget finished runs started before ``before``; each task's latest scheduled slot
        is kept (catch-up counts from it)."""
        cur = await self._store.execute_write(
            "DELETE FROM task_runs WHERE started_at < ? AND finished_at IS NOT NULL"
            " AND slot < (SELECT max(r.slot) FROM task_runs r WHERE r.task_id = task_runs.task_id"
            " AND r.slot NOT LIKE 'manual:%')",
            (to_db_time(before),),
        )
        return cur.rowcount

    async def runs(self, task_id: int, limit: int = 20) -> list[TaskRun]:
        async with self._store.read() as db:
            rows = await db.execute_fetchall(
                "SELECT r.*, o.status AS delivery FROM task_runs r"
                " LEFT JOIN outbox o ON o.id = r.outbox_id WHERE r.task_id = ?"
                " ORDER BY r.id DESC LIMIT ?",
                (task_id, limit),
            )
        return [_run(row) for row in rows]

    async def runs_since(self, since: datetime) -> list[TaskRun]:
        async with self._store.read() as db:
            rows = await db.execute_fetchall(
                "SELECT r.*, o.status AS delivery FROM task_runs r"
                " LEFT JOIN outbox o ON o.id = r.outbox_id WHERE r.started_at >= ?"
                " ORDER BY r.id",
                (to_db_time(since),),
            )
        return [_run(row) for row in rows]


@functools.lru_cache(maxsize=50_000)
def _spec(text: str) -> TaskSpec:
    """The TaskSpec stored as ``text``, validated once: every wake-up reads its task back, and
    specs are never changed in place."""
    return TaskSpec.model_validate(json.loads(text))


def _task(row: aiosqlite.Row) -> StoredTask:
    return StoredTask(
        id=row["id"],
        name=row["name"],
        source=row["source"],
        spec=_spec(row["spec"]),
        enabled=bool(row["enabled"]),
        paused_reason=row["paused_reason"],
        owner=row["owner"],
        consecutive_failures=row["consecutive_failures"],
        failure_notified_at=from_db_time_opt(row["failure_notified_at"]),
        created_at=from_db_time(row["created_at"]),
        updated_at=from_db_time(row["updated_at"]),
    )


def _run(row: aiosqlite.Row) -> TaskRun:
    return TaskRun(
        id=row["id"],
        task_id=row["task_id"],
        slot=row["slot"],
        attempt=row["attempt"],
        status=row["status"],
        started_at=from_db_time(row["started_at"]),
        finished_at=from_db_time_opt(row["finished_at"]),
        tokens=row["tokens"],
        output=row["output"],
        error=row["error"],
        outbox_id=row["outbox_id"],
        delivery=row["delivery"],
    )
