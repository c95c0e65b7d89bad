"""Component history: the supervisor records crashes, restarts and give-ups here."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import aiosqlite

from daemon.core.clock import Clock
from memory._codec import from_db_time, to_db_time
from memory.store import SqliteStore

__all__ = ["ComponentEvent", "ComponentEventRepo"]

log = logging.getLogger(__name__)

_COLUMNS = "id, component, event, detail, created_at"


@dataclass(frozen=True, slots=True, kw_only=True)
class ComponentEvent:
    """Something that happened to a component, e.g. ("slack", "crashed", "Timeout…")."""

    id: int
    component: str
    event: str
    detail: str
    created_at: datetime


def _event(row: aiosqlite.Row) -> ComponentEvent:
    return ComponentEvent(
        id=row["id"],
        component=row["component"],
        event=row["event"],
        detail=row["detail"],
        created_at=from_db_time(row["created_at"]),
    )


class ComponentEventRepo:
    """Append and list component events."""

    def __init__(self, store: SqliteStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def record(self, component: str, event: str, detail: str = "") -> int:
        """Store an event, timestamped now, and return its id."""
        cur = await self._store.execute_write(
            "INSERT INTO component_events (component, event, detail, created_at)"
            " VALUES (?, ?, ?, ?)",
            (component, event, detail, to_db_time(self._clock.now())),
        )
        event_id = cur.lastrowid
        assert event_id is not None
        return event_id

    async def recent(self, limit: int = 50, component: str | None = None) -> list[ComponentEvent]:
        """The latest events, newest first, optionally for one component."""
        where, params = ("WHERE component = ?", (component,)) if component is not None else ("", ())
        async with self._store.read() as db:
            rows = await db.execute_fetchall(
                f"SELECT {_COLUMNS} FROM component_events {where} ORDER BY id DESC LIMIT ?",
                (*params, limit),
            )
        return [_event(row) for row in rows]
