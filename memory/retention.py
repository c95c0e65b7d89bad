"""Bounded growth: prune each kind of record past its retention window, give the freed pages
back to the file system, and sample the database size for its growth rate.

Deletes run in small batches, each its own short write (one statement, or one transaction for
an incident's rows), so the writer is never held for long: other writes queue between batches.
What is still needed is never deleted: open incidents and their timelines, pending outbox
messages (and any referenced by a task run), unhandled alert events, alert state, unfinished
agent runs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from daemon.core.clock import Clock
from memory._codec import from_db_time, to_db_time
from memory._migrate import scalar
from memory.store import SqliteStore

__all__ = ["DbSize", "RetentionRepo", "disk_usage"]

log = logging.getLogger(__name__)

VACUUM_STEP_PAGES = 2048  # pages given back per write (8 MB at 4 KiB pages)
SIZE_SAMPLES_KEPT = timedelta(days=30)

# One statement per kind: deletes at most ``?`` (the batch) rows older than ``?`` (the cutoff).
_SINGLE: dict[str, str] = {
    # INDEXED BY: else the planner picks (handled, id) and sorts every handled event per batch
    "alert_events": "DELETE FROM alert_events WHERE id IN (SELECT id FROM alert_events"
    " INDEXED BY alert_events_age WHERE at < ?1 AND handled = 1 ORDER BY at LIMIT ?2)",
    "outbox": "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE created_at < ?1"
    " AND status != 'pending' AND NOT EXISTS (SELECT 1 FROM task_runs r"
    " WHERE r.outbox_id = outbox.id) ORDER BY created_at LIMIT ?2)",
    "audit": "DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log"
    " WHERE created_at < ?1 ORDER BY created_at LIMIT ?2)",
    "usage": "DELETE FROM llm_usage WHERE id IN (SELECT id FROM llm_usage"
    " WHERE created_at < ?1 ORDER BY created_at LIMIT ?2)",
    "component_events": "DELETE FROM component_events WHERE id IN (SELECT id FROM"
    " component_events WHERE created_at < ?1 ORDER BY created_at LIMIT ?2)",
    "inbound": "DELETE FROM inbound_seen WHERE (channel, room, message_id) IN (SELECT channel,"
    " room, message_id FROM inbound_seen WHERE seen_at < ?1 ORDER BY seen_at LIMIT ?2)",
}
# Kinds whose rows own many child rows: the children go first, in batches of their own.
_RUN_STEPS = (
    "DELETE FROM run_steps WHERE id IN (SELECT s.id FROM agent_runs r JOIN run_steps s"
    " ON s.run_id = r.id WHERE r.started_at < ?1 AND r.status != 'running' LIMIT ?2)"
)
_RUNS = (
    "DELETE FROM agent_runs WHERE id IN (SELECT id FROM agent_runs WHERE started_at < ?1"
    " AND status != 'running' ORDER BY started_at LIMIT ?2)"
)
_MESSAGES = (
    "DELETE FROM messages WHERE id IN (SELECT m.id FROM conversations c JOIN messages m"
    " ON m.conversation_id = c.id WHERE c.updated_at < ?1 LIMIT ?2)"
)
_CONVERSATIONS = (
    "DELETE FROM conversations WHERE id IN (SELECT id FROM conversations WHERE updated_at < ?1"
    " ORDER BY updated_at LIMIT ?2)"
)
_EXPIRED_INCIDENTS = (
    "SELECT id FROM incidents INDEXED BY incidents_resolved"
    " WHERE state = 'resolved' AND resolved_at < ?1"
    " ORDER BY resolved_at LIMIT ?2"
)
_INCIDENT_EVENTS = (
    "DELETE FROM incident_events WHERE id IN (SELECT e.id FROM incidents i INDEXED BY"
    " incidents_resolved JOIN incident_events e ON e.incident_id = i.id"
    " WHERE i.state = 'resolved' AND i.resolved_at < ?1 LIMIT ?2)"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class DbSize:
    """The database's size now and how fast its data grew."""

    file_bytes: int  # the main file
    free_bytes: int  # free pages inside it (reused before the file grows)
    wal_bytes: int
    growth_bytes_per_day: float | None  # of the data (file less free), over the last day(s)
    growth_window_days: float  # what the rate was measured over (0: not enough history yet)
    auto_vacuum: str  # none, full or incremental

    @property
    def data_bytes(self) -> int:
        return self.file_bytes - self.free_bytes


