"""Read-only views of swarm runs for people: `nightshift runs`, `runs show`, the status line.

Every function takes an open aiosqlite connection (the store's reader, or a ``query_only``
connection the CLI opens on the database file while the daemon runs) and only reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import aiosqlite

from memory._codec import from_db_time, from_db_time_opt, to_db_time

__all__ = [
    "LiveSwarm",
    "RunView",
    "StepView",
    "TaskView",
    "get_run",
    "has_swarm_schema",
    "list_runs",
    "live_swarm",
    "run_tasks",
    "task_run_id",
    "task_steps",
]

_RUN_COLUMNS = (
    "id, agent_run_id, actor, goal, status, reason, max_tokens, max_steps, max_spawns, tokens,"
    " steps, spawns, started_at, finished_at"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunView:
    """One swarm run with its caps, totals, sub-agents by status and its cost if priced."""

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
    by_status: dict[str, int] = field(default_factory=dict)
    cost_usd: float | None = None  # the sub-agents' model calls; None when unpriced

    @property
    def sub_agents(self) -> int:
        return sum(self.by_status.values())


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskView:
    """One sub-agent in the run tree."""

    id: int
    parent_task_id: int | None
    depth: int
    role: str
    goal: str
    status: str
    reason: str | None
    attempt: int
    tokens: int
    steps: int
    max_tokens: int
    max_steps: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class StepView:
    """One step of one attempt (epoch) of a sub-agent."""

    epoch: int
    index: int
    kind: str
    name: str | None
    state: str
    error: str | None
    tokens: int
    duration_ms: float
    created_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class LiveSwarm:
    """What is running now: runs, their sub-agents running and queued, steps and tokens."""

    runs: int
    running: int
    queued: int
    steps: int
    tokens: int


async def has_swarm_schema(db: aiosqlite.Connection) -> bool:
    """Whether the database has the swarm tables (migration 0013 or later)."""
    rows = await db.execute_fetchall(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'swarm_runs'"
    )
    return bool(list(rows))


def _run(row: aiosqlite.Row, by_status: dict[str, int], cost: float | None) -> RunView:
    return RunView(
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
        by_status=by_status,
        cost_usd=cost,
    )


async def _decorate(db: aiosqlite.Connection, rows: list[aiosqlite.Row]) -> list[RunView]:
    """Sub-agent counts by status and priced cost for these runs, in two grouped queries."""
    if not rows:
        return []
    ids = [row["id"] for row in rows]
    marks = ", ".join("?" * len(ids))
    counts: dict[int, dict[str, int]] = {run_id: {} for run_id in ids}
    for run_id, status, n in await db.execute_fetchall(
        f"SELECT run_id, status, COUNT(*) FROM swarm_tasks WHERE run_id IN ({marks})"
        " GROUP BY run_id, status",
        ids,
    ):
        counts[run_id][status] = n
    costs: dict[int, float] = {}
    # the sub-agents' calls are recorded under the coordinator's agent run: those made while
    # this swarm run was open are its own (an agent run may hold more than one swarm run)
    for run_id, cost in await db.execute_fetchall(
        "SELECT r.id, (SELECT SUM(u.cost_usd) FROM llm_usage u"
        " WHERE u.run_id = r.agent_run_id AND u.purpose = 'swarm'"
        " AND u.created_at >= r.started_at"
        " AND (r.finished_at IS NULL OR u.created_at <= r.finished_at))"
        f" FROM swarm_runs r WHERE r.id IN ({marks}) AND r.agent_run_id IS NOT NULL",
        ids,
    ):
        if cost:
            costs[run_id] = float(cost)
    return [_run(row, counts[row["id"]], costs.get(row["id"])) for row in rows]


async def list_runs(
    db: aiosqlite.Connection, *, since: datetime | None, limit: int = 50
) -> list[RunView]:
    """Runs newest first: those still running and those started at or after ``since``
    (every run when ``since`` is None), at most ``limit``."""
    if since is None:
        rows = await db.execute_fetchall(
            f"SELECT {_RUN_COLUMNS} FROM swarm_runs ORDER BY id DESC LIMIT ?", (limit,)
        )
    else:
        rows = await db.execute_fetchall(
            f"SELECT {_RUN_COLUMNS} FROM swarm_runs WHERE status = 'running' OR started_at >= ?"
            " ORDER BY id DESC LIMIT ?",
            (to_db_time(since), limit),
        )
    return await _decorate(db, list(rows))


async def get_run(db: aiosqlite.Connection, run_id: int) -> RunView | None:
    """One run, or None when there is no such run."""
    rows = await db.execute_fetchall(
        f"SELECT {_RUN_COLUMNS} FROM swarm_runs WHERE id = ?", (run_id,)
    )
    found = await _decorate(db, list(rows))
    return found[0] if found else None


async def run_tasks(db: aiosqlite.Connection, run_id: int) -> list[TaskView]:
    """The run's sub-agents in creation order (parents before their children)."""
    rows = await db.execute_fetchall(
        "SELECT id, parent_task_id, depth, role, goal, status, reason, attempt, tokens, steps,"
        " max_tokens, max_steps, created_at, started_at, finished_at"
        " FROM swarm_tasks WHERE run_id = ? ORDER BY id",
        (run_id,),
    )
    return [
        TaskView(
            id=row["id"],
            parent_task_id=row["parent_task_id"],
            depth=row["depth"],
            role=row["role"],
            goal=row["goal"],
            status=row["status"],
            reason=row["reason"],
            attempt=row["attempt"],
            tokens=row["tokens"],
            steps=row["steps"],
            max_tokens=row["max_tokens"],
            max_steps=row["max_steps"],
            created_at=from_db_time(row["created_at"]),
            started_at=from_db_time_opt(row["started_at"]),
            finished_at=from_db_time_opt(row["finished_at"]),
        )
        for row in rows
    ]


