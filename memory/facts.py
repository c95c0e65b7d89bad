"""Long-term facts, recalled by full-text search (FTS5, bm25) with a LIKE fallback."""

from __future__ import annotations

import json
import logging
import re
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import aiosqlite

from daemon.core.clock import Clock
from daemon.core.errors import InputError, RecordNotFound
from daemon.core.redact import redact
from memory._codec import from_db_time, from_db_time_opt, to_db_time
from memory.store import SqliteStore

__all__ = [
    "DEFAULT_KIND",
    "KINDS",
    "Fact",
    "FactCapReached",
    "FactRepo",
    "FactUsage",
    "fts_query",
]

log = logging.getLogger(__name__)

_MAX_TERMS = 32
_COLUMNS = (
    "f.id, f.text, f.tags, f.source, f.created_at, f.kind, f.trusted, f.superseded_by,"
    " f.superseded_at, f.forgotten_at, f.forgotten_by"
)
_LIVE = "f.superseded_by IS NULL AND f.forgotten_at IS NULL"

KINDS = ("host", "preference", "procedure", "contact", "note", "postmortem")
DEFAULT_KIND = "note"  # facts stored before kinds existed, and facts of no particular kind
WARN_FRACTION = 0.8  # of a kind's cap: warn (once) from here on


class FactCapReached(InputError):
    """A kind of fact is at its cap: the new fact was refused (nothing was dropped)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Fact:
    """Something the agent was told or learnt and should remember, with where it came from."""

    id: int
    text: str
    tags: str
    source: str  # provenance: chat:slack:U123, cli, agent:incident #4, incident:4 …
    created_at: datetime
    kind: str = DEFAULT_KIND
    trusted: bool = False  # said by a known person (allow-listed chat user, the CLI operator)
    superseded_by: int | None = None
    superseded_at: datetime | None = None
    forgotten_at: datetime | None = None
    forgotten_by: str | None = None

    @property
    def live(self) -> bool:
        """Neither superseded nor forgotten: recalled, snapshotted and counted."""
        return self.superseded_by is None and self.forgotten_at is None


@dataclass(frozen=True, slots=True, kw_only=True)
class FactUsage:
    """How many live facts of one kind there are against its cap (0: no cap)."""

    kind: str
    count: int
    cap: int

    @property
    def near(self) -> bool:
        """At or past 80 % of the cap."""
        return self.cap > 0 and self.count >= WARN_FRACTION * self.cap


def _fact(row: aiosqlite.Row) -> Fact:
    return Fact(
        id=row["id"],
        text=row["text"],
        tags=row["tags"],
        source=row["source"],
        created_at=from_db_time(row["created_at"]),
        kind=row["kind"],
        trusted=bool(row["trusted"]),
        superseded_by=row["superseded_by"],
        superseded_at=from_db_time_opt(row["superseded_at"]),
        forgotten_at=from_db_time_opt(row["forgotten_at"]),
        forgotten_by=row["forgotten_by"],
    )


def check_kind(kind: str) -> str:
    """``kind`` if it is one of KINDS; else InputError naming the choices."""
    if kind not in KINDS:
        raise InputError(f"unknown kind of fact {kind!r}; choose from: {', '.join(KINDS)}")
    return kind


def _terms(query: str) -> list[str]:
    return list(dict.fromkeys(re.findall(r"\w+", query.lower())))[:_MAX_TERMS]


def fts_query(query: str) -> str:
    """User text as a safe FTS5 query: each word quoted, any word may match (bm25 ranks)."""
    return " OR ".join(f'"{term}"' for term in _terms(query))


def _like_pattern(term: str) -> str:
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class FactRepo:
    """Remember, recall, supersede and forget facts; caps per kind refuse, never evict."""

    def __init__(
        self,
        store: SqliteStore,
        clock: Clock,
        caps: Mapping[str, int] | Callable[[], Mapping[str, int]] | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._caps = caps or {}  # a callable is read on each use (a config reload applies)
        self._warned: set[str] = set()  # kinds past 80 % of their cap, warned about once

    def cap(self, kind: str) -> int:
        """The cap on live facts of ``kind`` (0: none)."""
        caps = self._caps() if callable(self._caps) else self._caps
        return caps.get(kind, 0)

    async def remember(
        self,
        text: str,
        *,
        tags: str = "",
        source: str = "",
        kind: str = DEFAULT_KIND,
        trusted: bool = False,
        supersedes: int | None = None,
    ) -> int:
        """Store a fact (surrounding whitespace stripped); identical live text returns its id.

        With ``supersedes`` the new fact replaces that live one (kept, marked, out of recall).
        A kind at its cap refuses a new fact with FactCapReached; replacing a fact of the same
        kind is always allowed (the count does not grow).
        """
        text = redact(text.strip())
        if not text:
            raise InputError("a fact needs some text")
        check_kind(kind)
        now = to_db_time(self._clock.now())
        async with self._store.write() as db:
            old = await self._live(db, supersedes) if supersedes is not None else None
            known = list(
                await db.execute_fetchall(
                    f"SELECT f.id FROM facts f WHERE f.text = ? AND {_LIVE}", (text,)
                )
            )
            if known:
                fact_id: int = known[0]["id"]
            else:
                count = await self._count(db, kind)
                cap = self.cap(kind)
                grows = old is None or old.kind != kind
                if cap and grows and count >= cap:
                    raise FactCapReached(
                        f"cannot remember this {kind} fact: {count} of {cap} {kind} facts are "
                        f"stored, the cap ([memory] facts_max_{kind}). Nothing was dropped. "
                        f"Edit or forget an old one (`nightshift memory facts --kind {kind}`, "
                        "`nightshift memory forget ID`) or raise the cap."
                    )
                rows = list(
                    await db.execute_fetchall(
                        "INSERT INTO facts (text, tags, source, created_at, kind, trusted)"
                        " VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                        (text, tags, source, now, kind, int(trusted)),
                    )
                )
                fact_id = rows[0]["id"]
            if old is not None and old.id != fact_id:
                await db.execute(
                    "UPDATE facts SET superseded_by = ?, superseded_at = ? WHERE id = ?",
                    (fact_id, now, old.id),
                )
                await self._drop_snapshots(db, old.id)
            count = await self._count(db, kind)
        self._warn_near_cap(kind, count)
        return fact_id

    async def edit(self, fact_id: int, text: str, *, source: str, trusted: bool) -> int:
        """Supersede live fact ``fact_id`` by ``text`` (same kind and tags); the new id."""
        async with self._store.read() as db:
            old = await self._live(db, fact_id)
        return await self.remember(
            text, tags=old.tags, source=source, kind=old.kind, trusted=trusted, supersedes=old.id
        )

    async def forget(self, fact_id: int, *, by: str = "") -> Fact:
        """Soft-delete a fact (kept in history with who and when); RecordNotFound if unknown,
        InputError if already forgotten. Returns the fact as it was."""
        async with self._store.write() as db:
            fact = await self._get(db, fact_id)
            if fact is None:
                raise RecordNotFound("fact", fact_id)
            if fact.forgotten_at is not None:
                raise InputError(
                    f"fact #{fact_id} was already forgotten at "
                    f"{fact.forgotten_at:%Y-%m-%d %H:%M} by {fact.forgotten_by or 'someone'}"
                )
            await db.execute(
                "UPDATE facts SET forgotten_at = ?, forgotten_by = ? WHERE id = ?",
                (to_db_time(self._clock.now()), by, fact_id),
            )
            await self._drop_snapshots(db, fact_id)
            count = await self._count(db, fact.kind)
        self._warn_near_cap(fact.kind, count)
        return fact

    async def get(self, fact_id: int) -> Fact:
        """One fact, live or not; RecordNotFound if there is none with this id."""
        async with self._store.read() as db:
            fact = await self._get(db, fact_id)
        if fact is None:
            raise RecordNotFound("fact", fact_id)
        return fact

    async def listing(
        self, *, kind: str | None = None, include_all: bool = False, limit: int = 1000
    ) -> list[Fact]:
        """Facts newest first: live ones, or with ``include_all`` superseded and forgotten too."""
        where, params = [] if include_all else [_LIVE], []
        if kind is not None:
            where.append("f.kind = ?")
            params.append(check_kind(kind))
        sql = f"SELECT {_COLUMNS} FROM facts f"
        if where:
            sql += " WHERE " + " AND ".join(where)
        async with self._store.read() as db:
            rows = await db.execute_fetchall(sql + " ORDER BY f.id DESC LIMIT ?", (*params, limit))
        return [_fact(row) for row in rows]

    async def recall(self, query: str, limit: int = 5) -> list[Fact]:
        """The live facts best matching ``query``; the most recent ones if the query is empty."""
        query = query.strip()
        async with self._store.read() as db:
            if not query:
                rows = await db.execute_fetchall(
                    f"SELECT {_COLUMNS} FROM facts f WHERE {_LIVE} ORDER BY f.id DESC LIMIT ?",
                    (limit,),
                )
                return [_fact(row) for row in rows]
            match = fts_query(query)
            if match:
                try:
                    rows = await db.execute_fetchall(
                        f"SELECT {_COLUMNS} FROM facts_fts JOIN facts f ON f.id = facts_fts.rowid"
                        f" WHERE facts_fts MATCH ? AND {_LIVE}"
                        " ORDER BY bm25(facts_fts, 1.0, 0.5), f.id DESC LIMIT ?",
                        (match, limit),
                    )
                    return [_fact(row) for row in rows]
                except sqlite3.OperationalError as exc:
                    log.warning("full-text recall failed (%s); falling back to LIKE", exc)
            rows = await self._like(db, _terms(query) or [query], limit)
        return [_fact(row) for row in rows]

    @staticmethod
    async def _like(
        db: aiosqlite.Connection, terms: list[str], limit: int
    ) -> Iterable[aiosqlite.Row]:
        """Substring search on text and tags: facts matching more terms come first."""
        hits = " + ".join(
            "((f.text LIKE ? ESCAPE '\\') OR (f.tags LIKE ? ESCAPE '\\'))" for _ in terms
        )
        params: list[object] = []
        for term in terms:
            params += [_like_pattern(term)] * 2
        return await db.execute_fetchall(
            f"SELECT {_COLUMNS}, ({hits}) AS hits FROM facts f WHERE hits > 0 AND {_LIVE}"
            " ORDER BY hits DESC, f.id DESC LIMIT ?",
            (*params, limit),
        )

    async def count(self, kind: str | None = None) -> int:
        """How many live facts are stored (of ``kind``, if given)."""
        async with self._store.read() as db:
            return await self._count(db, kind)

    async def usage(self) -> list[FactUsage]:
        """Live facts per kind against the caps, every kind listed."""
        async with self._store.read() as db:
            rows = await db.execute_fetchall(
                f"SELECT f.kind, COUNT(*) AS n FROM facts f WHERE {_LIVE} GROUP BY f.kind"
            )
        counts = {row["kind"]: int(row["n"]) for row in rows}
        return [FactUsage(kind=k, count=counts.get(k, 0), cap=self.cap(k)) for k in KINDS]

    async def snapshot(
        self,
        conversation_id: int,
        render: Callable[[list[Fact]], str],
        *,
        limit: int,
        exclude_kinds: Sequence[str] = ("postmortem",),
        refresh: bool = False,
    ) -> str:
        """The facts text a conversation's prompts carry, byte-stable turn after turn: which
        facts is decided once and stored (their ids; a fact's text never changes, an edit is a
        new fact), and retaken with ``refresh`` or once a fact in it was superseded or
        forgotten (that drops the stored choice)."""
        if not refresh:
            async with self._store.read() as db:
                rows = list(
                    await db.execute_fetchall(
                        "SELECT fact_ids FROM fact_snapshots WHERE conversation_id = ?",
                        (conversation_id,),
                    )
                )
                if rows:
                    ids = [int(i) for i in json.loads(rows[0]["fact_ids"])]
                    found = await db.execute_fetchall(
                        f"SELECT {_COLUMNS} FROM facts f WHERE {_LIVE} AND f.id IN"
                        " (SELECT value FROM json_each(?)) ORDER BY f.id",
                        (json.dumps(ids),),
                    )
                    facts = [_fact(row) for row in found]
                    if [f.id for f in facts] == sorted(ids):  # else one was deleted: retake
                        return render(facts) if facts else ""
        async with self._store.write() as db:
            marks = ", ".join("?" * len(exclude_kinds)) or "''"
            rows = list(
                await db.execute_fetchall(
                    f"SELECT {_COLUMNS} FROM facts f WHERE {_LIVE}"  # noqa: S608
                    f" AND f.kind NOT IN ({marks}) ORDER BY f.id DESC LIMIT ?",
                    (*exclude_kinds, limit),
                )
            )
            facts = [_fact(row) for row in reversed(rows)]
            await db.execute(
                "INSERT INTO fact_snapshots (conversation_id, taken_at, fact_ids)"
                " VALUES (?, ?, ?) ON CONFLICT (conversation_id) DO UPDATE"
                " SET taken_at = excluded.taken_at, fact_ids = excluded.fact_ids",
                (conversation_id, to_db_time(self._clock.now()), json.dumps([f.id for f in facts])),
            )
        return render(facts) if facts else ""

    async def check_caps(self) -> list[FactUsage]:
        """Warn (once) about every kind at 80 % of its cap or more, e.g. at start; the usage."""
        usage = await self.usage()
        for use in usage:
            self._warn_near_cap(use.kind, use.count)
        return usage

    def _warn_near_cap(self, kind: str, count: int) -> None:
        """Log once when a kind reaches 80 % of its cap (again only after it fell below)."""
        usage = FactUsage(kind=kind, count=count, cap=self.cap(kind))
        if not usage.near:
            self._warned.discard(kind)
        elif kind not in self._warned:
            self._warned.add(kind)
            log.warning(
                "%s facts: %d of %d stored (%d%% of the cap, [memory] facts_max_%s); at the cap "
                "new ones are refused: forget or edit old ones, or raise the cap",
                kind,
                count,
                usage.cap,
                100 * count // usage.cap,
                kind,
            )

    @staticmethod
    async def _count(db: aiosqlite.Connection, kind: str | None) -> int:
        sql, params = f"SELECT COUNT(*) FROM facts f WHERE {_LIVE}", tuple[str, ...]()
        if kind is not None:
            sql, params = sql + " AND f.kind = ?", (kind,)
        rows = list(await db.execute_fetchall(sql, params))
        return int(rows[0][0])

    @staticmethod
    async def _get(db: aiosqlite.Connection, fact_id: int) -> Fact | None:
        rows = list(
            await db.execute_fetchall(f"SELECT {_COLUMNS} FROM facts f WHERE f.id = ?", (fact_id,))
        )
        return _fact(rows[0]) if rows else None

    async def _live(self, db: aiosqlite.Connection, fact_id: int) -> Fact:
        """Fact ``fact_id`` if it is live; else RecordNotFound or an InputError saying why."""
        fact = await self._get(db, fact_id)
        if fact is None:
            raise RecordNotFound("fact", fact_id)
        if fact.forgotten_at is not None:
            raise InputError(f"fact #{fact_id} was forgotten; remember a new one instead")
        if fact.superseded_by is not None:
            raise InputError(
                f"fact #{fact_id} was superseded by #{fact.superseded_by}; edit that one instead"
            )
        return fact

    @staticmethod
    async def _drop_snapshots(db: aiosqlite.Connection, fact_id: int) -> None:
        """Forget the prompt snapshots showing this fact: the next turn takes a fresh one."""
        await db.execute(
            "DELETE FROM fact_snapshots WHERE EXISTS"
            " (SELECT 1 FROM json_each(fact_snapshots.fact_ids) WHERE value = ?)",
            (fact_id,),
        )
