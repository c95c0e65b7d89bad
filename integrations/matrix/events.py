"""Pure helpers of the Matrix channel: event contents we send, what we read out of the events
we receive (threads, mentions, reactions, approvals), errors classified."""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Literal, Protocol

from nio import ErrorResponse

CHANNEL = "matrix"
TOKEN_DETAIL = "Matrix rejected the access token: rotate channels.matrix.access_token"
APPROVAL_KEY = "org.nightshift.approval_id"  # our own field on an approval prompt's content
REACTION_HINT = "React 👍 to approve or 👎 to deny."
MAX_BODY_BYTES = 60_000  # Synapse refuses events over 65,536 bytes (JSON and all)
APPROVE_KEYS = frozenset({"👍", "✅", "✔", "☑", "🆗"})
DENY_KEYS = frozenset({"👎", "❌", "✖", "🚫", "⛔"})
_VARIATION = re.compile("[\ufe0f\ufe0e\U0001f3fb-\U0001f3ff]")  # emoji presentation, skin tones
_SPACES = re.compile(r"[ \t]{2,}")
_QUIET_LOGGERS = ("nio", "peewee")  # nio logs every 429 / timeout / parse detail itself
ErrorKind = Literal["rate_limited", "token", "transient", "permanent"]


class SyncTokenStore(Protocol):
    """Where the channel keeps the sync position (``next_batch``) across restarts."""

    async def load(self) -> str | None: ...

    async def save(self, token: str) -> None: ...


class FileSyncTokenStore:
    """A sync token in one small file (written atomically), e.g. under the state directory."""

    def __init__(self, path: Path) -> None:
        self._path = path

    async def load(self) -> str | None:
        try:
            token = self._path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        return token or None

    async def save(self, token: str) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self._path.parent, prefix=".matrix-sync-")
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(token)
        os.replace(tmp, self._path)


def truncate(text: str, limit: int = MAX_BODY_BYTES) -> str:
    """Cut ``text`` to ``limit`` UTF-8 bytes, marking the cut."""
    raw = text.encode()
    if len(raw) <= limit:
        return text
    return raw[: limit - 3].decode(errors="ignore") + "…"


def text_content(text: str, *, thread: str | None = None) -> dict[str, Any]:
    """An m.text message, in ``thread`` (a thread root event id) when given."""
    content: dict[str, Any] = {"msgtype": "m.text", "body": truncate(text)}
    if thread:
        content["m.relates_to"] = {
            "rel_type": "m.thread",
            "event_id": thread,
            "is_falling_back": True,
            "m.in_reply_to": {"event_id": thread},
        }
    return content


def edit_content(event_id: str, text: str) -> dict[str, Any]:
    """An m.replace edit of our message ``event_id`` (clients without edits show "* text")."""
    body = truncate(text)
    return {
        "msgtype": "m.text",
        "body": f"* {body}",
        "m.new_content": {"msgtype": "m.text", "body": body},
        "m.relates_to": {"rel_type": "m.replace", "event_id": event_id},
    }


def approval_content(approval_id: str, text: str, *, thread: str | None) -> dict[str, Any]:
    """The prompt message; carries the approval id so a reaction maps back after a restart."""
    content = text_content(f"{text}\n\n{REACTION_HINT}", thread=thread)
    content[APPROVAL_KEY] = approval_id
    return content


def reaction_content(event_id: str, key: str) -> dict[str, Any]:
    return {"m.relates_to": {"rel_type": "m.annotation", "event_id": event_id, "key": key}}


def reaction_vote(key: str) -> bool | None:
    """True for an approving emoji, False for a denying one, None for any other."""
    bare = _VARIATION.sub("", key).strip()
    if bare in APPROVE_KEYS:
        return True
    if bare in DENY_KEYS:
        return False
    return None


def thread_of(content: dict[str, Any]) -> str | None:
    """The thread root of a message in a thread (m.relates_to rel_type m.thread)."""
    relation = content.get("m.relates_to")
    if isinstance(relation, dict) and relation.get("rel_type") == "m.thread":
        root = relation.get("event_id")
        return root if isinstance(root, str) else None
    return None


def is_edit(content: dict[str, Any]) -> bool:
    relation = content.get("m.relates_to")
    return isinstance(relation, dict) and relation.get("rel_type") == "m.replace"


def addressed_text(body: str, content: dict[str, Any], me: str, names: list[str]) -> str | None:
    """``body`` without the mention when it mentions us (user id, display name, or the
    ``m.mentions`` list), else None."""
    mentioned = me in _mentioned_ids(content)
    text = body
    for name in sorted({me, *[n for n in names if n]}, key=len, reverse=True):
        pattern = re.compile(rf"(?<![\w@]){re.escape(name)}(?!\w)\s*[:,]?", re.IGNORECASE)
        text, count = pattern.subn(" ", text)
        mentioned = mentioned or count > 0
    if not mentioned:
        return None
    return _SPACES.sub(" ", text).strip()


def _mentioned_ids(content: dict[str, Any]) -> list[str]:
    mentions = content.get("m.mentions")
    if isinstance(mentions, dict) and isinstance(mentions.get("user_ids"), list):
        return [str(user) for user in mentions["user_ids"]]
    return []


def error_kind(response: ErrorResponse) -> ErrorKind:
    """How the channel contract treats a homeserver error answer."""
    code = response.status_code or ""
    status = getattr(getattr(response, "transport_response", None), "status", None)
    if code == "M_LIMIT_EXCEEDED" or status == 429:
        return "rate_limited"
    if code in ("M_UNKNOWN_TOKEN", "M_MISSING_TOKEN") or status == 401:
        return "token"
    if isinstance(status, int) and 400 <= status < 500:
        return "permanent"
    if code in ("M_FORBIDDEN", "M_NOT_FOUND", "M_BAD_JSON", "M_NOT_JSON", "M_TOO_LARGE"):
        return "permanent"
    return "transient"  # 5xx, gateway pages, no answer we could parse


def describe(response: ErrorResponse) -> str:
    """An error answer in one line (no token: nio never puts it in the message)."""
    text = f"{response.status_code or 'error'}: {response.message or 'no detail'}"
    return json.dumps(text, ensure_ascii=False)[1:-1]


def quiet_library_loggers() -> None:
    """nio warns on every retry and parse quirk; the channel reports what matters itself."""
    for name in _QUIET_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.ERROR)
