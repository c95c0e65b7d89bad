"""The prompt built for the cache: a stable prefix between compactions, and no lost messages.

The real agent loop runs against the fake Kimi server with its prefix cache on, over a real
SQLite store.
"""

from __future__ import annotations

import json
from typing import Any

from daemon.agent.prompts import SUMMARISE_ABOVE
from memory.usage import UsageRepo
from tests.daemon.agent.test_loop import Harness, harness_factory  # noqa: F401
from tests.fakes.chat_completions import FakeChatServer, PrefixCache, Reply


def is_summary(body: dict[str, Any]) -> bool:
    return bool(body["messages"][-1]["content"] == SUMMARISE_ABOVE)


class OpsChat:
    """Each turn: one tool call, then an answer; summaries answered (or failed) on demand."""

    def __init__(self) -> None:
        self.summaries: list[Reply] = []  # played in order for summary requests, then a default
        self.turn = 0

    def __call__(self, body: dict[str, Any]) -> Reply:
        if is_summary(body):
            if self.summaries:
                return self.summaries.pop(0)
            return Reply(content=f"summary up to turn {self.turn}", reasoning=None)
        if body["messages"][-1]["role"] == "user":
            self.turn += 1
            args = json.dumps({"text": f"disk usage of /var on host-{self.turn}"})
            return Reply(reasoning=f"look at turn {self.turn}", tool_calls=[("echo", args)])
        return Reply(content=f"answer {self.turn}: /var is at {40 + self.turn % 50} %")


def rendered(message: dict[str, Any]) -> str:
    return json.dumps(message, sort_keys=True, ensure_ascii=False)


async def test_the_prefix_stays_byte_identical_between_compactions(
    harness_factory: Any,  # noqa: F811
    fake_llm: FakeChatServer,
) -> None:
    fake_llm.cache = PrefixCache()
    chat = OpsChat()
    fake_llm.responder = chat
    h: Harness = await harness_factory(history_messages=24, keep_recent_messages=8)
    for turn in range(40):
        result = await h.ask(f"question {turn}: how full is /var?")
        assert result.status == "ok", result
    agent = [r for r in fake_llm.requests if not is_summary(r)]
    compactions = len(fake_llm.requests) - len(agent)
    assert 3 <= compactions <= 8, "history compacts in a few big chunks, not every turn"
    breaks = 0
    for before, after in zip(agent, agent[1:], strict=False):
        old = [rendered(m) for m in before["messages"]]
        new = [rendered(m) for m in after["messages"]]
        if new[: len(old)] != old:
            breaks += 1
            assert after["messages"][0] != before["messages"][0], "only a new summary breaks it"
    assert breaks == compactions
    # the usage table holds what the cache served; most of the input came from it
    usage = await UsageRepo(h.store, h.loop._clock).summary_since(_epoch())
    assert usage.cached_tokens / usage.prompt_tokens >= 0.8
    # nothing was lost: every message is either summarised or still sent
    last = agent[-1]["messages"]
    assert last[-1]["content"] == "question 39: how full is /var?" or last[-1]["role"] == "tool"


def _epoch() -> Any:
    from datetime import UTC, datetime

    return datetime(2000, 1, 1, tzinfo=UTC)


async def test_a_failed_or_empty_summary_loses_no_message(
    harness_factory: Any,  # noqa: F811
    fake_llm: FakeChatServer,
) -> None:
    chat = OpsChat()
    chat.summaries = [
        Reply(status=500),  # the API fails
        Reply(content="too late", delay=2.0),  # slower than summary_timeout_seconds
        Reply(content="", reasoning=None),  # an empty summary
        Reply(content="", tool_calls=[("echo", '{"text": "x"}')]),  # a tool call, no summary
    ]
    fake_llm.responder = chat
    h: Harness = await harness_factory(
        history_messages=8, keep_recent_messages=4, summary_timeout_seconds=0.5
    )
    conversation = await h.conversations.get_or_create("test", "c1")
    for turn in range(2):  # 8 messages: the next question passes the limit
        await h.ask(f"question {turn}")
    for turn in range(2, 6):  # each compaction fails; each turn is still answered
        result = await h.ask(f"question {turn}")
        assert result.status == "ok", result
        kept = await h.conversations.recent(conversation.id, 1000)
        assert len(kept) == 4 * (turn + 1), "a failed summary must keep every message"
        assert (await h.conversations.get(conversation.id)).summary == ""
        sent = [r for r in fake_llm.requests if not is_summary(r)][-1]["messages"]
        assert sent[1]["content"] == "question 0", "the whole history is still sent"
    assert len(chat.summaries) == 0 and h.loop._context.failures == 4
    await h.ask("question 6")  # the retry succeeds and compacts the whole backlog at once
    assert (await h.conversations.get(conversation.id)).summary == "summary up to turn 6"
    kept = await h.conversations.recent(conversation.id, 1000)
    assert kept[0].content == "question 6" and len(kept) == 4  # the rest is in the summary
