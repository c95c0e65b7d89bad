"""Slack helpers without channel state: escaping, splitting, Block Kit for approvals, parsing
raw payloads, mapping Web API errors, closing an SDK socket client.

Only :func:`close_socket_client` does I/O; :mod:`integrations.slack.channel` feeds the rest
raw JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import OrderedDict
from collections.abc import Awaitable, Hashable
from dataclasses import dataclass
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from daemon.core.errors import DeliveryError, NightshiftError, PermanentDeliveryError
from integrations.base import ApprovalAnswer, ApprovalPrompt, InboundMessage
from integrations.inbound import SeenIds

log = logging.getLogger(__name__)

APPROVE_ACTION = "nightshift_approve"
DENY_ACTION = "nightshift_deny"
MAX_TEXT = 3900  # Slack advises <= 4,000 characters per message (hard truncation at 40,000)
MAX_CHUNKS = 10  # a longer text is cut, with a marker, rather than flooding the room
SECTION_LIMIT = 3000  # Block Kit section text limit
TRUNCATED = "\n…(truncated)"
HUMAN_SUBTYPES = frozenset({"thread_broadcast", "file_share"})  # people, not edits or joins
AUTH_RETRY_AFTER = 60.0  # retry_after for sends while a token is rejected
CLOSE_TIMEOUT = 2.0  # seconds to close a socket politely before dropping it
AUTH_ERRORS = frozenset(
    {"invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired"}
)
PERMANENT_ERRORS = frozenset(
    {
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "msg_too_long",
        "no_text",
        "invalid_blocks",
        "message_not_found",
        "cant_update_message",
        "edit_window_closed",
        "restricted_action",
        "invalid_arguments",
        "user_not_found",
        "missing_scope",
    }
)


def escape(text: str) -> str:
    """Escape &, < and > so model output cannot ping (<!channel>, <@U…>) or forge links."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    """Cut escaped text to ``limit`` without splitting an ``&amp;``-style entity."""
    if len(text) <= limit:
        return text
    cut = text[: limit - len(TRUNCATED)]
    amp = cut.rfind("&", max(0, len(cut) - 5))
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + TRUNCATED


def unescape(text: str) -> str:
    """Slack's inbound entities back to characters (links and mentions stay as Slack wrote)."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def one_message(text: str) -> str:
    """Escaped text cut to one message (edits and prompts are never split)."""
    return _cut(escape(text), MAX_TEXT)


def split_text(text: str, limit: int = MAX_TEXT, max_chunks: int = MAX_CHUNKS) -> list[str]:
    """Split escaped text into chunks of at most ``limit`` characters, preferring line breaks.

    Past ``max_chunks`` the last chunk is cut with a visible "(truncated)" marker.
    """
    if len(text) <= limit:
        return [text]
    chunks: list[str] = []
    rest = text
    while rest and len(chunks) < max_chunks - 1:
        if len(rest) <= limit:
            chunks.append(rest)
            return chunks
        at = rest.rfind("\n", limit // 2, limit)
        if at == -1:
            at = rest.rfind(" ", limit // 2, limit)
        if at == -1:
            at = limit
            amp = rest.rfind("&", at - 5, at)
            if amp != -1 and ";" not in rest[amp:at]:
                at = amp
        chunks.append(rest[:at].rstrip())
        rest = rest[at:].lstrip("\n ")
    if rest:
        chunks.append(_cut(rest, limit))
    return chunks


def approval_blocks(prompt: ApprovalPrompt) -> list[dict[str, Any]]:
    """A section with the escaped request and an actions block with approve/deny buttons."""
    return [
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": _cut(escape(prompt.text), SECTION_LIMIT)},
        },
        {
            "type": "actions",
            "block_id": f"nightshift_approval:{prompt.approval_id}"[:255],
            "elements": [
                {
                    "type": "button",
                    "action_id": APPROVE_ACTION,
                    "text": {"type": "plain_text", "text": "Approve"},
                    "style": "primary",
                    "value": prompt.approval_id,
                },
                {
                    "type": "button",
                    "action_id": DENY_ACTION,
                    "text": {"type": "plain_text", "text": "Deny"},
                    "style": "danger",
                    "value": prompt.approval_id,
                },
            ],
        },
    ]


def closed_approval_blocks(prompt: ApprovalPrompt, outcome: str) -> list[dict[str, Any]]:
    """The prompt again, with the buttons replaced by the outcome."""
    return [
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": _cut(escape(prompt.text), SECTION_LIMIT)},
        },
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": _cut(escape(outcome), SECTION_LIMIT)}],
        },
    ]


