"""Pure helpers of the Telegram channel: parse updates at the edge, split text, describe
errors."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import timedelta

from telegram import (
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    MessageEntity,
)
from telegram.error import Conflict, InvalidToken, RetryAfter, TelegramError

from integrations.base import ApprovalAnswer, InboundMessage

CHANNEL = "telegram"
MAX_MESSAGE = 4096  # Telegram's limit, counted here in UTF-16 code units to be safe
MAX_CALLBACK_DATA = 64  # bytes
APPROVE, DENY = "approve", "deny"
_CALLBACK = re.compile(r"^ns:(approve|deny):(.+)$", re.DOTALL)
_SPACES = re.compile(r"[ \t]{2,}")
TOKEN_DETAIL = "Telegram rejected the bot token: rotate channels.telegram.bot_token"
# httpx logs request URLs (which contain the token) at INFO, PTB its calls at DEBUG.
_QUIET_LOGGERS = ("httpx", "httpcore", "telegram")
# With max_retries=0 AIORateLimiter logs every 429 with a traceback; the channel reports it.
_RATE_LIMITER_LOGGER = "telegram.ext.AIORateLimiter"


@dataclass(frozen=True, slots=True, kw_only=True)
class BotIdentity:
    """Who we are, from getMe."""

    id: int
    username: str


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def split_text(text: str, limit: int = MAX_MESSAGE) -> list[str]:
    """Split into parts of at most ``limit`` UTF-16 units, preferring newlines, then spaces."""
    parts: list[str] = []
    rest = text
    while utf16_len(rest) > limit:
        cut = _fit(rest, limit)
        window = rest[:cut]
        at = window.rfind("\n")
        if at <= cut // 2:
            at = window.rfind(" ")
        if at <= cut // 2:  # no good boundary: hard cut
            parts.append(rest[:cut])
            rest = rest[cut:]
        else:  # the separator itself is replaced by the message boundary
            parts.append(rest[:at])
            rest = rest[at + 1 :]
    if rest or not parts:
        parts.append(rest)
    return parts


def _fit(text: str, limit: int) -> int:
    """The longest prefix (in characters) of ``text`` within ``limit`` UTF-16 units."""
    used = 0
    for index, char in enumerate(text):
        used += 2 if ord(char) > 0xFFFF else 1
        if used > limit:
            return index
    return len(text)


def truncate(text: str, limit: int = MAX_MESSAGE) -> str:
    """Cut ``text`` to one message, marking the cut."""
    if utf16_len(text) <= limit:
        return text
    return text[: _fit(text, limit - 1)] + "…"


def approval_keyboard(approval_id: str) -> InlineKeyboardMarkup:
    """Approve / Deny buttons; raises ValueError if the id does not fit callback_data."""
    approve, deny = f"ns:{APPROVE}:{approval_id}", f"ns:{DENY}:{approval_id}"
    if len(approve.encode()) > MAX_CALLBACK_DATA:
        raise ValueError(f"approval id too long for Telegram callback data: {approval_id!r}")
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton("✅ Approve", callback_data=approve),
                InlineKeyboardButton("❌ Deny", callback_data=deny),
            ]
        ]
    )


def approval_answer(query: CallbackQuery) -> ApprovalAnswer | None:
    """The answer a button press carries, or None for data that is not ours."""
    match = _CALLBACK.match(query.data or "")
    if match is None:
        return None
    user = query.from_user
    return ApprovalAnswer(
        channel=CHANNEL,
        approval_id=match.group(2),
        approved=match.group(1) == APPROVE,
        user_id=str(user.id),
        user_name=_name(user.username, user.full_name),
    )


def inbound_message(
    message: Message, me: BotIdentity, *, require_mention: bool
) -> InboundMessage | None:
    """Parse a message addressed to us; None for what we must ignore.

    Ignored: no text, other bots (and ourselves), channel posts, and in groups (when
    ``require_mention``) anything that neither mentions ``@me`` nor replies to one of our messages.
    The mention is stripped from the text.
    """
    text = message.text or message.caption or ""
    user = message.from_user
    if not text.strip() or user is None or user.is_bot:
        return None
    chat = message.chat
    direct = chat.type == chat.PRIVATE
    if chat.type not in (chat.PRIVATE, chat.GROUP, chat.SUPERGROUP):
        return None
    if not direct and require_mention and not _addressed_to(message, me):
        return None
    text = _strip_mention(text, me.username) if me.username else text
    if not text:
        return None
    return InboundMessage(
        channel=CHANNEL,
        sender_id=str(user.id),
        sender_name=_name(user.username, user.full_name),
        room=str(chat.id),
        text=text,
        thread=str(message.message_thread_id) if message.is_topic_message else None,
        direct=direct,
        message_id=str(message.message_id),
    )


def _addressed_to(message: Message, me: BotIdentity) -> bool:
    handle = f"@{me.username}".lower()
    kinds: list[str | None] = [MessageEntity.MENTION, MessageEntity.BOT_COMMAND]
    found = {**message.parse_entities(kinds), **message.parse_caption_entities(kinds)}
    for entity, value in found.items():
        value = value.lower()
        if value == handle or (entity.type == MessageEntity.BOT_COMMAND and value.endswith(handle)):
            return True
    reply = message.reply_to_message
    if reply is None or reply.from_user is None or reply.from_user.id != me.id:
        return False
    # In a forum topic every message "replies" to the topic's first message: not a real reply.
    return not (message.is_topic_message and reply.message_id == message.message_thread_id)


def _strip_mention(text: str, username: str) -> str:
    stripped = re.sub(rf"@{re.escape(username)}\b", "", text, flags=re.IGNORECASE)
    return _SPACES.sub(" ", stripped).strip()


def _name(username: str | None, full_name: str) -> str:
    return f"@{username}" if username else full_name


def retry_after_seconds(exc: RetryAfter) -> float:
    value: object = exc.retry_after  # a timedelta with PTB_TIMEDELTA=true, else int
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)  # type: ignore[arg-type]


def describe_error(exc: BaseException, token: str) -> str:
    """An error's text for logs and health, never containing the token."""
    if isinstance(exc, InvalidToken):  # Bot.initialize puts the token in this message
        return TOKEN_DETAIL
    text = exc.message if isinstance(exc, TelegramError) else (str(exc) or type(exc).__name__)
    return text.replace(token, "<token>") if token else text


