"""``nightshift memory search|compactions``: the recall index and the record of compactions,
read straight from the database file.

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
from memory.runs import Compaction, compactions_db

__all__ = ["add_parser", "run_compactions", "run_search"]


def add_parser(
    sub: argparse.ArgumentParser,
    located: Callable[[argparse.ArgumentParser], argparse.ArgumentParser],
) -> None:
    """The ``memory`` command's actions (``search``, ``compactions``); ``located`` adds
    --config/--state-dir."""
    actions = sub.add_subparsers(dest="memory_command", metavar="ACTION", required=True)
    search = located(
        actions.add_parser(
            "search", help="search messages, facts, incidents, task outputs and the audit log"
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
    search.add_argument("--limit", type=int, default=10, help="how many results (default 10)")
    compactions = located(
        actions.add_parser(
            "compactions",
            help="what each compaction folded into a conversation's summary (newest first)",
        )
    )
    compactions.add_argument(
        "conversation", nargs="?", type=int, help="only this conversation (its id)"
    )
    compactions.add_argument(
        "--limit", type=int, default=20, help="how many compactions (default 20)"
    )


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
            labels=args.label,
            limit=max(1, args.limit),
            **when,
        )


def render_hit(hit: Hit) -> str:
    """``incident#12  2026-05-01 03:12  host=db-7 …`` then the snippet, indented."""
    when = hit.at.strftime("%Y-%m-%d %H:%M")
    return f"{hit.cite:<16} {when}  {hit.labels}\n    {hit.snippet}"


def run_compactions(path: Path, args: argparse.Namespace) -> int:
    """Print the recorded compactions, newest first; 1 if the database cannot be read."""
    if not path.is_file():
        print(f"nightshift: no database at {path}: has the daemon run yet?", file=sys.stderr)
        return 1
    try:
        found = asyncio.run(_compactions(path, args.conversation, max(1, args.limit)))
    except sqlite3.Error as exc:
        print(f"nightshift: cannot read {path}: {exc}", file=sys.stderr)
        return 1
    for compaction in found:
        print(render_compaction(compaction))
    if not found:
        print("no compactions recorded")
    return 0


async def _compactions(path: Path, conversation: int | None, limit: int) -> list[Compaction]:
    async with aiosqlite.connect(path) as db:
        await db.execute("PRAGMA query_only = ON")
        await db.execute("PRAGMA busy_timeout = 5000")
        return await compactions_db(db, conversation, limit)


def render_compaction(compaction: Compaction) -> str:
    """``conversation#3  2026-05-01 03:12  pass 1: 24 messages #10..#41, ~9000 → ~1200 tokens``
    then the summary, indented."""
    when = compaction.created_at.strftime("%Y-%m-%d %H:%M")
    head = (
        f"conversation#{compaction.conversation_id:<5} {when}  run#{compaction.run_id} "
        f"pass {compaction.pass_number}: {compaction.messages} messages "
        f"#{compaction.first_message_id}..#{compaction.last_message_id}, "
        f"~{compaction.tokens_before} → ~{compaction.tokens_after} tokens"
    )
    summary = "\n    ".join(compaction.summary.splitlines())
    return f"{head}\n    {summary}"