_AUTO_VACUUM = {0: "none", 1: "full", 2: "incremental"}


class RetentionRepo:
    """Deletes what has outlived its window; measures the database."""

    def __init__(self, store: SqliteStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def prune(self, windows: dict[str, float], *, batch: int = 500) -> dict[str, int]:
        """Delete, per kind in ``windows`` (kind → days), what is older than its window.
        Returns the rows deleted per kind (children such as run steps not counted)."""
        now = self._clock.now()
        removed: dict[str, int] = {}
        for kind, days in windows.items():
            if days <= 0:
                continue
            cutoff = (to_db_time(now - timedelta(days=days)),)
            if kind in _SINGLE:
                removed[kind] = await self._batches(_SINGLE[kind], cutoff, batch)
            elif kind == "agent_runs":
                await self._batches(_RUN_STEPS, cutoff, batch)
                removed[kind] = await self._batches(_RUNS, cutoff, batch)
            elif kind == "conversations":
                await self._batches(_MESSAGES, cutoff, batch)
                removed[kind] = await self._batches(_CONVERSATIONS, cutoff, batch)
            elif kind == "incidents":
                await self._batches(_INCIDENT_EVENTS, cutoff, batch)
                removed[kind] = await self._incidents(cutoff[0], max(1, batch // 10))
            else:
                raise ValueError(f"unknown retention kind {kind!r}")
        cutoff = (to_db_time(now - SIZE_SAMPLES_KEPT),)
        await self._batches("DELETE FROM db_size WHERE at < ?1", cutoff, 0)
        return {kind: n for kind, n in removed.items() if n}

    async def _batches(self, sql: str, params: tuple[str], batch: int) -> int:
        """Run ``sql`` until it deletes fewer than ``batch`` rows (0: once, no limit)."""
        total = 0
        while True:
            cur = await self._store.execute_write(sql, (*params, batch) if batch else params)
            total += max(cur.rowcount, 0)
            if not batch or cur.rowcount < batch:
                return total
            await asyncio.sleep(0)  # the lock is fair: a queued write goes before our next batch

    async def _incidents(self, cutoff: str, batch: int) -> int:
        """Resolved incidents past the window, ``batch`` at a time with their alerts,
        remediations, record and postmortem fact (their timelines are already gone)."""
        total = 0
        while True:
            async with self._store.write() as db:
                ids = [row[0] for row in await db.execute_fetchall(_EXPIRED_INCIDENTS,
                                                                   (cutoff, batch))]  # fmt: skip
                if ids:
                    marks = ", ".join("?" * len(ids))
                    for table in (
                        "incident_events",
                        "incident_alerts",
                        "remediations",
                        "incident_records",
                    ):
                        await db.execute(
                            f"DELETE FROM {table} WHERE incident_id IN ({marks})",  # noqa: S608
                            ids,
                        )
                    sources = [f"incident:{incident_id}" for incident_id in ids]
                    await db.execute(
                        f"DELETE FROM facts WHERE source IN ({marks})"  # noqa: S608
                        " AND tags LIKE 'postmortem%'",
                        sources,
                    )
                    await db.execute(f"DELETE FROM incidents WHERE id IN ({marks})", ids)  # noqa: S608
            total += len(ids)
            if len(ids) < batch:
                return total
            await asyncio.sleep(0)

    async def vacuum(self, *, step_pages: int = VACUUM_STEP_PAGES) -> int:
        """Give free pages back to the file system, ``step_pages`` per write, then checkpoint
        the WAL (truncating it). Returns the bytes given back (0 unless auto_vacuum is
        incremental)."""
        freed = 0
        async with self._store.read() as db:
            if int(await scalar(db, "PRAGMA auto_vacuum")) != 2:
                return 0
            page = int(await scalar(db, "PRAGMA page_size"))
        while True:
            async with self._store.write_lock() as conn:
                free = int(await scalar(conn, "PRAGMA freelist_count"))
                if not free:
                    break
                # executescript steps the pragma to the end (execute frees a single page)
                await conn.executescript(f"PRAGMA incremental_vacuum({int(step_pages)})")
                freed += (free - int(await scalar(conn, "PRAGMA freelist_count"))) * page
            await asyncio.sleep(0)
        async with self._store.write_lock() as conn:
            try:
                await conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.OperationalError as exc:  # a reader in the way: the next one will do
                log.debug("wal checkpoint after vacuum: %s", exc)
        return freed

    async def sample(self) -> None:
        """Record the database size now (hourly: the growth rate is computed from these)."""
        file_bytes, free_bytes = await self._pages()
        await self._store.execute_write(
            "INSERT OR REPLACE INTO db_size (at, file_bytes, free_bytes) VALUES (?, ?, ?)",
            (to_db_time(self._clock.now()), file_bytes, free_bytes),
        )

    async def size(self) -> DbSize:
        """The size now and the data's growth per day, measured from the newest sample a day
        or more old (else the oldest sample at least an hour old)."""
        file_bytes, free_bytes = await self._pages()
        now = self._clock.now()
        async with self._store.read() as db:
            rows = list(
                await db.execute_fetchall(
                    "SELECT at, file_bytes - free_bytes FROM db_size WHERE at <= ?"
                    " ORDER BY at DESC LIMIT 1",
                    (to_db_time(now - timedelta(days=1)),),
                )
            )
            if not rows:
                rows = list(
                    await db.execute_fetchall(
                        "SELECT at, file_bytes - free_bytes FROM db_size WHERE at <= ?"
                        " ORDER BY at LIMIT 1",
                        (to_db_time(now - timedelta(hours=1)),),
                    )
                )
            mode = _AUTO_VACUUM.get(int(await scalar(db, "PRAGMA auto_vacuum")), "none")
        rate, window = None, 0.0
        if rows:
            window = (now - from_db_time(rows[0][0])).total_seconds() / 86400
            rate = (file_bytes - free_bytes - int(rows[0][1])) / window
        wal = self._store.path.with_name(self._store.path.name + "-wal")
        return DbSize(
            file_bytes=file_bytes,
            free_bytes=free_bytes,
            wal_bytes=wal.stat().st_size if wal.exists() else 0,
            growth_bytes_per_day=rate,
            growth_window_days=round(window, 2),
            auto_vacuum=mode,
        )

    async def _pages(self) -> tuple[int, int]:
        async with self._store.read() as db:
            page = int(await scalar(db, "PRAGMA page_size"))
            count = int(await scalar(db, "PRAGMA page_count"))
            free = int(await scalar(db, "PRAGMA freelist_count"))
        return count * page, free * page

    async def counts(self) -> dict[str, int]:
        """Rows per table (for tests and the bench)."""
        async with self._store.read() as db:
            names = [row[0] for row in await db.execute_fetchall(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
                " AND name NOT LIKE '%_fts%' AND sql NOT LIKE 'CREATE VIRTUAL%'"
            )]  # fmt: skip
            return {
                name: int(await scalar(db, f'SELECT count(*) FROM "{name}"'))  # noqa: S608
                for name in names
            }


def disk_usage(path: Path) -> tuple[int, int]:
    """(used, total) bytes of the file system holding ``path``, as unprivileged users see it."""
    st = os.statvfs(path)
    total = st.f_blocks * st.f_frsize
    return total - st.f_bavail * st.f_frsize, total
