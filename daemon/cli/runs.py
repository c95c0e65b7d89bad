"""``nightshift runs``: swarm runs and their sub-agent trees, read straight from the database.

Safe while the daemon runs: the database is in WAL mode, so this reader never blocks the
daemon's writer, and the connection is ``query_only`` (it cannot write, migrate or vacuum).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import shutil
import sqlite3
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path

import aiosqlite

from daemon.core.clock import SystemClock
from memory.swarm import SwarmStep, SwarmTask
from memory.swarm_views import (
    RunView,
    get_run,
    has_swarm_schema,
    list_runs,
    run_tasks,
    task_run_id,
    task_steps,
)

__all__ = ["add_parser", "render_list", "render_run", "render_steps", "run_runs"]

# the order sub-agent counts are listed in: outcomes an SRE acts on before the rest
_STATUS_ORDER = ("done", "failed", "stalled", "unknown", "cancelled", "running", "queued")
_TROUBLE = frozenset({"failed", "stalled", "unknown", "cancelled"})
_ATTENTION_SHOWN = 20
_PIPED_WIDTH = 200


class _Refused(Exception):
    """A message for the user and an exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    with_location: Callable[[argparse.ArgumentParser], argparse.ArgumentParser],
) -> None:
    """``runs [list] [--all] [--limit N]`` and ``runs show ID [--steps TASK_ID]``, each with
    ``--json``."""
    runs = with_location(
        commands.add_parser("runs", help="swarm runs: list them, or show one's sub-agent tree")
    )
    runs.add_argument("action", nargs="?", choices=["list", "show"], default="list")
    runs.add_argument("id", nargs="?", type=int, help="run number (with show)")
    runs.add_argument(
        "--all", action="store_true", help="every run (default: running and the last day)"
    )
    runs.add_argument("--limit", type=int, default=30, help="at most this many runs (default 30)")
    runs.add_argument(
        "--steps", type=int, metavar="TASK_ID", help="with show: that sub-agent's steps"
    )
    runs.add_argument(
        "--json", action="store_true", help="the same, as JSON (for scripts: jq and the like)"
    )


def run_runs(path: Path, args: argparse.Namespace) -> int:
    """Print the listing, a run's tree or a sub-agent's steps; 1 when it cannot, 2 on misuse."""
    if args.action == "show" and args.id is None:
        print("nightshift runs show ID: give the run number", file=sys.stderr)
        return 2
    if args.action == "list" and (args.id is not None or args.steps is not None):
        print("nightshift runs: use `runs show ID [--steps TASK_ID]`", file=sys.stderr)
        return 2
    if not path.is_file():
        print(f"nightshift: no database at {path}: has the daemon run yet?", file=sys.stderr)
        return 1
    now = SystemClock().now()
    try:
        text = asyncio.run(_read(path, args, now))
    except _Refused as exc:
        print(f"nightshift: {exc}", file=sys.stderr)
        return exc.code
    except sqlite3.Error as exc:
        print(f"nightshift: cannot read {path}: {exc}", file=sys.stderr)
        return 1
    print(text)
    return 0


async def _read(path: Path, args: argparse.Namespace, now: datetime) -> str:
    async with aiosqlite.connect(path) as db:
        db.row_factory = aiosqlite.Row
        await db.execute("PRAGMA query_only = ON")
        await db.execute("PRAGMA busy_timeout = 5000")
        if not await has_swarm_schema(db):
            raise _Refused(
                f"{path} has no swarm runs table yet: start the daemon once to upgrade it"
            )
        if args.action == "list":
            since = None if args.all else now - timedelta(days=1)
            runs = await list_runs(db, since=since, limit=max(1, args.limit))
            if args.json:
                return _json({"runs": runs})
            return render_list(runs, now, everything=args.all)
        run = await get_run(db, args.id)
        if run is None:
            raise _Refused(f"no swarm run #{args.id} (see `nightshift runs --all`)")
        tasks = await run_tasks(db, run.id)
        if args.steps is None:
            return (
                _json({"run": run, "sub_agents": tasks})
                if args.json
                else render_run(run, tasks, now)
            )
        if await task_run_id(db, args.steps) != run.id:
            raise _Refused(f"run #{run.id} has no sub-agent #{args.steps}")
        [task] = [t for t in tasks if t.id == args.steps]
        steps = await task_steps(db, task.id)
        if args.json:
            return _json({"sub_agent": task, "steps": steps})
        return render_steps(task, steps, now)


