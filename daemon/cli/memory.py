"""``nightshift memory search|facts|forget|edit|compactions``: memory, straight from the
database file.

Safe while the daemon runs: the database is in WAL mode, so a reader never blocks the daemon's
writer. ``search`` and ``facts`` use a ``query_only`` connection (it cannot write, migrate or
vacuum); ``forget`` and ``edit`` write one short transaction, waiting their turn behind the
daemon's writer, and never migrate (a database the daemon has not upgraded yet is refused).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import aiosqlite

from daemon.core.clock import SystemClock
from daemon.core.durations import DurationError, parse_duration
from daemon.core.errors import InputError, RecordNotFound
from memory.facts import KINDS, Fact, FactRepo
from memory.recall import SOURCES, Hit, search_db
from memory.runs import Compaction, compactions_db
from memory.store import SqliteStore

__all__ = ["add_parser", "run_compactions", "run_edit", "run_facts", "run_forget", "run_search"]

FACTS_SCHEMA = 10  # the migration that gave facts kinds, provenance and history


def add_parser(
    sub: argparse.ArgumentParser,
    located: Callable[[argparse.ArgumentParser], argparse.ArgumentParser],
) -> None:
    """The ``memory`` command's actions; ``located`` adds --config/--state-dir."""
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
    facts = located(actions.add_parser("facts", help="the curated facts, newest first"))
    facts.add_argument("--kind", choices=KINDS, help="only facts of this kind")
    facts.add_argument(
        "--all", action="store_true", help="superseded and forgotten facts too (history)"
    )
    forget = located(actions.add_parser("forget", help="forget a fact (kept in history)"))
    forget.add_argument("id", type=int, help="the fact's id (see `nightshift memory facts`)")
    edit = located(
        actions.add_parser("edit", help="correct a fact: a new one supersedes it (history kept)")
    )
    edit.add_argument("id", type=int, help="the fact's id (see `nightshift memory facts`)")
    edit.add_argument("text", nargs="+", help="the corrected fact, complete")
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


def run_facts(path: Path, args: argparse.Namespace, caps: Mapping[str, int]) -> int:
    """Print the facts as a table (id, kind, source, trusted, age, text) and the count per
    kind against its cap; 1 if the database cannot be read."""
    repo_args = {"kind": args.kind, "include_all": args.all}
    return _with_facts(path, lambda repo: _print_facts(repo, **repo_args), write=False, caps=caps)


def run_forget(path: Path, args: argparse.Namespace, caps: Mapping[str, int]) -> int:
    """Forget fact ``args.id``: 0, or 1 with the reason (unknown id, already forgotten)."""

    async def forget(repo: FactRepo) -> None:
        fact = await repo.forget(args.id, by=_operator())
        print(f"forgot fact #{fact.id} ({fact.kind}): {_one_line(fact.text, 200)}")

    return _with_facts(path, forget, write=True, caps=caps)


def run_edit(path: Path, args: argparse.Namespace, caps: Mapping[str, int]) -> int:
    """Supersede fact ``args.id`` by the new text (trusted: the operator said it)."""

    async def edit(repo: FactRepo) -> None:
        new_id = await repo.edit(args.id, " ".join(args.text), source=_operator(), trusted=True)
        print(f"fact #{args.id} superseded by #{new_id}")

    return _with_facts(path, edit, write=True, caps=caps)


def _operator() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry (some containers)
        return "cli"


def _with_facts(
    path: Path,
    action: Callable[[FactRepo], Any],
    *,
    write: bool,
    caps: Mapping[str, int] | None = None,
) -> int:
    if not path.is_file():
        print(f"nightshift: no database at {path}: has the daemon run yet?", file=sys.stderr)
        return 1

    async def run() -> None:
        async with _store(path, write=write) as store:
            await action(FactRepo(store, SystemClock(), caps=caps))

    try:
        asyncio.run(run())
    except (InputError, RecordNotFound) as exc:
        print(f"nightshift: {exc}", file=sys.stderr)
        return 1
    except sqlite3.Error as exc:
        print(f"nightshift: cannot read facts from {path}: {exc}", file=sys.stderr)
        return 1
    return 0


@asynccontextmanager
async def _store(path: Path, *, write: bool) -> AsyncIterator[SqliteStore]:
    """A store on the file that never migrates or vacuums (the daemon owns the schema)."""
    conns: list[aiosqlite.Connection] = []
    try:
        for query_only in (False, True):
            conn = await aiosqlite.connect(path, isolation_level=None)
            conns.append(conn)
            conn.row_factory = aiosqlite.Row
            await conn.execute("PRAGMA busy_timeout = 5000")
            await conn.execute("PRAGMA foreign_keys = ON")
            if query_only or not write:
                await conn.execute("PRAGMA query_only = ON")
        try:
            found = list(await conns[1].execute_fetchall("SELECT max(version) FROM schema_version"))
        except sqlite3.OperationalError:  # no such table: not (yet) a nightshift database
            found = []
        version = int(found[0][0] or 0) if found else 0
        if version < FACTS_SCHEMA:
            raise InputError(
                f"{path} is at schema version {version}, before facts had kinds and history: "
                "start the daemon once to upgrade it"
            )
        yield SqliteStore(path, conns[0], conns[1], version)
    finally:
        for conn in conns:
            await conn.close()


async def _print_facts(repo: FactRepo, *, kind: str | None, include_all: bool) -> None:
    facts = await repo.listing(kind=kind, include_all=include_all)
    if not facts:
        print("no facts" + (f" of kind {kind}" if kind else ""))
        return
    now = SystemClock().now()
    print(render_facts(facts, now, history=include_all))
    if not include_all:
        usage = [u for u in await repo.usage() if u.count and (kind is None or u.kind == kind)]
        print("  ".join(f"{u.kind} {u.count}" + (f"/{u.cap}" if u.cap else "") for u in usage))


def render_facts(facts: list[Fact], now: datetime, *, history: bool = False) -> str:
    """The facts table: id, kind, source, trusted, age, (state,) text on one line each."""
    head = f"{'ID':>5}  {'KIND':<10} {'SOURCE':<22} {'TRUSTED':<7} {'AGE':>5}  "
    lines = [head + ("STATE".ljust(20) + "  " if history else "") + "TEXT"]
    for fact in facts:
        row = (
            f"{fact.id:>5}  {fact.kind:<10} {_one_line(fact.source or '-', 22):<22} "
            f"{'yes' if fact.trusted else 'no':<7} {_age(now, fact.created_at):>5}  "
        )
        if history:
            row += f"{_one_line(_state(fact), 20):<20}  "
        lines.append(row + _one_line(fact.text, 100))
    return "\n".join(lines)


def _state(fact: Fact) -> str:
    if fact.forgotten_at is not None:
        return f"forgotten by {fact.forgotten_by or '?'}"
    if fact.superseded_by is not None:
        return f"superseded by #{fact.superseded_by}"
    return "live"


def _one_line(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _age(now: datetime, then: datetime) -> str:
    seconds = max(0, int((now - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
