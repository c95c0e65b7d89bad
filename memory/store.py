"""The SQLite store: one writer and one reader connection (WAL), migrations, transactions.

All writes go through :meth:`SqliteStore.write`, one transaction at a time (``BEGIN IMMEDIATE``,
commit on success, rollback on error), or :meth:`SqliteStore.execute_write` for a lone statement.
Reads use a separate connection, so under WAL they proceed while a write is in progress and see
only committed data.

Every aiosqlite call is one hop to the connection's worker thread (tens of µs), so the write paths
count them: one hop per statement. For a statement that returns no rows, ``cur = await
db.execute(...)`` then ``cur.rowcount`` / ``cur.lastrowid`` (sqlite3 has already reset the
statement, so the cursor needs no closing); not ``async with db.execute(...)``, whose close is a
second hop. Statements that return rows (SELECT, RETURNING) go through ``execute_fetchall``.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import weakref
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import aiosqlite

from daemon.core.errors import SchemaTooNewError, StoreError
from memory._migrate import current_version, load_migrations, migrate, scalar

VACUUM_AT_OPEN_MAX_BYTES = 64 * 1024 * 1024  # an existing file switches to incremental vacuum
# (a full VACUUM) at open only when at most this big: about a second of work
_AUTO_VACUUM = {0: "none", 1: "full", 2: "incremental"}

__all__ = ["GroupInsert", "SqliteStore"]

_GROUP_ROWS = 500  # rows per multi-row INSERT (12 columns: 6,000 of SQLite's 32,766 variables)

log = logging.getLogger(__name__)


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


def _probe(path: Path) -> None:
    """Fail fast, in plain sqlite3, if the file cannot be opened at all.

    aiosqlite leaves its worker thread to report to a loop that may be gone when ``connect``
    itself fails, so the common failures (a directory, no permission) are caught here first.
    """
    sqlite3.connect(path).close()


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


async def _incremental_vacuum(conn: aiosqlite.Connection, path: Path, max_bytes: int) -> None:
    """Switch an existing database to ``auto_vacuum = INCREMENTAL`` (so pruned pages can be
    given back to the file system) with a full VACUUM, when it is at most ``max_bytes``; a
    larger one is left as it is (pruned space is still reused) and the log says how to switch."""
    mode = _AUTO_VACUUM.get(int(await scalar(conn, "PRAGMA auto_vacuum")), "none")
    if mode == "incremental":
        return
    pages = int(await scalar(conn, "PRAGMA page_count"))
    size = pages * int(await scalar(conn, "PRAGMA page_size"))
    if size > max_bytes:
        log.warning(
            "%s is %.0f MB with auto_vacuum = %s: pruned space is reused but the file never "
            "shrinks. To switch, stop nightshift and run: sqlite3 %s 'PRAGMA auto_vacuum = "
            "INCREMENTAL; VACUUM;' (it needs free disk space about the size of the file)",
            path, size / 1e6, mode, path,
        )  # fmt: skip
        return
    await conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    await conn.execute("VACUUM")
    log.info("%s switched to incremental vacuum (%.1f MB rewritten)", path, size / 1e6)


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
        self._write_failure: BaseException | None = None  # raised out of a nested write()
        self._groups: weakref.WeakSet[GroupInsert] = weakref.WeakSet()  # drained by close()

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        busy_timeout_ms: int = 5000,
        vacuum_at_open_max_bytes: int = VACUUM_AT_OPEN_MAX_BYTES,
    ) -> SqliteStore:
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
            await asyncio.to_thread(_probe, path)
            writer = await _connect(path, busy_timeout_ms)
        except sqlite3.Error as exc:
            raise _open_error(path, exc) from exc
        reader: aiosqlite.Connection | None = None
        try:
            found = await current_version(writer, path)
            if found > known:
                raise SchemaTooNewError(str(path), found, known)
            if found == 0:  # before the first table: takes effect without a VACUUM
                await writer.execute("PRAGMA auto_vacuum = INCREMENTAL")
            mode = await scalar(writer, "PRAGMA journal_mode = WAL")
            if str(mode).lower() != "wal":
                raise StoreError(
                    f"cannot open database {path}: could not switch to WAL mode (got {mode}). "
                    "Hint: keep the state directory on a local filesystem"
                )
            await writer.execute("PRAGMA foreign_keys = ON")
            await writer.execute("PRAGMA synchronous = NORMAL")
            version = await migrate(writer, path, migrations, found)
            await _incremental_vacuum(writer, path, vacuum_at_open_max_bytes)
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
        """Write every queued :class:`GroupInsert` row, then close both connections; safe to
        call more than once."""
        for group in list(self._groups):
            if self._writer is not None:
                await group.drain()
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

    def in_write(self) -> bool:
        """Whether the current task is inside a write() block (its reads should use it)."""
        return self._holds_write()

    def _holds_write(self) -> bool:
        task = asyncio.current_task()
        return task is not None and self._write_owner is task

    @asynccontextmanager
    async def write(self) -> AsyncIterator[aiosqlite.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``): committed on success, else rolled back.

        Writes are serialised: a write() in another task waits until this one has ended. Within a
        task write() is re-entrant: a nested ``async with store.write()`` yields the same
        connection without a BEGIN or COMMIT of its own, joining the outer transaction, so
        everything commits together when the outermost block ends. An exception raised out of a
        nested block rolls the whole transaction back: let it propagate (if it is caught and the
        outer block ends normally, the outer block rolls back anyway and raises StoreError).
        Inside, read through the yielded connection to see your writes. Do not wait, inside a
        write block, for another task that writes: it would wait for this block forever.
        """
        conn = self._conn(self._writer)
        task = asyncio.current_task()
        if task is not None and self._write_owner is task:
            try:
                yield conn
            except BaseException as exc:
                if self._write_failure is None:
                    self._write_failure = exc
                raise
            return
        async with self._lock:
            self._write_owner = task
            self._write_failure = None
            try:
                await conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    if self._write_failure is not None:
                        raise StoreError(
                            f"write transaction on {self._path} rolled back: a nested write() "
                            f"failed with {self._write_failure!r}"
                        ) from self._write_failure
                    await conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        await conn.execute("ROLLBACK")
                    raise
            finally:
                self._write_owner = None
                self._write_failure = None

    @asynccontextmanager
    async def write_lock(self) -> AsyncIterator[aiosqlite.Connection]:
        """The writer connection, no transaction begun, for statements that manage their own
        (``PRAGMA incremental_vacuum``, ``wal_checkpoint``): no other write runs meanwhile."""
        if self._holds_write():
            raise StoreError("write_lock() cannot be taken inside write()")
        async with self._lock:
            yield self._conn(self._writer)

    async def execute_write(self, sql: str, parameters: Iterable[Any] = ()) -> aiosqlite.Cursor:
        """Run one data-changing statement atomically, in one hop to the writer thread.

        Inside this task's :meth:`write` block the statement joins that transaction (as a nested
        write() would); otherwise it runs alone under the write lock in autocommit mode, which
        SQLite makes atomic, saving the BEGIN and COMMIT hops. Read ``rowcount`` and
        ``lastrowid`` from the returned cursor; it needs no closing. Not for statements that
        return rows (SELECT, RETURNING): fetch those with ``execute_fetchall`` inside write().
        """
        if self._holds_write():
            async with self.write() as db:
                return await db.execute(sql, parameters)
        async with self._lock:
            return await self._conn(self._writer).execute(sql, parameters)

    async def _insert_returning(self, sql: str, parameters: Iterable[Any]) -> list[int]:
        """One multi-row INSERT ... RETURNING id, alone under the write lock (autocommit: one
        hop, atomic): the new ids in ascending order."""
        async with self._lock:
            rows = await self._conn(self._writer).execute_fetchall(sql, parameters)
        return sorted(int(row[0]) for row in rows)

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
        mode = str(await scalar(conn, "PRAGMA journal_mode")).lower()
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


