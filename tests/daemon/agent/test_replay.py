"""Replaying stored messages: placeholders for missing reasoning, every call answered once."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from daemon.agent.model import REASONING_PLACEHOLDER
from daemon.agent.replay import NO_RESULT, replay
from memory.conversations import StoredMessage
from tests.fakes.chat_completions import check_kimi_rules

_ids = iter(range(1, 1000))


def stored(role: str, content: str = "", **extra: Any) -> StoredMessage:
    fields: dict[str, Any] = {
        "reasoning_content": None,
        "tool_calls": None,
        "tool_call_id": None,
        "name": None,
        "summarized": False,
        **extra,
    }
    return StoredMessage(
        id=next(_ids),
        conversation_id=1,
        role=role,
        content=content,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        **fields,
    )


def call(cid: str) -> dict[str, Any]:
    return {"id": cid, "type": "function", "function": {"name": "echo", "arguments": "{}"}}


def test_a_broken_history_is_mended_into_one_the_api_accepts() -> None:
    history = [
        stored("user", "one"),
        stored("assistant", tool_calls=[call("a"), call("b")], reasoning_content=""),
        stored("tool", "result a", tool_call_id="a"),
        stored("tool", "stray", tool_call_id="zzz"),
        stored("user", "two"),
        stored("assistant", tool_calls=[call("c")]),
        stored("tool", "result c", tool_call_id="c"),
        stored("tool", "result c again", tool_call_id="c"),
        stored("assistant", "done", reasoning_content="fine"),
        stored("user", "three"),
    ]
    out = replay(history)
    body = {"model": "kimi-k2.6", "messages": out}
    assert check_kimi_rules(body) is None
    assert [(m["role"], m.get("tool_call_id")) for m in out] == [
        ("user", None),
        ("assistant", None),
        ("tool", "a"),
        ("tool", "b"),
        ("user", None),
        ("assistant", None),
        ("tool", "c"),
        ("assistant", None),
        ("user", None),
    ]
    assert out[1]["reasoning_content"] == REASONING_PLACEHOLDER and out[3]["content"] == NO_RESULT
    assert out[7]["reasoning_content"] == "fine"
