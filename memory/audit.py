"""The audit log: every tool call, who asked, why, with what, and how it went."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiosqlite

from daemon.core.clock import Clock
from daemon.core.redact import redact, redact_data
from memory._codec import dump_json, from_db_time, load_json, to_db_time
from memory.store import GroupInsert, SqliteStore

__all__ = ["AuditEntry", "AuditRecord", "AuditRepo"]

log = logging.getLogger(__name__)

_COLUMNS = (
    "id, actor, action, tool, tier, reason, arguments, result, ok, duration_ms, run_id, created_at"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEntry:
    """One tool call to record; the caller has already redacted secrets."""

    actor: str
    action: str
    tool: str
    tier: str
    reason: str
    arguments: dict[str, Any]
    result: str
    ok: bool
    duration_ms: float
    run_id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditRecord(AuditEntry):
    """A stored audit entry."""

    id: int
    created_at: datetime


def _record(row: aiosqlite.Row) -> AuditRecord:
    return AuditRecord(
        id=row["id"],
        actor=row["actor"],
        action=row["action"],
        tool=row["tool"],
        tier=row["tier"],
        reason=row["reason"],
        arguments=load_json(row["arguments"]),
        result=row["result"],
        ok=bool(row["ok"]),
        duration_ms=row["duration_ms"],
        run_id=row["run_id"],
        created_at=from_db_time(row["created_at"]),
    )


class AuditRepo:
    """Append-only audit log."""

    def __init__(self, store: SqliteStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._rows = GroupInsert(store, "audit_log", _COLUMNS.split(", ")[1:])

    async def record(self, entry: AuditEntry) -> int:
        """Store an entry, secrets redacted (arguments that are not JSON are stored as str);
        returns once committed. Entries made together share one INSERT and one commit (see
        GroupInsert)."""
        arguments = dump_json(redact_data(entry.arguments), lenient=True) or "{}"
        return await self._rows.insert(
            (
                entry.actor,
                entry.action,
                entry.tool,
                entry.tier,
                redact(entry.reason),
                arguments,
                redact(entry.result),
                int(entry.ok),
                entry.duration_ms,
                entry.run_id,
                to_db_time(self._clock.now()),
            )
        )

    async def recent(self, limit: int = 50) -> list[AuditRecord]:
        """The latest entries, newest first."""
        async with self._store.read() as db:
            rows = await db.execute_fetchall(
                f"SELECT {_COLUMNS} FROM audit_log ORDER BY id DESC LIMIT ?", (limit,)
            )
        return [_record(row) for row in rows]

    async def for_run(self, run_id: int) -> list[AuditRecord]:
        """A run's entries in the order they happened."""
        async with self._store.read() as db:
            rows = await db.execute_fetchall(
                f"SELECT {_COLUMNS} FROM audit_log WHERE run_id = ? ORDER BY id", (run_id,)
            )
        return [_record(row) for row in rows]
