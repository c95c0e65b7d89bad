"""What reading swarm runs costs: `nightshift runs`, `runs show ID` and the status line.

Fills a fresh database (through the real migrations) with ``--runs`` finished swarm runs of
``--tasks`` sub-agents and ``--steps`` steps each (raw inserts: the write path is not measured
here), plus one live run of the same size, then times each view over ``--repeat`` reads on a
``query_only`` connection (what the CLI opens), and the CLI end to end in a subprocess.

Usage: python -m bench.runs_view [--runs 50] [--tasks 300] [--steps 13] [--repeat 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiosqlite

from memory._codec import to_db_time
from memory.store import SqliteStore
from memory.swarm_views import get_run, list_runs, live_swarm, run_tasks, task_steps

STATUSES = ("done",) * 95 + ("failed", "failed", "stalled", "unknown", "cancelled")


async def fill(path: Path, runs: int, tasks: int, steps: int) -> tuple[int, int]:
    """Returns the live run's id and one of its sub-agents."""
    store = await SqliteStore.open(path)
    start = datetime.now(UTC) - timedelta(hours=runs)
    try:
        async with store.write() as db:
            for r in range(runs + 1):
                live = r == runs
                at = to_db_time(start + timedelta(hours=r))
                cur = await db.execute(
                    "INSERT INTO swarm_runs (actor, goal, status, max_tokens, max_steps,"
                    " max_spawns, tokens, steps, spawns, started_at, finished_at)"
                    " VALUES ('bench', ?, ?, 10000000, 100000, 1000, ?, ?, ?, ?, ?)",
                    (f"check every host, round {r}", "running" if live else "done",
                     tasks * steps * 100, tasks * steps, tasks, at, None if live else at),
                )  # fmt: skip
                run_id = cur.lastrowid
                first = None
                for t in range(tasks):
                    status = ("running" if t % 10 == 0 else "done") if live else STATUSES[t % 100]
                    cur = await db.execute(
                        "INSERT INTO swarm_tasks (run_id, parent_task_id, depth, goal, role,"
                        " tools, max_tokens, max_steps, status, reason, tokens, steps,"
                        " created_at, started_at, finished_at)"
                        " VALUES (?, ?, ?, ?, 'checker', '[]', 5000, 20, ?, ?, ?, ?, ?, ?, ?)",
                        (run_id, first if t % 3 else None, 2 if t % 3 else 1,
                         f"check host web{t}", status, None if status == "done" else "timeout",
                         steps * 100, steps, at, at, at),
                    )  # fmt: skip
                    task_id = cur.lastrowid
                    first = first if t % 3 else task_id
                    await db.executemany(
                        "INSERT INTO swarm_steps (task_id, epoch, step_index, kind, name, state,"
                        " tokens, duration_ms, created_at, finished_at)"
                        " VALUES (?, 1, ?, ?, 'x', 'done', 100, 5.0, ?, ?)",
                        [(task_id, i, "llm" if i % 2 else "tool", at, at) for i in range(steps)],
                    )
        assert run_id is not None and task_id is not None
        return run_id, task_id
    finally:
        await store.close()


async def timed(repeat: int, read: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        await read()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times), max(times)


async def read_views(path: Path, live: int, task: int, repeat: int) -> None:
    async with aiosqlite.connect(path) as db:
        db.row_factory = aiosqlite.Row
        await db.execute("PRAGMA query_only = ON")
        views: dict[str, Callable[[], Awaitable[Any]]] = {
            "status line (live_swarm)": lambda: live_swarm(db),
            "runs (last day)": lambda: list_runs(
                db, since=datetime.now(UTC) - timedelta(days=1), limit=30
            ),
            "runs --all --limit 30": lambda: list_runs(db, since=None, limit=30),
            "runs show (header + tree)": lambda: asyncio.gather(
                get_run(db, live), run_tasks(db, live)
            ),
            "runs show --steps": lambda: task_steps(db, task),
        }
        for name, read in views.items():
            median, worst = await timed(repeat, read)
            print(f"{name:<28} median {median:7.2f} ms, max {worst:7.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--steps", type=int, default=13)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "nightshift.db"
        began = time.perf_counter()
        live, task = asyncio.run(fill(path, args.runs, args.tasks, args.steps))
        total = (args.runs + 1) * args.tasks
        print(
            f"filled {args.runs + 1} runs, {total:,} sub-agents, {total * args.steps:,} steps"
            f" in {time.perf_counter() - began:.1f} s ({path.stat().st_size / 1e6:.1f} MB)"
        )
        asyncio.run(read_views(path, live, task, args.repeat))
        for argv in (["runs", "--all"], ["runs", "show", str(live)]):
            began = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "daemon.cli.main", *argv, "--state-dir", tmp],
                capture_output=True,
                text=True,
                check=True,
            )
            lines = len(done.stdout.splitlines())
            print(
                f"nightshift {' '.join(argv):<18} {(time.perf_counter() - began) * 1000:6.0f} ms"
                f" end to end (Python start included), {lines} lines"
            )


if __name__ == "__main__":
    main()