class Lru:
    """A bounded map keeping the most recent keys (redelivery de-duplication, threads, names)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._keys: OrderedDict[Hashable, Any] = OrderedDict()

    def __contains__(self, key: Hashable) -> bool:
        return key in self._keys

    def get(self, key: Hashable) -> Any:
        if key in self._keys:
            self._keys.move_to_end(key)
        return self._keys.get(key)

    def add(self, key: Hashable, value: Any = None) -> bool:
        """Remember ``key`` (with ``value``); return False if it was already known."""
        known = key in self._keys
        self._keys[key] = value
        self._keys.move_to_end(key)
        if len(self._keys) > self._size:
            self._keys.popitem(last=False)
        return not known


class InboundFilter:
    """Decides which events are for us, once: de-duplicated by ``event_id`` and by post.

    A redelivery (``retry_attempt`` > 0) reuses the event id; one post can also arrive under two
    event ids (``app_mention`` and ``message``): both repeats are dropped.
    """

    def __init__(self, size: int) -> None:
        self.seen: SeenIds[tuple[str, ...]] = SeenIds(size)
        self.threads = Lru(size)
        self.bot_user_id = self.bot_id = ""

    def event(self, payload: dict[str, Any]) -> ParsedEvent | None:
        event, event_id = payload.get("event"), payload.get("event_id")
        if not isinstance(event, dict):
            log.warning("ignoring an events_api payload without event")
            return None
        if isinstance(event_id, str) and not self.seen.add(("event", event_id)):
            log.debug("dropping redelivered Slack event %s", event_id)
            return None
        parsed = parse_event(
            event, bot_user_id=self.bot_user_id, bot_id=self.bot_id, threads=self.threads
        )
        if parsed is None or not self.seen.add(("message", parsed.room, parsed.ts)):
            return None
        if not parsed.direct and parsed.thread:
            self.threads.add((parsed.room, parsed.thread))
        return parsed


@dataclass(frozen=True, slots=True, kw_only=True)
class ParsedEvent:
    """A person's message, before the sender's display name is looked up."""

    user_id: str
    room: str
    text: str
    thread: str | None
    direct: bool
    ts: str

    def to_message(self, channel: str, sender_name: str) -> InboundMessage:
        return InboundMessage(
            channel=channel,
            sender_id=self.user_id,
            sender_name=sender_name,
            room=self.room,
            text=self.text,
            thread=self.thread,
            direct=self.direct,
            message_id=f"{self.room}:{self.ts}",
        )


def _mention_pattern(bot_user_id: str) -> re.Pattern[str]:
    return re.compile(rf"<@{re.escape(bot_user_id)}(?:\|[^>]*)?>\s*[:,]?\s*")


def parse_event(
    event: dict[str, Any], *, bot_user_id: str, bot_id: str, threads: Lru
) -> ParsedEvent | None:
    """Turn an Events API ``event`` into a message for us, or None if it is not one.

    Accepted: DMs (``channel_type`` "im"), ``app_mention`` (a top-level mention starts a thread),
    channel messages that mention us, and replies in threads we take part in (``threads``).
    Ignored: bots (our own posts come back), edits/joins/other subtypes, everything else.
    """
    kind = event.get("type")
    if kind not in ("message", "app_mention"):
        return None
    if event.get("bot_id") or event.get("bot_profile") or event.get("subtype") == "bot_message":
        return None
    if event.get("subtype") and event.get("subtype") not in HUMAN_SUBTYPES:
        return None
    user, room, ts = event.get("user"), event.get("channel"), event.get("ts")
    text = event.get("text")
    if not isinstance(user, str) or not isinstance(room, str) or not isinstance(ts, str):
        return None
    if user == bot_user_id or (bot_id and event.get("bot_id") == bot_id):
        return None
    text = text if isinstance(text, str) else ""
    thread_ts = event.get("thread_ts") if isinstance(event.get("thread_ts"), str) else None
    if kind == "message" and event.get("channel_type") == "im":
        return ParsedEvent(
            user_id=user,
            room=room,
            text=unescape(text).strip(),
            thread=thread_ts,
            direct=True,
            ts=ts,
        )
    pattern = _mention_pattern(bot_user_id) if bot_user_id else None
    mentioned = kind == "app_mention" or bool(pattern and pattern.search(text))
    if not mentioned and not (thread_ts and (room, thread_ts) in threads):
        return None
    if pattern is not None:
        text = pattern.sub("", text)
    thread = thread_ts or (ts if mentioned else None)
    return ParsedEvent(
        user_id=user, room=room, text=unescape(text).strip(), thread=thread, direct=False, ts=ts
    )


def parse_action(payload: dict[str, Any], channel: str) -> list[ApprovalAnswer]:
    """The approve/deny presses in an interactive ``block_actions`` payload (others ignored)."""
    if payload.get("type") != "block_actions":
        return []
    user = payload.get("user")
    if not isinstance(user, dict) or not isinstance(user.get("id"), str):
        return []
    name = user.get("username") or user.get("name") or user["id"]
    container = payload.get("container")
    room = container.get("channel_id") if isinstance(container, dict) else None
    found: list[ApprovalAnswer] = []
    for action in payload.get("actions") or []:
        if not isinstance(action, dict):
            continue
        action_id, value = action.get("action_id"), action.get("value")
        if action_id in (APPROVE_ACTION, DENY_ACTION) and isinstance(value, str) and value:
            found.append(
                ApprovalAnswer(
                    channel=channel,
                    approval_id=value,
                    approved=action_id == APPROVE_ACTION,
                    user_id=user["id"],
                    user_name=str(name),
                    room=room if isinstance(room, str) else "",
                )
            )
    return found


def token_detail(which: str, error: str) -> str:
    """What the operator sees when Slack rejects the "bot" or "app" token."""
    token = "bot_token" if which == "bot" else "app_token"
    kind = "bot token" if which == "bot" else "app-level token"
    return f"Slack rejected the {kind} ({error}): rotate channels.slack.{token}"


class TokenRejected(NightshiftError):
    """Slack rejected a token: the operator must rotate it."""

    def __init__(self, which: str, error: str) -> None:
        super().__init__(token_detail(which, error))
        self.which = which


async def token_checked(which: str, call: Awaitable[AsyncSlackResponse]) -> AsyncSlackResponse:
    """Await a token check; a rejected "bot" or "app" token becomes :class:`TokenRejected`."""
    try:
        return await call
    except SlackApiError as exc:
        error = exc.response.get("error")
        if error in AUTH_ERRORS:
            raise TokenRejected(which, str(error)) from exc
        raise


def map_api_error(exc: SlackApiError) -> tuple[Exception, str | None]:
    """The delivery error for a failed Web API call, and the health detail if a token is bad.

    429 → DeliveryError(retry_after); a rejected token → DeliveryError (messages wait for a new
    token); unknown channel and other refusals → PermanentDeliveryError; the rest transient.
    """
    status = getattr(exc.response, "status_code", 0)
    error = str(exc.response.get("error") or f"HTTP {status}")
    if status == 429 or error == "ratelimited":
        headers = getattr(exc.response, "headers", None) or {}
        raw = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
        try:
            retry_after = float(raw) if raw is not None else 1.0
        except ValueError:
            retry_after = 1.0
        return DeliveryError(
            f"Slack rate limit: retry in {retry_after:g} s", retry_after=retry_after
        ), None
    if error in AUTH_ERRORS:
        detail = token_detail("bot", error)
        return DeliveryError(detail, retry_after=AUTH_RETRY_AFTER), detail
    if error in PERMANENT_ERRORS:
        return PermanentDeliveryError(f"Slack refused the message: {error}"), None
    return DeliveryError(f"Slack API error: {error}"), None


async def close_socket_client(client: SocketModeClient) -> None:
    """Close a SocketModeClient and wait for its tasks (a deaf peer cannot hold us up)."""
    client.closed = True
    try:
        await asyncio.wait_for(client.close(), CLOSE_TIMEOUT)  # type: ignore[no-untyped-call]
    except Exception as exc:  # noqa: BLE001 - we drop it either way
        log.debug("closing a Slack socket failed: %s", exc)
    tasks = [client.message_processor, client.current_session_monitor, client.message_receiver]
    for task in tasks:
        if task is not None:
            task.cancel()
    await asyncio.gather(*(t for t in tasks if t is not None), return_exceptions=True)
    if not client.aiohttp_client_session.closed:
        with contextlib.suppress(Exception):
            await client.aiohttp_client_session.close()


class QuietSdkLog(logging.Filter):
    """One line per SDK event: its retry loops log ERROR with a traceback every few seconds.

    Our watchdog reports and repairs what they are about, so they become WARNING, no traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info, record.exc_text = None, None
        return True