async def task_run_id(db: aiosqlite.Connection, task_id: int) -> int | None:
    """The run a sub-agent belongs to, or None when there is no such sub-agent."""
    rows = list(
        await db.execute_fetchall("SELECT run_id FROM swarm_tasks WHERE id = ?", (task_id,))
    )
    return int(rows[0][0]) if rows else None


async def task_steps(db: aiosqlite.Connection, task_id: int) -> list[StepView]:
    """A sub-agent's steps over all its attempts, in order."""
    rows = await db.execute_fetchall(
        "SELECT epoch, step_index, kind, name, state, error, tokens, duration_ms, created_at,"
        " finished_at FROM swarm_steps WHERE task_id = ? ORDER BY epoch, step_index",
        (task_id,),
    )
    return [
        StepView(
            epoch=row["epoch"],
            index=row["step_index"],
            kind=row["kind"],
            name=row["name"],
            state=row["state"],
            error=row["error"],
            tokens=row["tokens"],
            duration_ms=row["duration_ms"],
            created_at=from_db_time(row["created_at"]),
            finished_at=from_db_time_opt(row["finished_at"]),
        )
        for row in rows
    ]


async def live_swarm(db: aiosqlite.Connection) -> LiveSwarm:
    """Runs still running, with their sub-agents running and queued and steps and tokens so far."""
    rows = list(
        await db.execute_fetchall(
            "SELECT COUNT(*), COALESCE(SUM(steps), 0), COALESCE(SUM(tokens), 0)"
            " FROM swarm_runs WHERE status = 'running'"
        )
    )
    runs, steps, tokens = rows[0]
    counts = {"running": 0, "queued": 0}
    if runs:
        for status, n in await db.execute_fetchall(
            "SELECT t.status, COUNT(*) FROM swarm_tasks t JOIN swarm_runs r ON r.id = t.run_id"
            " WHERE r.status = 'running' AND t.status IN ('running', 'queued') GROUP BY t.status"
        ):
            counts[status] = n
    return LiveSwarm(
        runs=runs, running=counts["running"], queued=counts["queued"], steps=steps, tokens=tokens
    )
