"""One recall over everything: messages, facts, incidents, timelines, task runs, audit entries.

The index (migration 0009) is kept in step by triggers: ``recall_docs`` holds one document per
source row (source, ref, at, labels, text); ``recall_words`` indexes its words (FTS5, porter +
unicode61) and ``recall_grams`` its trigrams, for substrings of paths, identifiers and CJK text.

Why not ``ORDER BY bm25()``: FTS5's bm25 counts every row that holds a query term to weigh it,
so one common word makes a query read the whole index (p95 ~680 ms at 1M rows). Here each term
is looked up on its own, newest first, and at most :data:`CANDIDATES` rows are read per term. A
term that fills its quota is common: its document frequency is estimated from how far back its
newest rows reach, and it weighs little (bm25's idf). A document's relevance is the sum of the
idf of the terms it holds; the best are then weighed by source and recency. Rare terms are read
in full, so an old incident holding them is found however busy the newer history is.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import aiosqlite

from daemon.core.clock import Clock
from memory._codec import from_db_time, to_db_time
from memory.store import SqliteStore

__all__ = ["CANDIDATES", "SOURCES", "Hit", "RecallRepo", "RunbookFile", "search_db"]

SOURCES = ("message", "fact", "incident", "record", "timeline", "task_run", "audit", "runbook")
CANDIDATES = 500  # rows read per word term, newest first
SUBSTRING_CANDIDATES = 100  # rows read per substring (each is checked against its text)
_RERANK = 100  # best-by-relevance documents weighed by source and recency
_MAX_TERMS = 12
_SNIPPET = 90  # characters either side of the first match
_HALF_LIFE_DAYS = 30.0
_WEIGHTS: Mapping[str, float] = {
    "incident": 1.5,
    "record": 1.5,
    "runbook": 1.4,
    "fact": 1.3,
    "timeline": 1.1,
    "task_run": 1.0,
    "message": 1.0,
    "audit": 0.8,
}
_SUBSTRING = re.compile(r"[/\\.:_\-@]")
_SQUASHED = str.maketrans("", "", "=-._:/@")  # as migration 0010 squashes labels


@dataclass(frozen=True, slots=True, kw_only=True)
class Hit:
    """One search result, citing where it came from: ``source`` row ``ref`` at ``at``."""

    source: str
    ref: int
    at: datetime
    labels: str
    snippet: str
    score: float

    @property
    def cite(self) -> str:
        """A short citation such as ``incident#12``."""
        return f"{self.source}#{self.ref}"


@dataclass(frozen=True, slots=True)
class RunbookFile:
    """A runbook file as the recall index keeps it: ``digest`` changes when the file does."""

    name: str
    digest: str
    text: str


@dataclass(slots=True)
class _Term:
    """One query term: its newest matching rows, and whether they are all of them."""

    text: str
    substring: bool
    ids: list[int]
    complete: bool
    idf: float = 0.0


def _is_cjk(char: str) -> bool:
    return unicodedata.east_asian_width(char) in ("W", "F") and char.isalpha()


def parse_query(query: str) -> tuple[list[str], list[str]]:
    """Split a query into word terms and substring pieces (paths, identifiers, CJK text)."""
    words: list[str] = []
    pieces: list[str] = []
    for raw in query.split():
        piece = raw.strip("\"'()[]{},;!?")
        if not piece:
            continue
        if _SUBSTRING.search(piece.strip(".:")) or any(_is_cjk(c) for c in piece):
            if len(piece) >= 3:
                pieces.append(piece.lower())
            else:  # too short for trigrams: fall back to its words
                words += re.findall(r"\w+", piece.lower())
        else:
            words += re.findall(r"\w+", piece.lower())
    words = list(dict.fromkeys(words))
    pieces = list(dict.fromkeys(pieces))
    return words[:_MAX_TERMS], pieces[: max(0, _MAX_TERMS - len(words[:_MAX_TERMS]))]