def _json(value: object) -> str:
    """Runs, sub-agents and steps as JSON: their fields (a run's computed totals too), times
    in ISO 8601."""
    return json.dumps(_plain(value), ensure_ascii=False, indent=1)


def _plain(value: object) -> object:
    if isinstance(value, RunView):
        fields = {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {**fields, "sub_agents": value.sub_agents, "total_cost_usd": value.total_cost_usd}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _width() -> int:
    """The terminal's width; into a pipe or file, lines are cut only when very long."""
    if not sys.stdout.isatty():
        return _PIPED_WIDTH
    return max(80, shutil.get_terminal_size((120, 24)).columns)


def _cut(text: str, width: int) -> str:
    """One line of at most ``width`` characters (at least 20), whitespace collapsed."""
    width = max(width, 20)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def duration(seconds: float) -> str:
    """``850ms``, ``41s``, ``16m02s``, ``3h05m``, ``2d04h``."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    whole = int(seconds)
    if whole < 60:
        return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def _took(start: datetime | None, end: datetime | None, now: datetime) -> str:
    if start is None:
        return "-"
    return duration(((end or now) - start).total_seconds())


def counts(by_status: dict[str, int]) -> str:
    """``212 done, 3 failed, 1 stalled`` (or ``none``)."""
    order = [*_STATUS_ORDER, *sorted(set(by_status) - set(_STATUS_ORDER))]
    return ", ".join(f"{by_status[s]} {s}" for s in order if by_status.get(s)) or "none"


def _cost(run: RunView) -> str:
    total = run.total_cost_usd
    return "-" if total is None else f"${total:.2f}"


def _when(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M")


def render_list(runs: Sequence[RunView], now: datetime, *, everything: bool) -> str:
    """One line per run, newest first; the goal cut to the terminal's width."""
    if not runs:
        return "no swarm runs" + ("" if everything else " running or in the last day (--all)")
    rows = [
        (
            f"#{run.id}",
            run.status,
            _when(run.started_at),
            _took(run.started_at, run.finished_at, now),
            f"{run.steps:,}",
            f"{run.tokens:,}",
            _cost(run),
            counts(run.by_status),
        )
        for run in runs
    ]
    head = ("RUN", "STATUS", "STARTED (UTC)", "TOOK", "STEPS", "TOKENS", "COST", "SUB-AGENTS")
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]
    right = {4, 5, 6}

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.rjust(w) if i in right else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        )

    room = _width() - len(line(head)) - 2
    out = [line(head) + "  GOAL"]
    out += [line(row) + "  " + _cut(run.goal, room) for row, run in zip(rows, runs, strict=True)]
    return "\n".join(out)


def _tree(tasks: Sequence[SwarmTask]) -> list[SwarmTask]:
    """Depth-first: each sub-agent followed by the ones it delegated to."""
    children: dict[int | None, list[SwarmTask]] = {}
    ids = {task.id for task in tasks}
    for task in tasks:
        parent = task.parent_task_id if task.parent_task_id in ids else None
        children.setdefault(parent, []).append(task)
    ordered: list[SwarmTask] = []
    stack = list(reversed(children.get(None, [])))
    while stack:
        task = stack.pop()
        ordered.append(task)
        stack.extend(reversed(children.get(task.id, [])))
    return ordered


def _tree_table(tasks: Sequence[SwarmTask], now: datetime, width: int) -> list[str]:
    """The tree as a table: the first column indented by depth, the reason of what is not done
    on the line below it."""
    ordered = _tree(tasks)
    ids = [f"{'  ' * (task.depth - 1)}#{task.id}" for task in ordered]
    first = max([len("SUB-AGENT"), *map(len, ids)])
    head = (
        f"{'SUB-AGENT':<{first}}  {'STATUS':<9}  {'ROLE':<12}  TRY  {'STEPS':>5}  "
        f"{'TOKENS':>9}  {'TOOK':>7}  "
    )
    out = [head + "GOAL"]
    for cell, task in zip(ids, ordered, strict=True):
        line = (
            f"{cell:<{first}}  {task.status:<9}  {task.role:<12.12}  {task.attempt:>3}  "
            f"{task.steps:>5,}  {task.tokens:>9,}  "
            f"{_took(task.started_at, task.finished_at, now):>7}  "
        )
        out.append(line + _cut(task.goal, width - len(line)))
        if task.status != "done" and task.reason:
            pad = " " * (first + 2)
            out.append(pad + "why: " + _cut(task.reason, width - len(pad) - 5))
    return out


