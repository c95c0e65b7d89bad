"""Conversations and their messages, stored exactly as Chat Completions messages."""

from __future__ import annotations

import builtins
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiosqlite

from daemon.core.clock import Clock
from daemon.core.errors import RecordNotFound
from daemon.core.redact import redact, redact_data
from memory._codec import dump_json, from_db_time, load_json, to_db_time
from memory.store import SqliteStore

__all__ = ["Conversation", "ConversationRepo", "StoredMessage"]

log = logging.getLogger(__name__)

_CONVERSATION_COLUMNS = "id, channel, key, title, summary, created_at"
_MESSAGE_COLUMNS = (
    "id, conversation_id, role, content, reasoning_content, tool_calls, tool_call_id, name, "
    "created_at, summarized"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Conversation:
    """A conversation on one channel, e.g. a Slack thread or a Telegram chat."""

    id: int
    channel: str
    key: str
    title: str
    summary: str
    created_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredMessage:
    """One Chat Completions message as stored."""

    id: int
    conversation_id: int
    role: str
    content: str | None
    reasoning_content: str | None
    tool_calls: list[dict[str, Any]] | None
    tool_call_id: str | None
    name: str | None
    created_at: datetime
    summarized: bool


def _redact(text: str | None) -> str | None:
    return None if text is None else redact(text)


def _conversation(row: aiosqlite.Row) -> Conversation:
    return Conversation(
        id=row["id"],
        channel=row["channel"],
        key=row["key"],
        title=row["title"],
        summary=row["summary"],
        created_at=from_db_time(row["created_at"]),
    )


def _message(row: aiosqlite.Row) -> StoredMessage:
    return StoredMessage(
        id=row["id"],
        conversation_id=row["conversation_id"],
        role=row["role"],
        content=row["content"],
        reasoning_content=row["reasoning_content"],
        tool_calls=load_json(row["tool_calls"]),
        tool_call_id=row["tool_call_id"],
        name=row["name"],
        created_at=from_db_time(row["created_at"]),
        summarized=bool(row["summarized"]),
    )


class ConversationRepo:
    """Conversations keyed by (channel, key) and their message history."""

    def __init__(self, store: SqliteStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def get_or_create(self, channel: str, key: str, title: str = "") -> Conversation:
        """The conversation for (channel, key), created with ``title`` if new."""
        sql = f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE channel = ? AND key = ?"
        async with self._store.read() as db:
            rows = list(await db.execute_fetchall(sql, (channel, key)))
        if rows:
            return _conversation(rows[0])
        now = to_db_time(self._clock.now())
        async with self._store.write() as db:
            rows = list(
                await db.execute_fetchall(
                    "INSERT INTO conversations (channel, key, title, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (channel, key) DO NOTHING"
                    f" RETURNING {_CONVERSATION_COLUMNS}",
                    (channel, key, title, now, now),
                )
            )
            if not rows:  # created meanwhile by another writer
                rows = list(await db.execute_fetchall(sql, (channel, key)))
        return _conversation(rows[0])

    async def get(self, conversation_id: int) -> Conversation:
        """The conversation with this id; RecordNotFound if there is none."""
        async with self._store.read() as db:
            rows = list(
                await db.execute_fetchall(
                    f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE id = ?",
                    (conversation_id,),
                )
            )
        if not rows:
            raise RecordNotFound("conversation", conversation_id)
        return _conversation(rows[0])

    async def append(
        self,
        conversation_id: int,
        role: str,
        content: str | None,
        *,
        reasoning_content: str | None = None,
        tool_calls: builtins.list[dict[str, Any]] | None = None,
        tool_call_id: str | None = None,
        name: str | None = None,
    ) -> int:
        """Store a message, secrets redacted, and return its id; RecordNotFound for an unknown
        conversation."""
        now = to_db_time(self._clock.now())
        content, reasoning_content = _redact(content), _redact(reasoning_content)
        calls = dump_json(redact_data(tool_calls))
        async with self._store.write() as db:
            cur = await db.execute(
                "UPDATE conversations SET updated_at = ? WHERE id = ?", (now, conversation_id)
            )
            if cur.rowcount == 0:
                raise RecordNotFound("conversation", conversation_id)
            cur = await db.execute(
                "INSERT INTO messages (conversation_id, role, content, reasoning_content,"
                " tool_calls, tool_call_id, name, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (conversation_id, role, content, reasoning_content, calls, tool_call_id, name, now),
            )
            message_id = cur.lastrowid
        assert message_id is not None
        return message_id

    async def recent(self, conversation_id: int, limit: int = 40) -> builtins.list[StoredMessage]:
        """Up to ``limit`` latest unsummarized messages, oldest first.

        The window never starts with a ``tool`` message whose assistant call was cut off, since
        Chat Completions APIs reject such orphans.
        """
        async with self._store.read() as db:
            rows = await db.execute_fetchall(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages"
                " WHERE conversation_id = ? AND summarized = 0 ORDER BY id DESC LIMIT ?",
                (conversation_id, limit),
            )
        messages = [_message(row) for row in reversed(list(rows))]
        while messages and messages[0].role == "tool":
            messages.pop(0)
        return messages

    async def unsummarized_span(
        self, conversation_id: int, up_to_message_id: int
    ) -> tuple[int, int]:
        """(first id, count) of the unsummarized messages up to ``up_to_message_id``: what a
        :meth:`mark_summarized` to that id would fold, orphans not loaded by :meth:`recent`
        included. (0, 0) when there are none."""
        async with self._store.read() as db:
            rows = list(
                await db.execute_fetchall(
                    "SELECT coalesce(min(id), 0), count(*) FROM messages"
                    " WHERE conversation_id = ? AND id <= ? AND summarized = 0",
                    (conversation_id, up_to_message_id),
                )
            )
        return int(rows[0][0]), int(rows[0][1])

    async def mark_summarized(
        self, conversation_id: int, up_to_message_id: int, summary: str
    ) -> int:
        """Fold messages up to and including ``up_to_message_id`` into ``summary``.

        One transaction: the summary replaces the conversation's summary and those messages
        leave :meth:`recent`. Returns how many messages were marked.
        """
        summary = redact(summary)
        async with self._store.write() as db:
            cur = await db.execute(
                "UPDATE conversations SET summary = ? WHERE id = ?", (summary, conversation_id)
            )
            if cur.rowcount == 0:
                raise RecordNotFound("conversation", conversation_id)
            cur = await db.execute(
                "UPDATE messages SET summarized = 1"
                " WHERE conversation_id = ? AND id <= ? AND summarized = 0",
                (conversation_id, up_to_message_id),
            )
            marked = cur.rowcount
        log.info("conversation %d: summarized %d messages", conversation_id, marked)
        return marked

    async def list(self, limit: int = 50) -> builtins.list[Conversation]:
        """Conversations, most recently active first."""
        async with self._store.read() as db:
            rows = await db.execute_fetchall(
                f"SELECT {_CONVERSATION_COLUMNS} FROM conversations"
                " ORDER BY updated_at DESC, id DESC LIMIT ?",
                (limit,),
            )
        return [_conversation(row) for row in rows]
