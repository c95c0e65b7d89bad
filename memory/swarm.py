"""Swarm runs: the run tree of a coordinator's sub-agent tasks and their steps, durable as they
happen.

Fencing: every write a worker makes carries the epoch it was given when it claimed its task; the
statements themselves refuse a stale epoch (``WHERE epoch = ?``), so a worker that was cancelled
and replaced cannot overwrite its successor, whatever Python thinks. Steps go through
:class:`memory.swarm_steps.StepLog`, which batches them into one transaction per loop tick.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiosqlite

from daemon.core.clock import Clock
from daemon.core.errors import FencedError, RecordNotFound
from daemon.core.redact import redact, redact_data
from memory._codec import dump_json, from_db_time, from_db_time_opt, load_json, to_db_time
from memory.store import SqliteStore
from memory.swarm_steps import INSERT_STEP

__all__ = [
    "FINAL",
    "RUN_COLUMNS",
    "STEP_COLUMNS",
    "TASK_COLUMNS",
    "SwarmRepo",
    "SwarmRun",
    "SwarmStep",
    "SwarmTask",
    "TaskSpec",
    "run_from_row",
    "step_from_row",
    "task_from_row",
]

log = logging.getLogger(__name__)

FINAL = frozenset({"done", "failed", "stalled", "cancelled", "unknown"})
TASK_COLUMNS = (
    "id, run_id, parent_task_id, depth, goal, role, tools, max_tokens, max_steps, deadline_at,"
    " result_shape, status, reason, attempt, epoch, result, tokens, steps, created_at,"
    " started_at, progress_at, finished_at, expected_seconds"
)
RUN_COLUMNS = (
    "id, agent_run_id, actor, goal, status, reason, max_tokens, max_steps, max_spawns, tokens,"
    " steps, spawns, started_at, finished_at, unattended, origin, progress_message"
)
STEP_COLUMNS = (
    "id, task_id, epoch, step_index, kind, name, state, input, output, error, tokens,"
    " duration_ms, created_at, finished_at, phase"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskSpec:
    """What a sub-agent is asked to do, within which limits."""

    goal: str
    role: str
    tools: tuple[str, ...]
    max_tokens: int
    max_steps: int
    result_shape: dict[str, Any] | None = None
    deadline_at: datetime | None = None
    expected_seconds: float | None = None  # the delegating agent's estimate (longest first)


@dataclass(frozen=True, slots=True, kw_only=True)
class SwarmRun:
    """One coordinator's run and its caps and totals."""

    id: int
    agent_run_id: int | None
    actor: str
    goal: str
    status: str
    reason: str | None
    max_tokens: int
    max_steps: int
    max_spawns: int
    tokens: int
    steps: int
    spawns: int
    started_at: datetime
    finished_at: datetime | None
    unattended: bool = True
    origin: str | None = None
    progress_message: str | None = None  # its progress message's platform id, once posted


@dataclass(frozen=True, slots=True, kw_only=True)
class SwarmTask:
    """One sub-agent task: its brief, status and why, attempt and epoch, result and cost."""

    id: int
    run_id: int
    parent_task_id: int | None
    depth: int
    goal: str
    role: str
    tools: tuple[str, ...]
    max_tokens: int
    max_steps: int
    deadline_at: datetime | None
    result_shape: dict[str, Any] | None
    status: str
    reason: str | None
    attempt: int
    epoch: int
    result: Any
    tokens: int
    steps: int
    created_at: datetime
    started_at: datetime | None
    progress_at: datetime | None
    finished_at: datetime | None
    expected_seconds: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SwarmStep:
    """One step of one attempt; input and output are decoded JSON."""

    id: int
    task_id: int
    epoch: int
    index: int
    kind: str
    name: str | None
    state: str
    input: Any
    output: Any
    error: str | None
    tokens: int
    duration_ms: float
    created_at: datetime
    finished_at: datetime | None
    phase: str | None = None  # an intent's: "authorising" (never acted) or "acting"


def run_from_row(row: aiosqlite.Row) -> SwarmRun:
    return SwarmRun(
        id=row["id"],
        agent_run_id=row["agent_run_id"],
        actor=row["actor"],
        goal=row["goal"],
        status=row["status"],
        reason=row["reason"],
        max_tokens=row["max_tokens"],
        max_steps=row["max_steps"],
        max_spawns=row["max_spawns"],
        tokens=row["tokens"],
        steps=row["steps"],
        spawns=row["spawns"],
        started_at=from_db_time(row["started_at"]),
        finished_at=from_db_time_opt(row["finished_at"]),
        unattended=bool(row["unattended"]),
        origin=row["origin"],
        progress_message=row["progress_message"],
    )


