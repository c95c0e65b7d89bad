"""Stored messages back in Chat Completions shape, mended so one bad turn cannot poison the rest.

Kimi (thinking on) answers 400 to the whole conversation when an earlier tool-call message has no
``reasoning_content`` or an empty one, and OpenAI-compatible servers refuse a tool message whose
call is unknown or a call left without an answer. A turn cut by a deadline, a crash or an older
build can leave any of these behind, so the replay mends them instead of failing every later turn.
"""

from __future__ import annotations

from typing import Any

from daemon.agent.model import REASONING_PLACEHOLDER
from memory.conversations import StoredMessage

__all__ = ["NO_RESULT", "replay", "to_api"]

NO_RESULT = "ERROR: no result: the turn ended before this call finished"


def to_api(message: StoredMessage) -> dict[str, Any]:
    """A stored message in the Chat Completions shape, reasoning_content kept for replay."""
    out: dict[str, Any] = {"role": message.role, "content": message.content or ""}
    if message.tool_calls:
        out["tool_calls"] = message.tool_calls
        out["reasoning_content"] = message.reasoning_content or REASONING_PLACEHOLDER
    elif message.reasoning_content is not None and message.role == "assistant":
        out["reasoning_content"] = message.reasoning_content
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    return out


def replay(history: list[StoredMessage]) -> list[dict[str, Any]]:
    """The history to send: every call answered right after its message, no orphan answers."""
    out: list[dict[str, Any]] = []
    waiting: list[str] = []  # call ids of the last tool-call message not yet answered
    for message in history:
        api = to_api(message)
        if message.role == "tool":
            if api.get("tool_call_id") in waiting:
                waiting.remove(api["tool_call_id"])
                out.append(api)
            continue  # an answer to no call (or answered twice) is dropped
        _answer_missing(out, waiting)
        waiting = [str(call.get("id")) for call in message.tool_calls or ()]
        out.append(api)
    _answer_missing(out, waiting)
    return out


def _answer_missing(out: list[dict[str, Any]], waiting: list[str]) -> None:
    out.extend({"role": "tool", "tool_call_id": cid, "content": NO_RESULT} for cid in waiting)
    waiting.clear()
