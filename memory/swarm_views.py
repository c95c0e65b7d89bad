"""Read-only views of swarm runs for people: `nightshift runs`, `runs show`, the status line.

Every function takes an open aiosqlite connection (the store's reader, or a ``query_only``
connection the CLI opens on the database file while the daemon runs) and only reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime

import aiosqlite

from memory._codec import to_db_time
from memory.swarm import (
    RUN_COLUMNS,
    STEP_COLUMNS,
    TASK_COLUMNS,
    SwarmRun,
    SwarmStep,
    SwarmTask,
    run_from_row,
    step_from_row,
    task_from_row,
)

__all__ = [
    "LiveSwarm",
    "RunView",
    "get_run",
    "has_swarm_schema",
    "list_runs",
    "live_swarm",
    "run_tasks",
    "task_run_id",
    "task_steps",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class RunView(SwarmRun):
    """One swarm run with its caps, totals, sub-agents by status and its cost if priced."""

    by_status: dict[str, int] = field(default_factory=dict)
    cost_usd: float | None = None  # the sub-agents' model calls; None when unpriced
    coordinator_cost_usd: float | None = None  # the coordinator's own calls in its turn

    @property
    def total_cost_usd(self) -> float | None:
        """Sub-agents and coordinator together (None when neither was priced)."""
        if self.cost_usd is None and self.coordinator_cost_usd is None:
            return None
        return (self.cost_usd or 0.0) + (self.coordinator_cost_usd or 0.0)

    @property
    def sub_agents(self) -> int:
        return sum(self.by_status.values())


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


def _run(
    row: aiosqlite.Row, by_status: dict[str, int], cost: float | None, coordinator: float | None
) -> RunView:
    run = run_from_row(row)
    base = {f.name: getattr(run, f.name) for f in fields(SwarmRun)}
    return RunView(**base, by_status=by_status, cost_usd=cost, coordinator_cost_usd=coordinator)


async def _decorate(db: aiosqlite.Connection, rows: list[aiosqlite.Row]) -> list[RunView]:
    """Sub-agent counts by status and priced costs for these runs, in two grouped queries."""
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
    coordinators: dict[int, float] = {}
    # the sub-agents' calls are recorded under the coordinator's agent run: those made while
    # this swarm run was open are its own (an agent run may hold more than one swarm run); the
    # coordinator's own calls are its whole turn's
    for run_id, cost, coordinator in await db.execute_fetchall(
        "SELECT r.id, (SELECT SUM(u.cost_usd) FROM llm_usage u"
        " WHERE u.run_id = r.agent_run_id AND u.purpose = 'swarm'"
        " AND u.created_at >= r.started_at"
        " AND (r.finished_at IS NULL OR u.created_at <= r.finished_at)),"
        " (SELECT SUM(u.cost_usd) FROM llm_usage u"
        " WHERE u.run_id = r.agent_run_id AND u.purpose <> 'swarm')"
        f" FROM swarm_runs r WHERE r.id IN ({marks}) AND r.agent_run_id IS NOT NULL",
        ids,
    ):
        if cost:
            costs[run_id] = float(cost)
        if coordinator:
            coordinators[run_id] = float(coordinator)
    return [
        _run(row, counts[row["id"]], costs.get(row["id"]), coordinators.get(row["id"]))
        for row in rows
    ]


async def list_runs(
    db: aiosqlite.Connection, *, since: datetime | None, limit: int = 50
) -> list[RunView]:
    """Runs newest first: those still running and those started at or after ``since``
    (every run when ``since`` is None), at most ``limit``."""
    if since is None:
        rows = await db.execute_fetchall(
            f"SELECT {RUN_COLUMNS} FROM swarm_runs ORDER BY id DESC LIMIT ?", (limit,)
        )
    else:
        rows = await db.execute_fetchall(
            f"SELECT {RUN_COLUMNS} FROM swarm_runs WHERE status = 'running' OR started_at >= ?"
            " ORDER BY id DESC LIMIT ?",
            (to_db_time(since), limit),
        )
    return await _decorate(db, list(rows))


async def get_run(db: aiosqlite.Connection, run_id: int) -> RunView | None:
    """One run, or None when there is no such run."""
    rows = await db.execute_fetchall(
        f"SELECT {RUN_COLUMNS} FROM swarm_runs WHERE id = ?", (run_id,)
    )
    found = await _decorate(db, list(rows))
    return found[0] if found else None


async def run_tasks(db: aiosqlite.Connection, run_id: int) -> list[SwarmTask]:
    """The run's sub-agents in creation order (parents before their children)."""
    rows = await db.execute_fetchall(
        f"SELECT {TASK_COLUMNS} FROM swarm_tasks WHERE run_id = ? ORDER BY id", (run_id,)
    )
    return [task_from_row(row) for row in rows]


async def task_run_id(db: aiosqlite.Connection, task_id: int) -> int | None:
    """The run a sub-agent belongs to, or None when there is no such sub-agent."""
    rows = list(
        await db.execute_fetchall("SELECT run_id FROM swarm_tasks WHERE id = ?", (task_id,))
    )
    return int(rows[0][0]) if rows else None


async def task_steps(db: aiosqlite.Connection, task_id: int) -> list[SwarmStep]:
    """A sub-agent's steps over all its attempts, in order."""
    rows = await db.execute_fetchall(
        f"SELECT {STEP_COLUMNS} FROM swarm_steps WHERE task_id = ? ORDER BY epoch, step_index",
        (task_id,),
    )
    return [step_from_row(row) for row in rows]


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