class GroupInsert:
    """Group commit for an append-only table: rows inserted in the same loop tick (or while the
    previous group is being written) share one multi-row INSERT, one hop and one commit.

    :meth:`insert` still returns only once its row is committed, with its id, and raises what
    the write raised; a group that fails is retried row by row, so one bad row fails only its
    own caller. A caller cancelled while it waits does not take its row back: it is written all
    the same. :meth:`SqliteStore.close` drains every group first, so a clean stop loses nothing.
    Inside a :meth:`SqliteStore.write` block a row joins the caller's transaction instead.
    """

    def __init__(self, store: SqliteStore, table: str, columns: Sequence[str]) -> None:
        self._store = store
        self._head = f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
        self._row = f"({', '.join('?' * len(columns))})"
        self._queue: list[tuple[tuple[Any, ...], asyncio.Future[int]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.groups = 0  # multi-row statements written (for benchmarks)
        store._groups.add(self)

    async def insert(self, parameters: tuple[Any, ...]) -> int:
        """Insert one row; returns its id once it is committed."""
        if self._store.in_write():  # part of the caller's transaction
            cur = await self._store.execute_write(self._head + self._row, parameters)
            assert cur.lastrowid is not None
            return cur.lastrowid
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.append((parameters, done))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush())
        return await done

    async def drain(self) -> None:
        """Wait until every row queued so far is committed (or has failed)."""
        while self._flusher is not None:
            await asyncio.shield(self._flusher)

    async def _flush(self) -> None:
        batch: list[tuple[tuple[Any, ...], asyncio.Future[int]]] = []
        try:
            await asyncio.sleep(0)  # let the other callers of this tick queue theirs
            while self._queue:
                batch = self._queue[:_GROUP_ROWS]
                del self._queue[:_GROUP_ROWS]
                await self._write(batch)
                batch = []
        finally:
            self._flusher = None
            for _, done in batch + self._queue:  # cancelled (loop shutdown): fail, never hang
                _settle(done, exc=StoreError("the group insert was cancelled"))
            self._queue = []

    async def _write(self, batch: list[tuple[tuple[Any, ...], asyncio.Future[int]]]) -> None:
        sql = self._head + ", ".join([self._row] * len(batch)) + " RETURNING id"
        try:
            # Rowids within one INSERT ascend in row order, so sorted ids map back to the batch.
            ids = await self._store._insert_returning(sql, [v for row, _ in batch for v in row])
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0][1], exc=exc)
                return
            for one in batch:  # find the row that failed; the others still go in
                await self._write([one])
            return
        self.groups += 1
        for (_, done), row_id in zip(batch, ids, strict=True):
            _settle(done, row_id)


def _settle(
    done: asyncio.Future[int], row_id: int = 0, *, exc: BaseException | None = None
) -> None:
    if done.done():  # its caller was cancelled; the row was written all the same
        return
    if exc is not None:
        done.set_exception(exc)
    else:
        done.set_result(row_id)
