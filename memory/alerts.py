"""Alert rule state (pending/firing) and the durable intake of alert events."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import aiosqlite

from daemon.core.alerts import AlertEvent, AlertState, Change
from memory._codec import dump_json, from_db_time, from_db_time_opt, load_json, to_db_time
from memory.store import SqliteStore

__all__ = ["AlertRepo", "StoredAlertEvent"]


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredAlertEvent:
    """An alert event as taken in, with its row id (the order of handling)."""

    id: int
    event: AlertEvent


class AlertRepo:
    """alert_state rows for the rule engine; alert_events rows for the incident manager."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    async def states(self) -> list[AlertState]:
        async with self._store.read() as db:
            rows = await db.execute_fetchall("SELECT * FROM alert_state ORDER BY active_since")
        return [_state(row) for row in rows]

    async def apply(self, changes: Sequence[Change]) -> None:
        """Persist rule-engine changes and their events in one transaction."""
        async with self._store.write() as db:
            for change in changes:
                if change.state is None:
                    await db.execute(
                        "DELETE FROM alert_state WHERE fingerprint = ?", (change.fingerprint,)
                    )
                else:
                    await db.execute(_UPSERT_STATE, _state_params(change.state))
            await _insert_events(db, [c.event for c in changes if c.event is not None])

    async def accept(self, events: Sequence[AlertEvent]) -> None:
        """Commit alert events from outside the rule engine (e.g. Alertmanager)."""
        async with self._store.write() as db:
            await _insert_events(db, list(events))

    async def unhandled(self, limit: int = 500) -> list[StoredAlertEvent]:
        async with self._store.read() as db:
            rows = await db.execute_fetchall(
                "SELECT * FROM alert_events WHERE handled = 0 ORDER BY id LIMIT ?", (limit,)
            )
        return [StoredAlertEvent(id=row["id"], event=_event(row)) for row in rows]

    @staticmethod
    async def mark_handled(db: aiosqlite.Connection, ids: Sequence[int]) -> None:
        """Inside the caller's write transaction: these events' effects are committed."""
        await db.executemany(
            "UPDATE alert_events SET handled = 1 WHERE id = ?", [(i,) for i in ids]
        )

    async def count(self) -> int:
        async with self._store.read() as db:
            rows = list(await db.execute_fetchall("SELECT count(*) FROM alert_events"))
        return int(rows[0][0])


_UPSERT_STATE = (
    "INSERT INTO alert_state (fingerprint, rule, state, labels, annotations, value,"
    " active_since, fired_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (fingerprint) DO UPDATE SET state = excluded.state, labels = excluded.labels,"
    " annotations = excluded.annotations, value = excluded.value,"
    " active_since = excluded.active_since, fired_at = excluded.fired_at,"
    " updated_at = excluded.updated_at"
)


def _state_params(state: AlertState) -> tuple[object, ...]:
    return (
        state.fingerprint,
        state.rule,
        state.state,
        dump_json(dict(state.labels)),
        dump_json(dict(state.annotations)),
        state.value,
        to_db_time(state.active_since),
        to_db_time(state.fired_at) if state.fired_at else None,
        to_db_time(state.updated_at),
    )


def _state(row: aiosqlite.Row) -> AlertState:
    return AlertState(
        fingerprint=row["fingerprint"],
        rule=row["rule"],
        state=row["state"],
        labels=load_json(row["labels"]),
        annotations=load_json(row["annotations"]),
        value=row["value"],
        active_since=from_db_time(row["active_since"]),
        fired_at=from_db_time_opt(row["fired_at"]),
        updated_at=from_db_time(row["updated_at"]),
    )


ROWS_ON_LOOP = 1000  # more events than this are encoded for SQLite in a worker thread


async def _insert_events(db: aiosqlite.Connection, events: Sequence[AlertEvent]) -> None:
    if not events:
        return
    if len(events) > ROWS_ON_LOOP:  # a big snapshot: ~10 µs of JSON an event off the loop
        rows = await asyncio.to_thread(_event_rows, events)
    else:
        rows = _event_rows(events)
    await db.executemany(
        "INSERT INTO alert_events (fingerprint, status, labels, annotations, starts_at, ends_at,"
        " value, source, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )


def _event_rows(events: Sequence[AlertEvent]) -> list[tuple[object, ...]]:
    return [
        (
            e.fingerprint,
            e.status,
            dump_json(dict(e.labels)),
            dump_json(dict(e.annotations)),
            to_db_time(e.starts_at),
            to_db_time(e.ends_at) if e.ends_at else None,
            e.value,
            e.source,
            to_db_time(e.at),
        )
        for e in events
    ]


def _event(row: aiosqlite.Row) -> AlertEvent:
    return AlertEvent(
        fingerprint=row["fingerprint"],
        status=row["status"],
        labels=load_json(row["labels"]),
        annotations=load_json(row["annotations"]),
        starts_at=from_db_time(row["starts_at"]),
        ends_at=from_db_time_opt(row["ends_at"]),
        at=from_db_time(row["at"]),
        value=row["value"],
        source=row["source"],
    )
