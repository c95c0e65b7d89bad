"""Compaction that never forgets: a silent flush turn before it, a record of each pass, a second
pass when one is not enough, and no message lost or unsearchable.

The real agent loop runs against the fake Kimi server over a real SQLite store, with the real
``remember_fact`` and ``recall`` tools behind the real executor (policy, audit).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from daemon.agent.build import build_agent, build_llm
from daemon.agent.context import FLUSH_MAX_CALLS, FLUSH_TOOL
from daemon.agent.loop import AgentLoop, AgentRequest, AgentResult
from daemon.agent.prompts import FLUSH, FLUSH_ABOVE, SUMMARISE, SUMMARISE_ABOVE
from daemon.agent.services import ToolServices
from daemon.agent.tools.base import ToolRegistry
from daemon.agent.tools.facts import recall, remember_fact
from daemon.core.clock import SystemClock
from memory.audit import AuditRepo
from memory.conversations import ConversationRepo
from memory.facts import FactRepo
from memory.outbox import OutboxRepo
from memory.recall import RecallRepo
from memory.runs import RunRepo
from memory.store import SqliteStore
from memory.usage import UsageRepo
from tests.daemon.agent.test_loop import echo, flood, settings_for
from tests.fakes.chat_completions import FakeChatServer, Reply
from tests.support import run_cli

PG_FACT = "pg backups land in /srv/backup/pg-nightly at 02:00"


def is_flush(body: dict[str, Any]) -> bool:
    first, last = body["messages"][0]["content"], body["messages"][-1]["content"]
    return bool(last == FLUSH_ABOVE.format(calls=5) or first == FLUSH.format(calls=5))


def is_summary(body: dict[str, Any]) -> bool:
    first, last = body["messages"][0]["content"], body["messages"][-1]["content"]
    return bool(last == SUMMARISE_ABOVE or first == SUMMARISE)


def is_agent(body: dict[str, Any]) -> bool:
    return not is_flush(body) and not is_summary(body)


class Chat:
    """Answers each user turn directly; flush and summary replies are played from lists, then a
    default (the flush saves nothing, the summary names the turn)."""

    def __init__(self) -> None:
        self.flushes: list[Reply] = []
        self.summaries: list[Reply] = []
        self.turns: list[Reply] = []  # replies for agent requests, then "answer N"
        self.turn = 0

    def __call__(self, body: dict[str, Any]) -> Reply:
        if is_flush(body):
            return self.flushes.pop(0) if self.flushes else Reply(content="nothing", reasoning=None)
        if is_summary(body):
            if self.summaries:
                return self.summaries.pop(0)
            return Reply(content=f"summary up to turn {self.turn}", reasoning=None)
        if body["messages"][-1]["role"] == "user":
            self.turn += 1
        return self.turns.pop(0) if self.turns else Reply(content=f"answer {self.turn}")


class Rig:
    def __init__(self, loop: AgentLoop, store: SqliteStore, clock: SystemClock) -> None:
        self.loop, self.store = loop, store
        self.conversations = ConversationRepo(store, clock)
        self.runs = RunRepo(store, clock)
        self.facts = FactRepo(store, clock)
        self.recall = RecallRepo(store, clock)
        self.audit = AuditRepo(store, clock)

    async def ask(self, text: str) -> AgentResult:
        conversation = await self.conversations.get_or_create("test", "c1")
        result = await self.loop.run(
            AgentRequest(conversation_id=conversation.id, text=text, actor="test:ann")
        )
        assert result.status == "ok", result
        return result

    async def conversation_id(self) -> int:
        return (await self.conversations.get_or_create("test", "c1")).id

    async def all_messages(self) -> list[tuple[int, str, str | None]]:
        async with self.store.read() as db:
            rows = await db.execute_fetchall(
                "SELECT id, role, content FROM messages ORDER BY id", ()
            )
        return [(row[0], row[1], row[2]) for row in rows]


@pytest.fixture
async def rig_factory(tmp_path: Path, fake_llm: FakeChatServer) -> AsyncIterator[Any]:
    opened: list[tuple[SqliteStore, Any]] = []

    async def make(llm: dict[str, Any] | None = None, **agent: Any) -> Rig:
        agent.setdefault("recall_hits", 0)  # these tests read the prompt's history exactly
        settings = settings_for(fake_llm, llm, None, **agent)
        clock = SystemClock()
        store = await SqliteStore.open(tmp_path / "nightshift.db")
        client = build_llm(settings, usage=UsageRepo(store, clock), clock=clock)
        opened.append((store, client))
        services = ToolServices(
            facts=FactRepo(store, clock),
            outbox=OutboxRepo(store, clock),
            recall=RecallRepo(store, clock),
        )
        loop = build_agent(
            settings=settings,
            store=store,
            clock=clock,
            llm=client,
            registry=ToolRegistry([echo, flood, remember_fact, recall]),
            services=services,
        )
        return Rig(loop, store, clock)

    yield make
    for store, client in opened:
        await client.close()
        await store.close()


async def test_the_flush_turn_saves_a_fact_before_compaction_and_stays_out_of_the_chat(
    rig_factory: Any, fake_llm: FakeChatServer
) -> None:
    chat = Chat()
    chat.flushes = [
        Reply(
            reasoning=None,
            tool_calls=[
                (FLUSH_TOOL, json.dumps({"text": PG_FACT, "tags": "pg,backup"})),
                ("echo", '{"text": "not in a flush"}'),  # any other tool is refused, not run
            ],
        )
    ]
    fake_llm.responder = chat
    rig = await rig_factory(history_messages=8, keep_recent_messages=4)
    await rig.ask("where do pg backups land?")
    await rig.ask("and when do they run?")
    # ... the model learnt the answer in these turns; the next question passes the limit
    for turn in range(2, 5):
        await rig.ask(f"question {turn}")

    kinds = [
        "flush" if is_flush(r) else "summary" if is_summary(r) else "agent"
        for r in fake_llm.requests
    ]
    assert kinds.count("flush") == kinds.count("summary") >= 1
    first_flush = kinds.index("flush")
    assert kinds[first_flush + 1] == "summary", "the flush comes right before its summary"
    flush, summary = fake_llm.requests[first_flush], fake_llm.requests[first_flush + 1]
    # a continuation of the same prompt, same tools: served from the prefix cache
    assert flush["messages"][:-1] == summary["messages"][:-1]
    assert flush["tools"] == summary["tools"] == fake_llm.requests[0]["tools"]

    facts = await rig.facts.recall("pg-nightly")
    assert [f.text for f in facts] == [PG_FACT]
    audit = await rig.audit.recent()
    flushed = [a for a in audit if a.reason == "memory flush before compaction"]
    assert [a.tool for a in flushed] == [FLUSH_TOOL], "only remember_fact ran, under audit"

    # the flush turn never joins the conversation: not stored, not sent again
    stored = [content or "" for _, _, content in await rig.all_messages()]
    assert not any("remember_fact" in text or "nobody will see" in text for text in stored)
    later = [r for r in fake_llm.requests if is_agent(r)][-1]
    assert not any(FLUSH_ABOVE[:40] in json.dumps(m) for m in later["messages"])

    # ... but the run's steps record it, before the compaction it preceded
    compacting = [r for r in await rig.runs.recent(20) if r.kind == "chat"]
    steps = [s for run in compacting for s in await rig.runs.steps(run.id)]
    flush_at = next(i for i, s in enumerate(steps) if s.kind == "flush")
    assert [(s.kind, s.name) for s in steps[flush_at : flush_at + 4]] == [
        ("flush", "kimi-k2.6"),
        ("tool", FLUSH_TOOL),
        ("tool", "echo"),
        ("compaction", "pass 1"),
    ]
    assert steps[flush_at + 2].error and "only remember_fact" in steps[flush_at + 2].error


async def test_the_flush_turn_is_one_request_with_capped_calls(
    rig_factory: Any, fake_llm: FakeChatServer
) -> None:
    chat = Chat()
    calls = [
        (FLUSH_TOOL, json.dumps({"text": f"fact number {i}"})) for i in range(FLUSH_MAX_CALLS + 3)
    ]
    chat.flushes = [Reply(reasoning=None, tool_calls=calls)]
    fake_llm.responder = chat
    rig = await rig_factory(history_messages=6, keep_recent_messages=2)
    for turn in range(4):
        await rig.ask(f"question {turn}")
    flushes = [r for r in fake_llm.requests if is_flush(r)]
    assert len(flushes) == 1, "one request, its calls run without a second one"
    assert await rig.facts.count() == FLUSH_MAX_CALLS


async def test_a_failed_flush_turn_still_compacts(
    rig_factory: Any, fake_llm: FakeChatServer, caplog: pytest.LogCaptureFixture
) -> None:
    chat = Chat()
    chat.flushes = [
        Reply(status=500),  # the API fails
        Reply(content="too late", delay=2.0),  # slower than summary_timeout_seconds
    ]
    fake_llm.responder = chat
    rig = await rig_factory(history_messages=6, keep_recent_messages=2, summary_timeout_seconds=0.5)
    caplog.set_level(logging.WARNING, logger="daemon.agent.context")
    for turn in range(7):
        await rig.ask(f"question {turn}")
    assert chat.flushes == [] and rig.loop._context.flush_failures == 2
    assert "memory flush before compaction failed, compacting anyway" in caplog.text
    records = await rig.runs.compactions(await rig.conversation_id())
    assert len(records) >= 2, "both compactions went ahead without their flush"
    assert (await rig.conversations.get(await rig.conversation_id())).summary


async def test_a_summary_failing_mid_stream_loses_no_message(
    rig_factory: Any, fake_llm: FakeChatServer
) -> None:
    chat = Chat()
    chat.summaries = [
        Reply(content="the first half of a summ", reasoning=None, fault="cut"),
        Reply(content="the first half of a summ", reasoning=None, fault="drop"),
    ]
    fake_llm.responder = chat
    rig = await rig_factory({"stream": True}, history_messages=6, keep_recent_messages=2)
    conversation = await rig.conversation_id()
    for turn in range(3):
        await rig.ask(f"question {turn}")
    for turn in range(3, 5):  # each summary breaks off mid-stream: nothing is folded
        await rig.ask(f"question {turn}")
        kept = await rig.conversations.recent(conversation, 1000)
        assert len(kept) == 2 * (turn + 1), "a broken summary must keep every message"
        assert (await rig.conversations.get(conversation)).summary == ""
        assert await rig.runs.compactions(conversation) == []
    assert chat.summaries == [] and rig.loop._context.failures == 2
    await rig.ask("question 5")  # the retry folds the whole backlog, and says what it folded
    [record] = await rig.runs.compactions(conversation)
    kept = await rig.conversations.recent(conversation, 1000)
    assert [m.content for m in kept] == ["question 5", "answer 6"]
    assert record.messages == 10 and record.summary == "summary up to turn 5"
    assert (record.first_message_id, record.last_message_id) == (1, 10)


async def test_summarised_messages_stay_searchable(
    rig_factory: Any, fake_llm: FakeChatServer
) -> None:
    fake_llm.responder = Chat()
    rig = await rig_factory(history_messages=6, keep_recent_messages=2)
    for turn in range(8):
        await rig.ask(f"is host-{turn}z healthy?")
    conversation = await rig.conversation_id()
    records = await rig.runs.compactions(conversation)
    assert records
    folded = {m for r in records for m in range(r.first_message_id, r.last_message_id + 1)}
    questions = {mid: text for mid, role, text in await rig.all_messages() if role == "user"}
    summarised = [mid for mid in questions if mid in folded]
    in_prompt = {m.id for m in await rig.conversations.recent(conversation, 1000)}
    assert summarised and not in_prompt & set(summarised)
    for mid in summarised:  # gone from the prompt, still found by recall
        word = questions[mid].split()[1]
        hits = await rig.recall.search(word, sources=["message"])
        assert f"message#{mid}" in [h.cite for h in hits], word


async def test_a_huge_turn_triggers_a_second_pass(
    rig_factory: Any, fake_llm: FakeChatServer, caplog: pytest.LogCaptureFixture
) -> None:
    chat = Chat()
    fake_llm.responder = chat
    rig = await rig_factory(context_tokens=4000, keep_recent_messages=6, tool_output_chars=20_000)
    await rig.ask("question A")
    chat.turns = [Reply(tool_calls=[("flood", "{}")]), Reply(content="answer B: it is huge")]
    await rig.ask("question B: dump the log")  # its tool result alone is over the budget
    caplog.set_level(logging.INFO, logger="daemon.agent.context")
    await rig.ask("question C")
    conversation = await rig.conversation_id()
    second, first = await rig.runs.compactions(conversation)
    budget = int(4000 * 0.8)
    assert (first.pass_number, second.pass_number) == (1, 2)
    assert (first.first_message_id, first.last_message_id, first.messages) == (1, 2, 2)
    assert (second.first_message_id, second.last_message_id, second.messages) == (3, 6, 4)
    assert first.tokens_after > budget, "one pass was not enough"
    assert second.tokens_after <= budget < second.tokens_before
    sent = [r for r in fake_llm.requests if is_agent(r)][-1]["messages"]
    assert [m["content"] for m in sent[1:]] == ["question C"]
    assert sent[0]["content"].endswith("summary up to turn 2")
    assert "still over the token budget" not in caplog.text


async def test_a_turn_too_big_for_any_pass_is_trimmed_and_logged(
    rig_factory: Any, fake_llm: FakeChatServer, caplog: pytest.LogCaptureFixture
) -> None:
    fake_llm.responder = Chat()
    rig = await rig_factory(context_tokens=4000, keep_recent_messages=2)
    await rig.ask("question A")
    caplog.set_level(logging.WARNING, logger="daemon.agent.context")
    await rig.ask("question B " + "x" * 20_000)  # nothing older can be folded to make room
    assert "the newest turn alone is over the token budget" in caplog.text


async def test_nightshift_memory_compactions_shows_what_was_summarised(
    rig_factory: Any, fake_llm: FakeChatServer, tmp_path: Path
) -> None:
    fake_llm.responder = Chat()
    rig = await rig_factory(history_messages=6, keep_recent_messages=2)
    for turn in range(5):
        await rig.ask(f"question {turn}")
    conversation = await rig.conversation_id()
    [record] = await rig.runs.compactions(conversation)
    code, text, err = await run_cli(
        "memory", "compactions", str(conversation), "--state-dir", str(tmp_path)
    )
    assert code == 0, err
    assert f"conversation#{conversation}" in text and "pass 1: 6 messages #1..#6" in text
    assert f"~{record.tokens_before} → ~{record.tokens_after} tokens" in text
    assert "summary up to turn 3" in text