def task_from_row(row: aiosqlite.Row) -> SwarmTask:
    return SwarmTask(
        id=row["id"],
        run_id=row["run_id"],
        parent_task_id=row["parent_task_id"],
        depth=row["depth"],
        goal=row["goal"],
        role=row["role"],
        tools=tuple(json.loads(row["tools"])),
        max_tokens=row["max_tokens"],
        max_steps=row["max_steps"],
        deadline_at=from_db_time_opt(row["deadline_at"]),
        result_shape=load_json(row["result_shape"]),
        status=row["status"],
        reason=row["reason"],
        attempt=row["attempt"],
        epoch=row["epoch"],
        result=load_json(row["result"]),
        tokens=row["tokens"],
        steps=row["steps"],
        created_at=from_db_time(row["created_at"]),
        started_at=from_db_time_opt(row["started_at"]),
        progress_at=from_db_time_opt(row["progress_at"]),
        finished_at=from_db_time_opt(row["finished_at"]),
        expected_seconds=row["expected_seconds"],
    )


def step_from_row(row: aiosqlite.Row) -> SwarmStep:
    return SwarmStep(
        id=row["id"],
        task_id=row["task_id"],
        epoch=row["epoch"],
        index=row["step_index"],
        kind=row["kind"],
        name=row["name"],
        state=row["state"],
        input=load_json(row["input"]),
        output=load_json(row["output"]),
        error=row["error"],
        tokens=row["tokens"],
        duration_ms=row["duration_ms"],
        created_at=from_db_time(row["created_at"]),
        finished_at=from_db_time_opt(row["finished_at"]),
        phase=row["phase"],
    )


