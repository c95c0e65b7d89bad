"""Long-term facts, recalled by full-text search (FTS5, bm25) with a LIKE fallback."""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import aiosqlite

from daemon.core.clock import Clock
from daemon.core.redact import redact
from memory._codec import from_db_time, to_db_time
from memory.store import SqliteStore

__all__ = ["Fact", "FactRepo", "fts_query"]

log = logging.getLogger(__name__)

_MAX_TERMS = 32
_COLUMNS = "f.id, f.text, f.tags, f.source, f.created_at"


@dataclass(frozen=True, slots=True, kw_only=True)
class Fact:
    """Something the agent was told or learnt and should remember."""

    id: int
    text: str
    tags: str
    source: str
    created_at: datetime


def _fact(row: aiosqlite.Row) -> Fact:
    return Fact(
        id=row["id"],
        text=row["text"],
        tags=row["tags"],
        source=row["source"],
        created_at=from_db_time(row["created_at"]),
    )


def _terms(query: str) -> list[str]:
    return list(dict.fromkeys(re.findall(r"\w+", query.lower())))[:_MAX_TERMS]


def fts_query(query: str) -> str:
    """User text as a safe FTS5 query: each word quoted, any word may match (bm25 ranks)."""
    return " OR ".join(f'"{term}"' for term in _terms(query))


def _like_pattern(term: str) -> str:
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class FactRepo:
    """Remember, recall and forget facts."""

    def __init__(self, store: SqliteStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def remember(self, text: str, *, tags: str = "", source: str = "") -> int:
        """Store a fact (surrounding whitespace stripped); identical text returns the old id."""
        text = redact(text.strip())
        if not text:
            raise ValueError("a fact needs some text")
        async with self._store.write() as db:
            rows = list(
                await db.execute_fetchall(
                    "INSERT INTO facts (text, tags, source, created_at) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (text) DO NOTHING RETURNING id",
                    (text, tags, source, to_db_time(self._clock.now())),
                )
            )
            if not rows:  # already known
                rows = list(
                    await db.execute_fetchall("SELECT id FROM facts WHERE text = ?", (text,))
                )
        fact_id: int = rows[0]["id"]
        return fact_id

    async def recall(self, query: str, limit: int = 5) -> list[Fact]:
        """The facts best matching ``query``; the most recent ones if the query is empty."""
        query = query.strip()
        async with self._store.read() as db:
            if not query:
                rows = await db.execute_fetchall(
                    f"SELECT {_COLUMNS} FROM facts f ORDER BY f.id DESC LIMIT ?", (limit,)
                )
                return [_fact(row) for row in rows]
            match = fts_query(query)
            if match:
                try:
                    rows = await db.execute_fetchall(
                        f"SELECT {_COLUMNS} FROM facts_fts JOIN facts f ON f.id = facts_fts.rowid"
                        " WHERE facts_fts MATCH ?"
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
            f"SELECT {_COLUMNS}, ({hits}) AS hits FROM facts f WHERE hits > 0"
            " ORDER BY hits DESC, f.id DESC LIMIT ?",
            (*params, limit),
        )

    async def forget(self, fact_id: int) -> bool:
        """Delete a fact; False if there was none with this id."""
        cur = await self._store.execute_write("DELETE FROM facts WHERE id = ?", (fact_id,))
        return cur.rowcount > 0

    async def count(self) -> int:
        """How many facts are stored."""
        async with self._store.read() as db:
            rows = list(await db.execute_fetchall("SELECT COUNT(*) FROM facts"))
        return int(rows[0][0])
