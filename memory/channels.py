"""Per-channel memory: which inbound messages were already taken, and small state values."""

from __future__ import annotations

from daemon.core.clock import Clock
from memory._codec import to_db_time
from memory.store import SqliteStore

__all__ = ["ChannelStateRepo", "InboundRepo"]


class InboundRepo:
    """Remembers inbound message ids so a redelivered message is handled once."""

    def __init__(self, store: SqliteStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def first_time(self, channel: str, room: str, message_id: str) -> bool:
        """Record the message; False if it was seen before."""
        cur = await self._store.execute_write(
            "INSERT OR IGNORE INTO inbound_seen (channel, room, message_id, seen_at)"
            " VALUES (?, ?, ?, ?)",
            (channel, room, message_id, to_db_time(self._clock.now())),
        )
        return cur.rowcount == 1


class ChannelStateRepo:
    """Small key/value state per channel (e.g. a sync token)."""

    def __init__(self, store: SqliteStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def get(self, channel: str, key: str) -> str | None:
        async with self._store.read() as db:
            rows = await db.execute_fetchall(
                "SELECT value FROM channel_state WHERE channel = ? AND key = ?", (channel, key)
            )
        rows = list(rows)
        return str(rows[0][0]) if rows else None

    async def set(self, channel: str, key: str, value: str) -> None:
        await self._store.execute_write(
            "INSERT INTO channel_state (channel, key, value, updated_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (channel, key) DO UPDATE SET value = excluded.value,"
            " updated_at = excluded.updated_at",
            (channel, key, value, to_db_time(self._clock.now())),
        )

    async def items(
        self, channel: str | None = None, prefix: str = ""
    ) -> list[tuple[str, str, str]]:
        """(channel, key, value) rows, optionally for one channel and a key prefix."""
        query = "SELECT channel, key, value FROM channel_state WHERE substr(key, 1, ?) = ?"
        params: list[object] = [len(prefix), prefix]
        if channel is not None:
            query += " AND channel = ?"
            params.append(channel)
        async with self._store.read() as db:
            rows = await db.execute_fetchall(query + " ORDER BY channel, key", params)
        return [(str(r[0]), str(r[1]), str(r[2])) for r in rows]