class SwarmRepo:
    """Runs, tasks and fenced task transitions."""

    def __init__(self, store: SqliteStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    def _now(self) -> str:
        return to_db_time(self._clock.now())

    async def start_run(
        self,
        *,
        actor: str,
        goal: str,
        agent_run_id: int | None,
        max_tokens: int,
        max_steps: int,
        max_spawns: int,
        unattended: bool = True,
        origin: str | None = None,
    ) -> int:
        """Record a new running swarm run; returns its id."""
        cur = await self._store.execute_write(
            "INSERT INTO swarm_runs (agent_run_id, actor, goal, max_tokens, max_steps, max_spawns,"
            " started_at, unattended, origin) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (agent_run_id, actor, redact(goal), max_tokens, max_steps, max_spawns, self._now(),
             int(unattended), origin),
        )  # fmt: skip
        assert cur.lastrowid is not None
        return cur.lastrowid

    async def finish_run(self, run_id: int, status: str, reason: str | None = None) -> None:
        """Set the run's final status and why."""
        cur = await self._store.execute_write(
            "UPDATE swarm_runs SET status = ?, reason = ?, finished_at = ? WHERE id = ?",
            (status, None if reason is None else redact(reason), self._now(), run_id),
        )
        if cur.rowcount == 0:
            raise RecordNotFound("swarm run", run_id)

    async def set_progress_message(self, run_id: int, platform_id: str) -> None:
        """Remember the run's progress message (a resumed run edits the same one)."""
        await self._store.execute_write(
            "UPDATE swarm_runs SET progress_message = ? WHERE id = ?", (platform_id, run_id)
        )

    async def note_paused(self, why: str) -> int:
        """Runs left running by a stopping daemon say why nothing moves until its next start
        (:meth:`clear_reason` when one is resumed); how many."""
        cur = await self._store.execute_write(
            "UPDATE swarm_runs SET reason = ? WHERE status = 'running'", (redact(why),)
        )
        return cur.rowcount

    async def clear_reason(self, run_id: int) -> None:
        """A running run's note (paused) no longer holds."""
        await self._store.execute_write(
            "UPDATE swarm_runs SET reason = NULL WHERE id = ? AND status = 'running'", (run_id,)
        )

    async def reopen_run(self, run_id: int) -> None:
        """A finished run gets more work (its coordinator delegates again): running again."""
        await self._store.execute_write(
            "UPDATE swarm_runs SET status = 'running', reason = NULL, finished_at = NULL"
            " WHERE id = ? AND status <> 'running'",
            (run_id,),
        )

    async def add_tasks(
        self, run_id: int, parent_task_id: int | None, depth: int, specs: Sequence[TaskSpec]
    ) -> list[int]:
        """Queue tasks; all or none, and only while the run's spawn cap allows all of them.

        Returns the new ids, or [] when the cap would be passed (the statement checks it).
        """
        now = self._now()
        async with self._store.write() as db:
            cur = await db.execute(
                "UPDATE swarm_runs SET spawns = spawns + ?"
                " WHERE id = ? AND spawns + ? <= max_spawns",
                (len(specs), run_id, len(specs)),
            )
            if cur.rowcount == 0:
                return []
            ids: list[int] = []
            for spec in specs:
                cur = await db.execute(
                    "INSERT INTO swarm_tasks (run_id, parent_task_id, depth, goal, role, tools,"
                    " max_tokens, max_steps, deadline_at, result_shape, created_at,"
                    " expected_seconds) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        run_id,
                        parent_task_id,
                        depth,
                        redact(spec.goal),
                        spec.role,
                        json.dumps(list(spec.tools)),
                        spec.max_tokens,
                        spec.max_steps,
                        None if spec.deadline_at is None else to_db_time(spec.deadline_at),
                        dump_json(spec.result_shape),
                        now,
                        spec.expected_seconds,
                    ),
                )
                assert cur.lastrowid is not None
                ids.append(cur.lastrowid)
        return ids

    async def claim(self, task_id: int, deadline_at: datetime | None = None) -> int:
        """A queued task becomes running under a new epoch, which is returned (the fencing
        token for every write of this attempt); FencedError when it is not queued."""
        async with self._store.write() as db:
            rows = list(
                await db.execute_fetchall(
                    "UPDATE swarm_tasks SET status = 'running', epoch = epoch + 1, reason = NULL,"
                    " started_at = ?, progress_at = ?, deadline_at = COALESCE(?, deadline_at)"
                    " WHERE id = ? AND status = 'queued' RETURNING epoch",
                    (
                        self._now(),
                        self._now(),
                        None if deadline_at is None else to_db_time(deadline_at),
                        task_id,
                    ),
                )
            )
        if not rows:
            raise FencedError(task_id, -1)
        return int(rows[0][0])

    async def finish(
        self,
        task_id: int,
        epoch: int,
        status: str,
        *,
        reason: str | None = None,
        result: Any = None,
    ) -> None:
        """End this attempt with a final status; refused (FencedError) at a stale epoch."""
        if status not in FINAL:
            raise ValueError(f"not a final status: {status!r}")
        cur = await self._store.execute_write(
            "UPDATE swarm_tasks SET status = ?, reason = ?, result = ?, finished_at = ?"
            " WHERE id = ? AND epoch = ? AND status = 'running'",
            (
                status,
                None if reason is None else redact(reason),
                dump_json(redact_data(result)),
                self._now(),
                task_id,
                epoch,
            ),
        )
        if cur.rowcount == 0:
            raise FencedError(task_id, epoch)

    async def reassign(
        self,
        task_id: int,
        *,
        reason: str,
        goal: str | None = None,
        deadline_at: datetime | None = None,
    ) -> int:
        """Fence off the current worker (epoch + 1) and queue the task again, optionally with a
        changed brief and a new deadline; returns the attempt number. Cancel the old worker
        first."""
        async with self._store.write() as db:
            rows = list(
                await db.execute_fetchall(
                    "UPDATE swarm_tasks SET epoch = epoch + 1, attempt = attempt + 1,"
                    " status = 'queued', reason = ?, goal = COALESCE(?, goal), result = NULL,"
                    " finished_at = NULL, deadline_at = COALESCE(?, deadline_at)"
                    " WHERE id = ? RETURNING attempt",
                    (
                        redact(reason),
                        None if goal is None else redact(goal),
                        None if deadline_at is None else to_db_time(deadline_at),
                        task_id,
                    ),
                )
            )
        if not rows:
            raise RecordNotFound("swarm task", task_id)
        return int(rows[0][0])

    async def mark_unknown(self) -> int:
        """At startup: tasks left queued or running by a previous process become "unknown"
        (their outcome is not known), and their runs too; returns how many tasks."""
        now = self._now()
        async with self._store.write() as db:
            cur = await db.execute(
                "UPDATE swarm_tasks SET status = 'unknown', epoch = epoch + 1, finished_at = ?,"
                " reason = 'the daemon stopped while this sub-agent was ' || status"
                " WHERE status IN ('queued', 'running')",
                (now,),
            )
            count = cur.rowcount
            await db.execute(
                "UPDATE swarm_runs SET status = 'unknown', finished_at = ?,"
                " reason = 'the daemon stopped during this run' WHERE status = 'running'",
                (now,),
            )
        if count:
            log.warning("marked %d unfinished sub-agent tasks as unknown", count)
        return count

    async def unfinished_runs(self) -> list[SwarmRun]:
        """Runs a previous process left running (to resume at startup), oldest first."""
        async with self._store.read() as db:
            rows = await db.execute_fetchall(
                f"SELECT {RUN_COLUMNS} FROM swarm_runs WHERE status = 'running' ORDER BY id"
            )
        return [run_from_row(row) for row in rows]

    async def resume_task(
        self, task_id: int, deadline_at: datetime | None = None
    ) -> tuple[int, list[SwarmStep]]:
        """At startup: a task left running by a dead process is taken over under a new epoch
        (the dead worker's late writes, if any, are refused) and the current attempt's steps
        move to that epoch, so the resumed attempt continues the same log. Returns the new epoch
        and the steps to replay; FencedError when the task is not running."""
        async with self._store.write() as db:
            rows = list(
                await db.execute_fetchall(
                    "UPDATE swarm_tasks SET epoch = epoch + 1, progress_at = ?,"
                    " deadline_at = COALESCE(?, deadline_at)"
                    " WHERE id = ? AND status = 'running' RETURNING epoch",
                    (
                        self._now(),
                        None if deadline_at is None else to_db_time(deadline_at),
                        task_id,
                    ),
                )
            )
            if not rows:
                raise FencedError(task_id, -1)
            epoch = int(rows[0][0])
            await db.execute(
                "UPDATE swarm_steps SET epoch = ? WHERE task_id = ? AND epoch = ?",
                (epoch, task_id, epoch - 1),
            )
            steps = await db.execute_fetchall(
                f"SELECT {STEP_COLUMNS} FROM swarm_steps WHERE task_id = ? AND epoch = ?"
                " ORDER BY step_index",
                (task_id, epoch),
            )
        return epoch, [step_from_row(row) for row in steps]

    async def cancel_queued(self, run_id: int, reason: str) -> int:
        """Tasks of the run still queued are cancelled (never started); returns how many."""
        cur = await self._store.execute_write(
            "UPDATE swarm_tasks SET status = 'cancelled', reason = ?, finished_at = ?"
            " WHERE run_id = ? AND status = 'queued'",
            (reason, self._now(), run_id),
        )
        return cur.rowcount

    async def get_run(self, run_id: int) -> SwarmRun:
        async with self._store.read() as db:
            rows = list(
                await db.execute_fetchall(
                    f"SELECT {RUN_COLUMNS} FROM swarm_runs WHERE id = ?", (run_id,)
                )
            )
        if not rows:
            raise RecordNotFound("swarm run", run_id)
        return run_from_row(rows[0])

    async def get_task(self, task_id: int) -> SwarmTask:
        async with self._store.read() as db:
            rows = list(
                await db.execute_fetchall(
                    f"SELECT {TASK_COLUMNS} FROM swarm_tasks WHERE id = ?", (task_id,)
                )
            )
        if not rows:
            raise RecordNotFound("swarm task", task_id)
        return task_from_row(rows[0])

    async def tasks(self, run_id: int) -> list[SwarmTask]:
        """The run's tasks in the order they were created (the tree by parent_task_id)."""
        async with self._store.read() as db:
            rows = await db.execute_fetchall(
                f"SELECT {TASK_COLUMNS} FROM swarm_tasks WHERE run_id = ? ORDER BY id", (run_id,)
            )
        return [task_from_row(row) for row in rows]

    async def steps(self, task_id: int) -> list[SwarmStep]:
        """The task's steps over all its attempts, in order."""
        async with self._store.read() as db:
            rows = await db.execute_fetchall(
                f"SELECT {STEP_COLUMNS} FROM swarm_steps WHERE task_id = ?"
                " ORDER BY epoch, step_index",
                (task_id,),
            )
        return [step_from_row(row) for row in rows]

    async def add_step_now(
        self, task_id: int, epoch: int, index: int, kind: str, name: str | None, output: Any
    ) -> None:
        """One done step written at once (not batched); FencedError at a stale epoch."""
        now = self._now()
        cur = await self._store.execute_write(
            INSERT_STEP,
            (task_id, epoch, index, kind, name, "done", None,
             dump_json(redact_data(output), lenient=True), None, 0, 0.0, now, now, None,
             task_id, epoch),
        )  # fmt: skip
        if cur.rowcount == 0:
            raise FencedError(task_id, epoch)