def render_run(run: RunView, tasks: Sequence[SwarmTask], now: datetime) -> str:
    """The header (goal, status, budgets used vs caps), what needs attention, then the tree."""
    width = _width()
    state = run.status + (f" — {run.reason}" if run.reason else "")
    finished = (
        f"finished {_when(run.finished_at)}, took {_took(run.started_at, run.finished_at, now)}"
        if run.finished_at
        else f"running for {_took(run.started_at, None, now)}"
    )
    cost = ""
    if run.total_cost_usd is not None:
        cost = (
            f"; model cost ${run.total_cost_usd:.2f} (sub-agents ${run.cost_usd or 0:.2f}, "
            f"coordinator's turn ${run.coordinator_cost_usd or 0:.2f})"
        )
    coordinator = "" if run.agent_run_id is None else f" (agent run #{run.agent_run_id})"
    out = [
        f"swarm run #{run.id}: {_cut(run.goal, width - 16)}",
        f"  status:     {state}",
        f"  by:         {run.actor}{coordinator}",
        f"  started:    {run.started_at:%Y-%m-%d %H:%M:%S} UTC, {finished}",
        f"  budget:     {run.steps:,} of {run.max_steps:,} steps, {run.tokens:,} of "
        f"{run.max_tokens:,} tokens, {run.spawns:,} of {run.max_spawns:,} spawns{cost}",
        f"  sub-agents: {counts(run.by_status)}",
    ]
    trouble = [task for task in tasks if task.status in _TROUBLE]
    if trouble:
        out += ["", f"needs attention ({len(trouble)}):"]
        for task in trouble[:_ATTENTION_SHOWN]:
            line = f"  #{task.id:<6} {task.status:<9} try {task.attempt:<2}  "
            out.append(line + _cut(task.reason or "no reason recorded", width - len(line)))
        if len(trouble) > _ATTENTION_SHOWN:
            out.append(f"  … and {len(trouble) - _ATTENTION_SHOWN} more (in the tree below)")
    out.append("")
    out += _tree_table(tasks, now, width) if tasks else ["no sub-agents yet"]
    out.append("")
    out.append(f"steps of one sub-agent: nightshift runs show {run.id} --steps TASK_ID")
    return "\n".join(out)


def render_steps(task: SwarmTask, steps: Sequence[SwarmStep], now: datetime) -> str:
    """A sub-agent's steps over its attempts: kind, name, state, duration, tokens, error.

    A side-effecting step whose outcome was never written shows ``acting`` while its attempt
    runs, else ``no outcome`` (it may or may not have acted: check before redoing it by hand).
    """
    width = _width()
    why = f" — {task.reason}" if task.reason and task.status != "done" else ""
    out = [
        f"sub-agent #{task.id} ({task.role}), {task.status}{why}",
        f"  goal:    {_cut(task.goal, width - 11)}",
        f"  attempt {task.attempt}; {task.steps:,} of {task.max_steps:,} steps, "
        f"{task.tokens:,} of {task.max_tokens:,} tokens; took "
        f"{_took(task.started_at, task.finished_at, now)}",
        "",
    ]
    if not steps:
        out.append("no steps recorded")
        return "\n".join(out)
    out.append(
        f"{'EPOCH':>5}  {'STEP':>4}  {'KIND':<4}  {'NAME':<20}  {'STATE':<10}  {'TOOK':>6}  "
        f"{'TOKENS':>6}  ERROR"
    )
    last_epoch = steps[-1].epoch
    for step in steps:
        took = "-" if step.state == "intent" else duration(step.duration_ms / 1000)
        state = step.state
        if state == "intent":  # began acting and no outcome was written (yet)
            live = task.status == "running" and step.epoch == last_epoch
            state = "acting" if live else "no outcome"
        line = (
            f"{step.epoch:>5}  {step.index:>4}  {step.kind:<4}  {step.name or '-':<20.20}  "
            f"{state:<10}  {took:>6}  {step.tokens:>6,}  "
        )
        out.append((line + _cut(step.error or "", width - len(line))).rstrip())
    return "\n".join(out).rstrip()
