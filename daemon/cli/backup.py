"""`nightshift backup PATH` and `nightshift restore PATH`."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from daemon.config import Settings
from daemon.core.errors import AlreadyRunningError, SchemaTooNewError, StoreError


def run_backup(settings: Settings, target: Path, *, force: bool) -> int:
    """Copy the database (the daemon may be running) to ``target``; print what was written."""
    from memory.backup import backup_database

    started = time.perf_counter()
    try:
        summary = backup_database(settings.database_path, target, force=force)
    except StoreError as exc:
        print(f"nightshift backup: {exc}", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - started
    print(f"wrote {summary.path} (mode 0600) in {elapsed:.1f}s: {summary.describe()}")
    return 0


def run_restore(settings: Settings, source: Path, *, now: datetime | None = None) -> int:
    """Replace the stopped daemon's database by the backup ``source``."""
    from daemon.runtime.process import StateLock, prepare_state_dir
    from memory.backup import known_version, restore_database, same_owner

    prepare_state_dir(settings.state_dir)
    lock = StateLock(settings.state_dir)
    try:
        lock.acquire()  # held throughout: the daemon cannot start halfway through
        same_owner(lock.path, settings.state_dir)  # it may have just been created, by root
    except AlreadyRunningError as exc:
        print(
            f"nightshift restore: refused: {exc}. Restoring under a running daemon would "
            "corrupt the database; e.g. `systemctl stop nightshift`, restore, then start it "
            "again. Nothing was changed.",
            file=sys.stderr,
        )
        return 1
    try:
        result = restore_database(source, settings.database_path, now=now or datetime.now(UTC))
    except SchemaTooNewError as exc:
        print(
            f"nightshift restore: refused: {source} has schema version {exc.found}, but this "
            f"nightshift knows only up to {exc.known}: a newer release wrote it. Upgrade "
            "nightshift, then restore. Nothing was changed.",
            file=sys.stderr,
        )
        return 1
    except StoreError as exc:
        print(f"nightshift restore: {exc}", file=sys.stderr)
        return 1
    finally:
        lock.release()
    summary = result.summary
    print(f"restored {source} to {summary.path}: {summary.describe()}")
    if result.side_copy is not None:
        print(f"the previous database is kept as {result.side_copy} (delete it when done)")
    known = known_version()
    if summary.schema_version < known:
        print(
            f"the daemon migrates it from schema version {summary.schema_version} to {known} "
            "when it starts"
        )
    return 0