SLOW_RETRY_SECONDS = 3.0  # a rejected token or a 409: checked again every few seconds


def poll_failure(exc: BaseException, backoff: float, token: str) -> tuple[str, float]:
    """Why a getUpdates/getMe failed (for health) and how long to wait before trying again."""
    if isinstance(exc, InvalidToken):
        return TOKEN_DETAIL, max(backoff, SLOW_RETRY_SECONDS)
    if isinstance(exc, RetryAfter):
        delay = max(backoff, retry_after_seconds(exc))
        return f"rate limited by Telegram for {delay:.0f} s", delay
    if isinstance(exc, Conflict):
        return (
            "another client polls this bot token (409 Conflict): run one per bot",
            max(backoff, SLOW_RETRY_SECONDS),
        )
    if isinstance(exc, TelegramError):
        return f"cannot poll Telegram: {describe_error(exc, token)}", backoff
    return f"poll loop error: {describe_error(exc, token)}", backoff


def quiet_library_loggers() -> None:
    """Keep the token (in request URLs) out of the logs, whatever the root level."""
    for name in _QUIET_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level < logging.WARNING:  # NOTSET too: it would inherit DEBUG from root
            logger.setLevel(logging.WARNING)
    logging.getLogger(_RATE_LIMITER_LOGGER).setLevel(logging.CRITICAL)
