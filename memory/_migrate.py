"""Schema migrations: packaged ``migrations/NNNN_name.sql`` files applied in order.

Each migration runs in its own ``BEGIN IMMEDIATE`` transaction together with its row in
``schema_version``, so a failed migration leaves the database at the previous version.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import aiosqlite

from daemon.core.errors import StoreError
from memory._codec import to_db_time

__all__ = [
    "Migration",
    "current_version",
    "load_migrations",
    "migrate",
    "scalar",
    "split_statements",
]

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


async def scalar(conn: aiosqlite.Connection, sql: str) -> Any:
    """The first column of the first row, or None."""
    rows = list(await conn.execute_fetchall(sql))
    return rows[0][0] if rows else None


async def current_version(conn: aiosqlite.Connection, path: Path) -> int:
    """The applied schema version (0 for a new file); refuses foreign databases."""
    tables = {
        row[0]
        for row in await conn.execute_fetchall(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    }
    if "schema_version" in tables:
        return int(await scalar(conn, "SELECT COALESCE(MAX(version), 0) FROM schema_version"))
    if tables:
        raise StoreError(
            f"cannot open database {path}: it is an SQLite database but not nightshift's "
            f"(tables {sorted(tables)[:5]} and no schema_version). "
            "Hint: point --state-dir at another directory"
        )
    return 0


async def migrate(
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
            current = await current_version(conn, path)
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
