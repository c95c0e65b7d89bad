"""The SQLite store: one writer and one reader connection (WAL), migrations, transactions.

All writes go through :meth:`SqliteStore.write`, one at a time (``BEGIN IMMEDIATE``, commit on
success, rollback on error). Reads use a separate connection, so under WAL they proceed while a
write is in progress and see only committed data.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Any

import aiosqlite

from memory._codec import to_db_time
from memory.errors import SchemaTooNewError, StoreError

__all__ = ["Migration", "SqliteStore", "load_migrations", "split_statements"]

log = logging.getLogger(__name__)

_MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_version ("
    " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Migration:
    """One numbered schema change, shipped as ``memory/migrations/NNNN_name.sql``."""

    version: int
    name: str
    sql: str


def load_migrations() -> list[Migration]:
    """The packaged migrations in version order; versions must run 1, 2, 3… without gaps."""
    found = []
    for entry in (resources.files("memory") / "migrations").iterdir():
        match = _MIGRATION_FILE.match(entry.name)
        if match:
            sql = entry.read_text(encoding="utf-8")
            found.append(Migration(version=int(match[1]), name=match[2], sql=sql))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise StoreError(
            f"packaged migrations are not numbered 1..n: {[m.version for m in found]}; "
            "the installation is broken, reinstall nightshift"
        )
    return found


def split_statements(script: str) -> list[str]:
    """Split an SQL script into complete statements (trigger bodies stay whole)."""
    statements, buffer = [], ""
    for part in script.split(";"):
        buffer += part + ";"
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    return [s for s in statements if _has_code(s)]


def _has_code(statement: str) -> bool:
    lines = (line.split("--", 1)[0].strip() for line in statement.splitlines())
    return any(line and line != ";" for line in lines)


def _open_error(path: Path, exc: BaseException) -> StoreError:
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, sqlite3.DatabaseError) and "not a database" in reason:
        hint = "move the file aside (nightshift will create a new one) or restore a backup"
    elif isinstance(exc, sqlite3.DatabaseError) and "malformed" in reason:
        hint = "the file is corrupt: restore a backup, or move it aside to start afresh"
    else:
        hint = (
            "check that the path is a file (not a directory) and that its directory exists "
            "and is readable and writable by the user nightshift runs as"
        )
    return StoreError(f"cannot open database {path}: {reason}. Hint: {hint}")


async def _connect(path: Path, busy_timeout_ms: int) -> aiosqlite.Connection:
    """A connection in autocommit mode: transactions are begun and ended explicitly."""
    conn = await aiosqlite.connect(path, isolation_level=None)
    conn.row_factory = aiosqlite.Row
    try:
        await conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    except BaseException:
        await conn.close()
        raise
    return conn


async def _scalar(conn: aiosqlite.Connection, sql: str) -> Any:
    rows = list(await conn.execute_fetchall(sql))
    return rows[0][0] if rows else None


async def _current_version(conn: aiosqlite.Connection, path: Path) -> int:
    """The applied schema version (0 for a new file); refuses foreign databases."""
    tables = {
        row[0]
        for row in await conn.execute_fetchall(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    }
    if "schema_version" in tables:
        return int(await _scalar(conn, "SELECT COALESCE(MAX(version), 0) FROM schema_version"))
    if tables:
        raise StoreError(
            f"cannot open database {path}: it is an SQLite database but not nightshift's "
            f"(tables {sorted(tables)[:5]} and no schema_version). "
            "Hint: point --state-dir at another directory"
        )
    return 0


async def _migrate(
    conn: aiosqlite.Connection, path: Path, migrations: list[Migration], current: int
) -> int:
    """Apply each pending migration in its own transaction; return the resulting version."""
    for migration in migrations:
        if migration.version <= current:
            continue
        await conn.execute("BEGIN IMMEDIATE")
        try:
            await conn.execute(_VERSION_TABLE)
            # Another process may have migrated between our check and taking the write lock.
            current = await _current_version(conn, path)
            if migration.version <= current:
                await conn.execute("ROLLBACK")
                continue
            for statement in split_statements(migration.sql):
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, to_db_time(datetime.now(UTC))),
            )
            await conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                await conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise StoreError(
                    f"migration {migration.version:04d}_{migration.name} failed on {path}: "
                    f"{exc}; the database was left at schema version {current}"
                ) from exc
            raise
        log.info("applied migration %04d_%s to %s", migration.version, migration.name, path)
        current = migration.version
    return current


class SqliteStore:
    """nightshift's only durable state: one SQLite file in WAL mode."""

    def __init__(
        self,
        path: Path,
        writer: aiosqlite.Connection,
        reader: aiosqlite.Connection,
        schema_version: int,
    ) -> None:
        """Use :meth:`open`; this only wires already-prepared connections together."""
        self._path = path
        self._writer: aiosqlite.Connection | None = writer
        self._reader: aiosqlite.Connection | None = reader
        self._schema_version = schema_version
        self._lock = asyncio.Lock()
        self._write_owner: asyncio.Task[object] | None = None

    @classmethod
    async def open(cls, path: Path, *, busy_timeout_ms: int = 5000) -> SqliteStore:
        """Open (creating if needed) and migrate the database at ``path``.

        Raises SchemaTooNewError, leaving the file untouched, if a newer release wrote it, and
        StoreError (path, reason, hint) if it cannot be opened or is not a nightshift database.
        """
        path = Path(path)
        migrations = load_migrations()
        known = migrations[-1].version if migrations else 0
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _open_error(path, exc) from exc
        try:
            writer = await _connect(path, busy_timeout_ms)
        except sqlite3.Error as exc:
            raise _open_error(path, exc) from exc
        reader: aiosqlite.Connection | None = None
        try:
            found = await _current_version(writer, path)
            if found > known:
                raise SchemaTooNewError(str(path), found, known)
            mode = await _scalar(writer, "PRAGMA journal_mode = WAL")
            if str(mode).lower() != "wal":
                raise StoreError(
                    f"cannot open database {path}: could not switch to WAL mode (got {mode}). "
                    "Hint: keep the state directory on a local filesystem"
                )
            await writer.execute("PRAGMA foreign_keys = ON")
            await writer.execute("PRAGMA synchronous = NORMAL")
            version = await _migrate(writer, path, migrations, found)
            reader = await _connect(path, busy_timeout_ms)
            await reader.execute("PRAGMA query_only = ON")
        except BaseException as exc:
            for conn in (reader, writer):
                if conn is not None:
                    await conn.close()
            if isinstance(exc, sqlite3.Error):
                raise _open_error(path, exc) from exc
            raise
        log.info("opened %s at schema version %d", path, version)
        return cls(path, writer, reader, version)

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    @property
    def schema_version(self) -> int:
        """The schema version the database is at (the highest applied migration)."""
        return self._schema_version

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run."""
        return self._writer is None

    async def close(self) -> None:
        """Close both connections; safe to call more than once."""
        writer, reader = self._writer, self._reader
        self._writer = self._reader = None
        if reader is not None:
            await reader.close()
        if writer is not None:
            try:
                await writer.execute("PRAGMA optimize")
            except sqlite3.Error as exc:  # advisory only; never block shutdown on it
                log.warning("PRAGMA optimize failed on %s: %s", self._path, exc)
            await writer.close()
            log.info("closed %s", self._path)

    async def __aenter__(self) -> SqliteStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _conn(self, conn: aiosqlite.Connection | None) -> aiosqlite.Connection:
        if conn is None:
            raise StoreError(f"database {self._path} is closed")
        return conn

    @asynccontextmanager
    async def write(self) -> AsyncIterator[aiosqlite.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``): committed on success, else rolled back.

        Writes are serialised; do not nest ``write()`` in the same task (it raises StoreError
        rather than deadlock). Inside, read through the yielded connection to see your writes.
        """
        conn = self._conn(self._writer)
        task = asyncio.current_task()
        if task is not None and self._write_owner is task:
            raise StoreError("nested write() in the same task would deadlock")
        async with self._lock:
            self._write_owner = task
            try:
                await conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    await conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        await conn.execute("ROLLBACK")
                    raise
            finally:
                self._write_owner = None

    @asynccontextmanager
    async def read(self) -> AsyncIterator[aiosqlite.Connection]:
        """The read-only connection; sees committed data and never waits for the writer.

        Fetch with ``execute_fetchall`` (or close cursors): an unfinished cursor keeps a stale
        read snapshot open.
        """
        yield self._conn(self._reader)

    async def check(self) -> dict[str, object]:
        """Health figures for ``nightshift doctor``: integrity, version, size, WAL."""
        conn = self._conn(self._reader)
        rows = await conn.execute_fetchall("PRAGMA quick_check")
        quick_check = "; ".join(str(row[0]) for row in rows)
        mode = str(await _scalar(conn, "PRAGMA journal_mode")).lower()
        wal_file = self._path.with_name(self._path.name + "-wal")
        size = self._path.stat().st_size
        wal_size = wal_file.stat().st_size if wal_file.exists() else 0
        return {
            "ok": quick_check == "ok" and mode == "wal",
            "path": str(self._path),
            "quick_check": quick_check,
            "schema_version": self._schema_version,
            "size_bytes": size,
            "wal_bytes": wal_size,
            "journal_mode": mode,
            "wal": mode == "wal",
        }