def _phrase(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _filters_fts(sources: Sequence[str] | None, labels: Sequence[str]) -> str:
    parts = []
    if sources:
        parts.append("source : (" + " OR ".join(_phrase(s) for s in sources) + ")")
    parts += [f"labels : {_phrase(label.translate(_SQUASHED))}" for label in labels]
    return "".join(f" AND {part}" for part in parts)


def _label_list(labels: Mapping[str, str] | Sequence[str] | None) -> list[str]:
    if labels is None:
        return []
    if isinstance(labels, Mapping):
        return [f"{k}={v}" for k, v in labels.items()]
    return [str(label) for label in labels]


async def _bounds(
    db: aiosqlite.Connection, since: datetime | None, until: datetime | None
) -> tuple[int, int] | None:
    """Rowid bounds for a time window (documents are stored in time order); None if empty."""
    low, high = 0, 2**62
    if since is not None:
        rows = list(
            await db.execute_fetchall(
                "SELECT id FROM recall_docs WHERE at >= ? ORDER BY at LIMIT 1",
                (to_db_time(since),),
            )
        )
        if not rows:
            return None
        low = int(rows[0][0])
    if until is not None:
        rows = list(
            await db.execute_fetchall(
                "SELECT id FROM recall_docs WHERE at <= ? ORDER BY at DESC LIMIT 1",
                (to_db_time(until),),
            )
        )
        if not rows:
            return None
        high = int(rows[0][0])
    return low, high


async def _word_ids(
    db: aiosqlite.Connection, term: str, where: str, bounds: tuple[int, int]
) -> list[int]:
    match = "{text labels} : " + _phrase(term) + where
    return await _ids(
        db,
        "SELECT rowid FROM recall_words WHERE recall_words MATCH ? AND rowid BETWEEN ? AND ?"
        " ORDER BY rowid DESC LIMIT ?",
        (match, *bounds, CANDIDATES),
    )


async def _ids(db: aiosqlite.Connection, sql: str, params: Sequence[object]) -> list[int]:
    """The ids a query returns, newest first, fetched as one row (no per-row objects)."""
    rows = list(await db.execute_fetchall(f"SELECT group_concat(rowid) FROM ({sql})", params))
    text = rows[0][0] if rows else None
    return [int(i) for i in text.split(",")] if text else []


def _trigram_cover(piece: str) -> str:
    """An FTS5 query for trigrams covering ``piece`` without overlap (every third one, and the
    last): single terms need no positions, so misses stay cheap where the full phrase of
    overlapping trigrams would walk every position list."""
    grams = [piece[i : i + 3] for i in range(0, len(piece) - 2, 3)]
    if len(piece) % 3:
        grams.append(piece[-3:])
    return " AND ".join(_phrase(gram) for gram in dict.fromkeys(grams))


async def _substring_ids(
    db: aiosqlite.Connection,
    piece: str,
    sources: Sequence[str] | None,
    labels: Sequence[str],
    bounds: tuple[int, int],
) -> list[int]:
    """The newest documents holding ``piece``: the trigram index picks candidates, each is
    checked against its text, and the scan stops at :data:`SUBSTRING_CANDIDATES` found."""
    sql = (
        "SELECT g.rowid AS rowid FROM recall_grams g CROSS JOIN recall_docs d ON d.id = g.rowid"
        " WHERE recall_grams MATCH ? AND g.rowid BETWEEN ? AND ? AND instr(lower(d.text), ?)"
    )
    params: list[object] = [_trigram_cover(piece), *bounds, piece]
    if sources:
        sql += f" AND d.source IN ({', '.join('?' for _ in sources)})"
        params += list(sources)
    for label in labels:
        sql += " AND (' ' || d.labels || ' ') LIKE ? ESCAPE '\\'"
        params.append("% " + _like(label)[1:-1] + " %")
    sql += " ORDER BY g.rowid DESC LIMIT ?"
    return await _ids(db, sql, (*params, SUBSTRING_CANDIDATES))


def _idf(term: _Term, total: int, newest: int) -> float:
    """bm25's idf; a term that filled its quota has its frequency estimated from its span."""
    found = len(term.ids)
    if term.complete or not found:
        frequency = float(found)
    else:
        span = max(1, newest - term.ids[-1] + 1)
        frequency = min(float(total), found * total / span)
    return math.log(1.0 + (total - frequency + 0.5) / (frequency + 0.5))


def snippet(text: str, needles: Iterable[str]) -> str:
    """The text around the first needle found (case-insensitive), whitespace collapsed."""
    lowered = text.lower()
    first = -1
    for needle in needles:
        for probe in (needle, needle[: max(3, len(needle) - 2)]):
            at = lowered.find(probe)
            if at >= 0 and (first < 0 or at < first):
                first = at
                break
    start = max(0, first - _SNIPPET) if first >= 0 else 0
    end = min(len(text), (first if first >= 0 else 0) + _SNIPPET * 2)
    body = " ".join(text[start:end].split())
    return ("…" if start > 0 else "") + body + ("…" if end < len(text) else "")


async def search_db(
    db: aiosqlite.Connection,
    query: str,
    *,
    now: datetime,
    sources: Sequence[str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    labels: Mapping[str, str] | Sequence[str] | None = None,
    limit: int = 10,
) -> list[Hit]:
    """Search the recall index through an open connection (see :meth:`RecallRepo.search`)."""
    if sources is not None:
        unknown = sorted(set(sources) - set(SOURCES))
        if unknown:
            raise ValueError(f"unknown recall source(s) {unknown}; known: {', '.join(SOURCES)}")
    limit = max(1, limit)
    label_list = _label_list(labels)
    bounds = await _bounds(db, since, until)
    if bounds is None:
        return []
    words, pieces = parse_query(query)
    if not words and not pieces:
        return await _latest(db, sources, label_list, bounds, since, until, now, limit)
    where = _filters_fts(sources, label_list)
    terms: list[_Term] = []
    for word in words:
        ids = await _word_ids(db, word, where, bounds)
        if not ids and len(word) >= 4:  # maybe part of a longer identifier
            ids = await _substring_ids(db, word, sources, label_list, bounds)
            terms.append(_Term(word, True, ids, len(ids) < SUBSTRING_CANDIDATES))
        else:
            terms.append(_Term(word, False, ids, len(ids) < CANDIDATES))
    for piece in pieces:
        ids = await _substring_ids(db, piece, sources, label_list, bounds)
        terms.append(_Term(piece, True, ids, len(ids) < SUBSTRING_CANDIDATES))
    if not any(term.ids for term in terms):
        return []
    stats = list(await db.execute_fetchall("SELECT max(id) FROM recall_docs"))
    newest = int(stats[0][0] or 0)
    total = max(1, newest)  # ids are dense enough: deletions only make common terms rarer
    relevance: dict[int, float] = {}
    for term in terms:
        term.idf = _idf(term, total, newest)
    for term in terms:
        for doc_id in term.ids:  # ids are unique per term
            relevance[doc_id] = relevance.get(doc_id, 0.0) + term.idf
    best = sorted(relevance, key=lambda d: (relevance[d], d), reverse=True)[:_RERANK]
    docs = await _docs(db, best, columns="id, source, ref, at, labels")
    needles = [term.text for term in terms if term.ids]
    ranked = []
    for doc_id in best:
        row = docs.get(doc_id)
        if row is None:
            continue
        at = from_db_time(row["at"])
        if (since is not None and at < since) or (until is not None and at > until):
            continue
        if label_list and not _has_labels(row["labels"], label_list):
            continue  # a squashed label token matched another label ("web-3" vs "web3")
        score = relevance[doc_id] * _WEIGHTS.get(row["source"], 1.0) * _recency(now, at)
        ranked.append((score, at, row))
    ranked.sort(key=lambda r: (r[0], r[1]), reverse=True)
    top = ranked[:limit]
    texts = await _docs(db, [int(row["id"]) for _, _, row in top], columns="id, text")
    return [_hit(row, at, score, needles, texts[row["id"]]["text"]) for score, at, row in top]


def _has_labels(labels: str, wanted: Sequence[str]) -> bool:
    held = set(labels.split())
    return all(label in held for label in wanted)


def _recency(now: datetime, at: datetime) -> float:
    """1 for now, halving towards 0.5 every half-life: old but relevant still ranks."""
    age_days = max(0.0, (now - at).total_seconds() / 86400.0)
    return 0.5 + 0.5 * math.pow(0.5, age_days / _HALF_LIFE_DAYS)


def _hit(row: aiosqlite.Row, at: datetime, score: float, needles: Sequence[str], text: str) -> Hit:
    return Hit(
        source=row["source"],
        ref=int(row["ref"]),
        at=at,
        labels=row["labels"],
        snippet=snippet(text, needles),
        score=round(score, 4),
    )


async def _docs(
    db: aiosqlite.Connection, ids: Sequence[int], *, columns: str
) -> dict[int, aiosqlite.Row]:
    if not ids:
        return {}
    rows = await db.execute_fetchall(
        f"SELECT {columns} FROM recall_docs WHERE id IN ({', '.join('?' for _ in ids)})",
        tuple(ids),
    )
    return {int(row["id"]): row for row in rows}


async def _latest(
    db: aiosqlite.Connection,
    sources: Sequence[str] | None,
    labels: Sequence[str],
    bounds: tuple[int, int],
    since: datetime | None,
    until: datetime | None,
    now: datetime,
    limit: int,
) -> list[Hit]:
    """No terms: the newest documents passing the filters."""
    sql = "SELECT id, source, ref, at, labels, text FROM recall_docs WHERE id BETWEEN ? AND ?"
    params: list[object] = [*bounds]
    if sources:
        sql += f" AND source IN ({', '.join('?' for _ in sources)})"
        params += list(sources)
    for label in labels:
        sql += " AND (' ' || labels || ' ') LIKE ? ESCAPE '\\'"
        params.append("% " + _like(label)[1:-1] + " %")
    if since is not None:
        sql += " AND at >= ?"
        params.append(to_db_time(since))
    if until is not None:
        sql += " AND at <= ?"
        params.append(to_db_time(until))
    rows = await db.execute_fetchall(sql + " ORDER BY id DESC LIMIT ?", (*params, limit))
    return [
        _hit(row, at, _recency(now, at), [], row["text"])
        for row in rows
        for at in (from_db_time(row["at"]),)
    ]


class RecallRepo:
    """Search everything nightshift remembers."""

    def __init__(self, store: SqliteStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def search(
        self,
        query: str,
        *,
        sources: Sequence[str] | None = None,
        since: datetime | timedelta | None = None,
        until: datetime | None = None,
        labels: Mapping[str, str] | Sequence[str] | None = None,
        limit: int = 10,
    ) -> list[Hit]:
        """The documents best matching ``query``, best first; the newest if it is empty.

        Words match by stem; paths, identifiers (``a/b``, ``x.y``, ``db-7``) and CJK text match
        as substrings (3 characters or more). ``sources`` limits to some of :data:`SOURCES`,
        ``since`` (a time, or an age) and ``until`` to a time window, ``labels`` to documents
        carrying every ``name=value`` given (e.g. ``{"host": "web1"}``).
        """
        now = self._clock.now()
        if isinstance(since, timedelta):
            since = now - since
        async with self._store.read() as db:
            return await search_db(
                db,
                query,
                now=now,
                sources=sources,
                since=since,
                until=until,
                labels=labels,
                limit=limit,
            )

    async def count(self) -> int:
        """How many documents the index holds."""
        async with self._store.read() as db:
            rows = list(await db.execute_fetchall("SELECT count(*) FROM recall_docs"))
        return int(rows[0][0])

    async def runbook_digests(self) -> dict[str, str]:
        """The runbooks indexed, by name: their digests (to re-read only changed files)."""
        async with self._store.read() as db:
            rows = await db.execute_fetchall("SELECT name, digest FROM recall_runbooks")
        return {str(row[0]): str(row[1]) for row in rows}

    async def sync_runbooks(self, changed: Sequence[RunbookFile], present: Iterable[str]) -> int:
        """Index the ``changed`` runbooks and forget those whose names are not ``present``.

        Returns how many documents were added, replaced or removed.
        """
        now = to_db_time(self._clock.now())
        keep = set(present) | {runbook.name for runbook in changed}
        touched = 0
        async with self._store.write() as db:
            for runbook in changed:
                cur = await db.execute(
                    "INSERT INTO recall_runbooks (name, digest, updated_at, text)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET"
                    " digest = excluded.digest, updated_at = excluded.updated_at,"
                    " text = excluded.text WHERE text <> excluded.text"
                    " OR digest <> excluded.digest",
                    (runbook.name, runbook.digest, now, runbook.text),
                )
                touched += cur.rowcount
            rows = await db.execute_fetchall("SELECT id, name FROM recall_runbooks")
            gone = [int(row[0]) for row in rows if row[1] not in keep]
            for runbook_id in gone:
                await db.execute("DELETE FROM recall_runbooks WHERE id = ?", (runbook_id,))
        return touched + len(gone)
