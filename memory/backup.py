"""Online backup and offline restore of the database file.

Backup uses SQLite's online backup API from a connection that holds one read transaction for
the whole copy. Under WAL that transaction is a snapshot: it includes every transaction
committed before it began (whether still in the -wal file or already checkpointed), never a
half-written one, and it does not block the daemon's writer. Copying page by page inside that
snapshot also means a concurrent write never restarts the copy, which it would if each step
took a fresh lock. The copy is written to a temporary file (mode 0600), switched out of WAL so
it is one self-contained file, checked, and renamed into place.

Restore copies a backup into the state directory the same way, checks it (``PRAGMA
integrity_check``, a nightshift schema this release knows), keeps the current database as a
dated side copy (with its -wal, so nothing committed is lost), drops the stale -wal/-shm and
renames the new file in. The caller must hold the state-directory lock: restoring under a
running daemon would corrupt it.

Synchronous (plain sqlite3): these run in the CLI, not in the daemon's event loop.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from daemon.core.errors import SchemaTooNewError, StoreError
from memory._migrate import load_migrations

__all__ = [
    "MAIN_TABLES",
    "DatabaseSummary",
    "RestoreResult",
    "backup_database",
    "restore_database",
    "same_owner",
]

# Tables whose row counts `backup` and `restore` print (those present in the file).
MAIN_TABLES = (
    "conversations",
    "messages",
    "facts",
    "incidents",
    "incident_events",
    "alert_events",
    "tasks",
    "task_runs",
    "audit_log",
    "outbox",
)
PAGES_PER_STEP = 4096  # 16 MiB at the 4 KiB page size; GIL released during each step
Progress = Callable[[int, int, int], object]  # sqlite3's (status, remaining, total)


@dataclass(frozen=True, slots=True, kw_only=True)
class DatabaseSummary:
    """What a database file holds: size, schema version and row counts of the main tables."""

    path: Path
    size_bytes: int
    schema_version: int
    rows: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        """``12.3 MB, schema version 7; rows: messages 120, …``."""
        rows = ", ".join(f"{name} {count:,}" for name, count in self.rows.items())
        return (
            f"{self.size_bytes / 1e6:.1f} MB, schema version {self.schema_version}; "
            f"rows: {rows or 'none'}"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RestoreResult:
    """The database now in place, and where the one it replaced was kept (None if none)."""

    summary: DatabaseSummary
    side_copy: Path | None


def known_version() -> int:
    """The newest schema version this release can open."""
    migrations = load_migrations()
    return migrations[-1].version if migrations else 0


def backup_database(
    source: Path,
    target: Path,
    *,
    force: bool = False,
    pages_per_step: int = PAGES_PER_STEP,
    progress: Progress | None = None,
) -> DatabaseSummary:
    """Copy the live database ``source`` to ``target`` (consistent while it is being written).

    Refuses (StoreError, saying how to proceed) when ``target`` exists and not ``force``, when
    its directory is missing, or when ``source`` is missing or not a nightshift database.
    """
    source, target = Path(source), Path(target).absolute()
    if not source.is_file():
        raise StoreError(
            f"no database at {source}: nothing to back up. Hint: pass the --state-dir (or "
            "--config) the daemon runs with"
        )
    if target.resolve() in {p.resolve() for p in (source, *_companions(source))}:
        raise StoreError(f"{target} is the live database (or its journal); choose a file elsewhere")
    _check_target(target, force=force)
    with _temporary(target) as temp:
        with contextlib.closing(_open(source, "rw")) as src:
            _nightshift_version(src, source)  # refuse a foreign file before copying it
            with contextlib.closing(sqlite3.connect(temp, isolation_level=None)) as dst:
                src.execute("BEGIN")  # one read snapshot for every step of the copy
                try:
                    src.execute("SELECT COUNT(*) FROM sqlite_schema").fetchall()
                    src.backup(dst, pages=pages_per_step, progress=progress)
                except sqlite3.Error as exc:
                    raise StoreError(
                        f"backup of {source} to {target} failed: {exc}; nothing was written. "
                        "Hint: check the free space where the backup goes"
                    ) from exc
                finally:
                    src.execute("COMMIT")
                _self_contained(dst, temp)
                try:
                    summary = _summarise(dst, temp, check="integrity_check", newer_ok=True)
                except StoreError as exc:
                    raise StoreError(
                        f"the copy of {source} fails its check, so the live database is probably "
                        f"damaged; nothing was written. Run `nightshift doctor`. ({exc})"
                    ) from exc
        try:
            _install(temp, target, replace=force)
        except OSError as exc:
            raise StoreError(f"cannot write {target}: {exc.strerror}; nothing was written") from exc
    return DatabaseSummary(
        path=target,
        size_bytes=target.stat().st_size,
        schema_version=summary.schema_version,
        rows=summary.rows,
    )


def restore_database(source: Path, live: Path, *, now: datetime) -> RestoreResult:
    """Replace the database ``live`` by the backup ``source``. The caller holds the state lock.

    ``source`` is copied beside ``live`` and checked before anything is touched; then the
    current database becomes ``<live>.before-restore-<UTC time>`` (with its -wal, if any),
    the stale -shm goes, and the copy is renamed into place.
    """
    source, live = Path(source), Path(live).absolute()
    _readable_file(source)
    if live.exists() and source.resolve() == live.resolve():
        raise StoreError(
            f"{source} is the live database itself; give the path of a backup file written "
            "by `nightshift backup`"
        )
    with _temporary(live) as temp:
        # A file of `nightshift backup` has no -wal; a copied live database may, and then it
        # must be read through (which makes SQLite add a -shm beside it).
        wal = _companions(source)[0].exists()
        with contextlib.closing(_open(source, "ro", immutable=not wal)) as src:
            _nightshift_version(src, source)
            with contextlib.closing(sqlite3.connect(temp, isolation_level=None)) as dst:
                try:
                    src.backup(dst)
                except sqlite3.Error as exc:
                    raise _unreadable(source, exc) from exc
                _self_contained(dst, temp)
                summary = _summarise(dst, source, check="integrity_check")
        try:
            side = _set_aside(live, now)
        except OSError as exc:
            raise StoreError(
                f"cannot keep a side copy of {live}: {exc.strerror}; nothing was changed. "
                f"Hint: check that {live.parent} is writable by this user"
            ) from exc
        same_owner(temp, live.parent)
        try:
            _install(temp, live, replace=True)
        except OSError as exc:
            raise StoreError(
                f"cannot put the restored database in place at {live}: {exc.strerror}; the "
                f"previous database is at {side}: rename it back to {live.name} to undo"
            ) from exc
    _fold_wal(side)
    return RestoreResult(
        summary=DatabaseSummary(
            path=live,
            size_bytes=live.stat().st_size,
            schema_version=summary.schema_version,
            rows=summary.rows,
        ),
        side_copy=side,
    )


# -- helpers ------------------------------------------------------------------------------------


def _open(path: Path, mode: str, *, immutable: bool = False) -> sqlite3.Connection:
    """A connection that never creates the file (``mode`` is ``ro`` or ``rw``); ``immutable``
    also keeps it from creating -wal/-shm files beside a read-only file."""
    uri = f"{path.absolute().as_uri()}?mode={mode}" + ("&immutable=1" if immutable else "")
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None)
        conn.execute("PRAGMA busy_timeout = 10000")
    except sqlite3.Error as exc:
        raise _unreadable(path, exc) from exc
    return conn


def _unreadable(path: Path, exc: sqlite3.Error) -> StoreError:
    reason = str(exc) or type(exc).__name__
    if "not a database" in reason:
        hint = (
            "it is not an SQLite database; give the path of a file written by `nightshift backup`"
        )
    elif "malformed" in reason or "corrupt" in reason:
        hint = "the file is damaged; use another backup"
    else:
        hint = "check that the file and its directory are readable (and writable) by this user"
    return StoreError(f"cannot read {path}: {reason}. Hint: {hint}")


def _readable_file(path: Path) -> None:
    if not path.exists():
        raise StoreError(f"{path} does not exist; give the path of a file written by "
                         "`nightshift backup`")  # fmt: skip
    if not path.is_file():
        raise StoreError(f"{path} is not a file; give the path of a file written by "
                         "`nightshift backup`")  # fmt: skip


def _check_target(target: Path, *, force: bool) -> None:
    if target.is_dir():
        raise StoreError(
            f"{target} is a directory; give a file name, e.g. {target / 'nightshift-backup.db'}"
        )
    if not target.parent.is_dir():
        raise StoreError(f"directory {target.parent} does not exist; create it first")
    if target.exists() and not force:
        raise StoreError(f"{target} already exists; pass --force to overwrite it, or choose "
                         "another name")  # fmt: skip


def _nightshift_version(conn: sqlite3.Connection, path: Path) -> int:
    """The schema version of a nightshift database; StoreError for anything else."""
    try:
        tables = {
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        }
        if "schema_version" not in tables:
            raise StoreError(
                f"{path} is an SQLite database but not nightshift's (no schema_version table); "
                "give the path of a file written by `nightshift backup`"
            )
        version = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
    except sqlite3.Error as exc:
        raise _unreadable(path, exc) from exc
    return int(version[0])


def _summarise(
    conn: sqlite3.Connection, path: Path, *, check: str, newer_ok: bool = False
) -> DatabaseSummary:
    """Check the database (``quick_check`` or ``integrity_check``) and count its main tables;
    SchemaTooNewError for a newer schema unless ``newer_ok``."""
    version = _nightshift_version(conn, path)
    known = known_version()
    if version > known and not newer_ok:
        raise SchemaTooNewError(str(path), version, known)
    try:
        problems = [str(row[0]) for row in conn.execute(f"PRAGMA {check}")]
        if problems != ["ok"]:
            raise StoreError(
                f"{path} fails PRAGMA {check}: {'; '.join(problems[:5])}; the copy is damaged, "
                "use another backup"
            )
        present = {row[0] for row in conn.execute("SELECT name FROM sqlite_schema")}
        rows = {
            table: int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
            for table in MAIN_TABLES
            if table in present
        }
    except sqlite3.Error as exc:
        raise _unreadable(path, exc) from exc
    size = path.stat().st_size if path.exists() else 0
    return DatabaseSummary(path=path, size_bytes=size, schema_version=version, rows=rows)


def _self_contained(conn: sqlite3.Connection, path: Path) -> None:
    """Switch a fresh copy out of WAL (the source's header says WAL): one file, no -wal."""
    mode = conn.execute("PRAGMA journal_mode = DELETE").fetchone()[0]
    if str(mode).lower() != "delete":
        raise StoreError(f"could not switch {path} out of WAL mode (got {mode})")


@contextlib.contextmanager
def _temporary(beside: Path) -> Iterator[Path]:
    """An empty 0600 file next to ``beside`` (same filesystem, so rename is atomic), removed
    with its journal unless it was renamed into place."""
    temp = beside.with_name(f".{beside.name}.{os.getpid()}.tmp")
    for stale in (temp, *_companions(temp)):
        stale.unlink(missing_ok=True)
    try:
        os.close(os.open(temp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except OSError as exc:
        raise StoreError(
            f"cannot write in {beside.parent}: {exc.strerror}; choose a directory this user "
            "can write to"
        ) from None
    try:
        yield temp
    finally:
        for leftover in (temp, *_companions(temp)):
            leftover.unlink(missing_ok=True)


def _companions(path: Path) -> tuple[Path, Path, Path]:
    """The -wal, -shm and -journal files SQLite keeps beside ``path``."""
    return (
        path.with_name(path.name + "-wal"),
        path.with_name(path.name + "-shm"),
        path.with_name(path.name + "-journal"),
    )


def _install(temp: Path, target: Path, *, replace: bool) -> None:
    """Make ``temp`` durable and rename it to ``target`` (never over a file unless ``replace``)."""
    with open(temp, "rb") as handle:
        os.fsync(handle.fileno())
    if replace:
        os.replace(temp, target)
    else:
        try:
            os.link(temp, target)  # atomic, and fails if the name was taken meanwhile
        except FileExistsError:
            raise StoreError(
                f"{target} already exists; pass --force to overwrite it, or choose another name"
            ) from None
        temp.unlink()
    _fsync_dir(target.parent)


def same_owner(path: Path, directory: Path) -> None:
    """Run as root (``sudo nightshift restore``), give ``path`` to the state directory's
    owner: the daemon's service user must be able to open what was restored."""
    if os.geteuid() == 0:
        owner = directory.stat()
        os.chown(path, owner.st_uid, owner.st_gid)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _set_aside(live: Path, now: datetime) -> Path | None:
    """Keep ``live`` (and its -wal) under a dated name; drop its -shm and any stale journal."""
    wal, shm, journal = _companions(live)
    side: Path | None = None
    if live.exists():
        stamp = now.strftime("%Y%m%dT%H%M%SZ")
        side = live.with_name(f"{live.name}.before-restore-{stamp}")
        n = 1
        while side.exists():
            n += 1
            side = live.with_name(f"{live.name}.before-restore-{stamp}-{n}")
        os.link(live, side)  # ``live`` stays in place until the new file replaces it
        os.chmod(side, 0o600)  # it holds conversations too
        if wal.exists():
            side_wal = side.with_name(side.name + "-wal")
            os.replace(wal, side_wal)  # committed rows may live only in it
            os.chmod(side_wal, 0o600)
    for stale in (wal, shm, journal):
        stale.unlink(missing_ok=True)
    return side


def _fold_wal(side: Path | None) -> None:
    """Best effort: checkpoint the side copy's -wal into it, leaving one file."""
    if side is None or not side.with_name(side.name + "-wal").exists():
        return
    try:
        with contextlib.closing(_open(side, "rw")) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.execute("PRAGMA journal_mode = DELETE")
    except (sqlite3.Error, StoreError):
        pass  # a damaged side copy stays as it was, -wal beside it
