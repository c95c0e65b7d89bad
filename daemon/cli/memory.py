"""``nightshift memory search``: the recall index, read straight from the database file.

Safe while the daemon runs: the database is in WAL mode, so this reader never blocks the
daemon's writer, and the connection is ``query_only`` (it cannot write, migrate or vacuum).
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiosqlite

from daemon.core.clock import SystemClock
from daemon.core.durations import DurationError, parse_duration
from memory.recall import SOURCES, Hit, search_db

__all__ = ["add_parser", "run_search"]


def add_parser(
    sub: argparse.ArgumentParser,
    located: Callable[[argparse.ArgumentParser], argparse.ArgumentParser],
) -> None:
    """The ``memory`` command's actions (``search``); ``located`` adds --config/--state-dir."""
    actions = sub.add_subparsers(dest="memory_command", metavar="ACTION", required=True)
    search = located(
        actions.add_parser(
            "search",
            help="search messages, facts, incidents, runbooks, task outputs and the audit log",
        )
    )
    search.add_argument("query", nargs="+", help="words, paths or identifiers")
    search.add_argument(
        "--source", action="append", choices=SOURCES, help="only this source (repeatable)"
    )
    search.add_argument("--since", help="only newer than this age, e.g. 7d or 12h")
    search.add_argument(
        "--label", action="append", default=[], help="only with this label, e.g. host=web1"
    )
    search.add_argument("--host", help="only labelled with this host (same as --label host=…)")
    search.add_argument("--service", help="only labelled with this service")
    search.add_argument("--limit", type=int, default=10, help="how many results (default 10)")


def run_search(path: Path, args: argparse.Namespace) -> int:
    """Print the best matches, each with its citation; 1 if the database cannot be searched."""
    now = SystemClock().now()
    try:
        since = now - parse_duration(args.since, "--since") if args.since else None
    except DurationError as exc:
        print(f"nightshift: {exc}", file=sys.stderr)
        return 2
    if not path.is_file():
        print(f"nightshift: no database at {path}: has the daemon run yet?", file=sys.stderr)
        return 1
    try:
        hits = asyncio.run(_search(path, args, now=now, since=since))
    except sqlite3.Error as exc:
        print(f"nightshift: cannot search {path}: {exc}", file=sys.stderr)
        return 1
    if hits is None:
        print(
            f"nightshift: {path} has no recall index yet: start the daemon once to upgrade it",
            file=sys.stderr,
        )
        return 1
    for hit in hits:
        print(render_hit(hit))
    if not hits:
        print("nothing found")
    return 0


async def _search(path: Path, args: argparse.Namespace, **when: Any) -> list[Hit] | None:
    async with aiosqlite.connect(path) as db:
        db.row_factory = aiosqlite.Row
        await db.execute("PRAGMA query_only = ON")
        await db.execute("PRAGMA busy_timeout = 5000")
        found = await db.execute_fetchall(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'recall_docs'"
        )
        if not list(found):
            return None
        return await search_db(
            db,
            " ".join(args.query),
            sources=args.source,
            labels=[
                *args.label,
                *(
                    f"{name}={value}"
                    for name in ("host", "service")
                    if (value := getattr(args, name))
                ),
            ],
            limit=max(1, args.limit),
            **when,
        )


def render_hit(hit: Hit) -> str:
    """``incident#12  2026-05-01 03:12  host=db-7 …`` then the snippet, indented."""
    when = hit.at.strftime("%Y-%m-%d %H:%M")
    return f"{hit.cite:<16} {when}  {hit.labels}\n    {hit.snippet}"
