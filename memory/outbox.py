"""The durable outbox: messages to send, retried until delivered or failed for good."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import aiosqlite

from daemon.core.clock import Clock
from daemon.core.errors import RecordNotFound
from daemon.core.redact import redact
from memory._codec import from_db_time, from_db_time_opt, to_db_time
from memory.store import SqliteStore

__all__ = ["OutboxMessage", "OutboxRepo"]

log = logging.getLogger(__name__)

PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"

_COLUMNS = (
    "id, channel, target, thread, text, status, attempts, next_attempt_at, platform_id, error,"
    " created_at, delivered_at, dedupe_key"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxMessage:
    """A message queued for a channel; status is "pending", "delivered" or "failed"."""

    id: int
    channel: str
    target: str
    thread: str | None
    text: str
    status: str
    attempts: int
    next_attempt_at: datetime
    platform_id: str | None
    error: str | None
    created_at: datetime
    delivered_at: datetime | None
    dedupe_key: str | None


def _message(row: aiosqlite.Row) -> OutboxMessage:
    return OutboxMessage(
        id=row["id"],
        channel=row["channel"],
        target=row["target"],
        thread=row["thread"],
        text=row["text"],
        status=row["status"],
        attempts=row["attempts"],
        next_attempt_at=from_db_time(row["next_attempt_at"]),
        platform_id=row["platform_id"],
        error=row["error"],
        created_at=from_db_time(row["created_at"]),
        delivered_at=from_db_time_opt(row["delivered_at"]),
        dedupe_key=row["dedupe_key"],
    )


class OutboxRepo:
    """Queue, schedule and settle outgoing messages."""

    def __init__(self, store: SqliteStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        # Quiet hours: when a proactive message may go out (None = now). Set by the runtime.
        self.hold_until: Callable[[datetime], datetime | None] = lambda now: None

    async def enqueue(
        self,
        channel: str,
        target: str,
        text: str,
        *,
        thread: str | None = None,
        dedupe_key: str | None = None,
        proactive: bool = False,
    ) -> int:
        """Queue a message, due now; a repeated ``dedupe_key`` returns the first one's id.

        A ``proactive`` message (nobody asked for it, and it is not critical) waits out quiet
        hours; answers to people and critical notices never wait.
        """
        text = redact(text)  # the last stop before a chat platform
        moment = self._clock.now()
        now = to_db_time(moment)
        held = self.hold_until(moment) if proactive else None
        due = to_db_time(held) if held is not None else now
        cur = await self._store.execute_write(
            "INSERT INTO outbox (channel, target, thread, text, next_attempt_at, created_at,"
            " dedupe_key) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (dedupe_key) DO NOTHING",
            (channel, target, thread, text, due, now, dedupe_key),
        )
        inserted = cur.rowcount > 0
        message_id = cur.lastrowid
        if not inserted:  # rows are never deleted, so the first one is still there
            async with self._store.write() as db:
                rows = list(
                    await db.execute_fetchall(
                        "SELECT id FROM outbox WHERE dedupe_key = ?", (dedupe_key,)
                    )
                )
            message_id = rows[0]["id"]
            log.info("outbox: dedupe key %r already queued as %d", dedupe_key, message_id)
        assert message_id is not None
        return message_id

    async def platform_id(self, dedupe_key: str) -> str | None:
        """The platform id of the delivered message queued under ``dedupe_key``, if any."""
        async with self._store.read() as db:
            rows = list(
                await db.execute_fetchall(
                    "SELECT platform_id FROM outbox WHERE dedupe_key = ? AND status = 'delivered'",
                    (dedupe_key,),
                )
            )
        return str(rows[0][0]) if rows and rows[0][0] else None

    async def due(
        self, channel: str, now: datetime | None = None, limit: int = 50, *, after_id: int = 0
    ) -> list[OutboxMessage]:
        """Pending messages for ``channel`` whose next attempt is due, oldest first."""
        when = to_db_time(now if now is not None else self._clock.now())
        async with self._store.read() as db:
            rows = await db.execute_fetchall(
                f"SELECT {_COLUMNS} FROM outbox WHERE channel = ? AND status = 'pending'"
                " AND next_attempt_at <= ? AND id > ? ORDER BY id LIMIT ?",
                (channel, when, after_id, limit),
            )
        return [_message(row) for row in rows]

    async def retry_now(self, channel: str) -> int:
        """The channel recovered: every pending message waiting for a retry is due now."""
        now = to_db_time(self._clock.now())
        cur = await self._store.execute_write(
            "UPDATE outbox SET next_attempt_at = ?"
            " WHERE channel = ? AND status = 'pending' AND next_attempt_at > ?",
            (now, channel, now),
        )
        return cur.rowcount

    async def _update(self, message_id: int, sql: str, params: tuple[object, ...]) -> None:
        cur = await self._store.execute_write(sql, (*params, message_id))
        if cur.rowcount == 0:
            raise RecordNotFound("outbox message", message_id)

    async def mark_delivered(self, message_id: int, platform_id: str | None) -> None:
        """The channel accepted the message; ``platform_id`` is its id there, if any."""
        await self._update(
            message_id,
            "UPDATE outbox SET status = 'delivered', platform_id = ?, delivered_at = ?,"
            " attempts = attempts + 1 WHERE id = ?",
            (platform_id, to_db_time(self._clock.now())),
        )

    async def mark_retry(self, message_id: int, error: str, next_attempt_at: datetime) -> None:
        """An attempt failed; count it and try again at ``next_attempt_at``."""
        await self._update(
            message_id,
            "UPDATE outbox SET attempts = attempts + 1, error = ?, next_attempt_at = ?"
            " WHERE id = ?",
            (redact(error), to_db_time(next_attempt_at)),
        )

    async def mark_failed(self, message_id: int, error: str) -> None:
        """An attempt failed for good: count it and stop retrying (terminal)."""
        error = redact(error)
        await self._update(
            message_id,
            "UPDATE outbox SET status = 'failed', attempts = attempts + 1, error = ? WHERE id = ?",
            (error,),
        )
        log.warning("outbox message %d failed for good: %s", message_id, error)

    async def get(self, message_id: int) -> OutboxMessage:
        """The message with this id; RecordNotFound if there is none."""
        async with self._store.read() as db:
            rows = list(
                await db.execute_fetchall(
                    f"SELECT {_COLUMNS} FROM outbox WHERE id = ?", (message_id,)
                )
            )
        if not rows:
            raise RecordNotFound("outbox message", message_id)
        return _message(rows[0])

    async def depth_by_channel(self) -> dict[str, int]:
        """Pending messages per channel (channels with none are absent)."""
        async with self._store.read() as db:
            rows = await db.execute_fetchall(
                "SELECT channel, COUNT(*) FROM outbox WHERE status = 'pending'"
                " GROUP BY channel ORDER BY channel"
            )
        return {row[0]: row[1] for row in rows}
