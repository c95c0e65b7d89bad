"""Recall hits in the prompt: the best few, cited and fenced, after the history, never stored."""

from __future__ import annotations

from typing import Any

from daemon.agent.loop import AgentRequest
from daemon.agent.prompts import MEMORY_NOTE
from daemon.agent.services import ToolServices
from daemon.core.clock import SystemClock
from memory.facts import FactRepo
from memory.outbox import OutboxRepo
from memory.recall import RecallRepo
from tests.daemon.agent.test_loop import Harness, harness_factory  # noqa: F401
from tests.fakes.chat_completions import FakeChatServer, Reply


async def _wired(harness_factory: Any, **agent: Any) -> Harness:  # noqa: F811
    h: Harness = await harness_factory(**agent)
    clock = SystemClock()
    h.loop._services = ToolServices(
        facts=FactRepo(h.store, clock),
        outbox=OutboxRepo(h.store, clock),
        recall=RecallRepo(h.store, clock),
    )
    return h


def _notes(body: dict[str, Any]) -> list[str]:
    return [
        m["content"]
        for m in body["messages"]
        if m["role"] == "user" and str(m["content"]).startswith(MEMORY_NOTE)
    ]


async def test_a_chat_turn_gets_cited_memory_after_its_history(
    harness_factory: Any,  # noqa: F811
    fake_llm: FakeChatServer,
) -> None:
    fake_llm.responder = lambda body: Reply(content="ok", reasoning=None)
    h = await _wired(harness_factory)
    facts = FactRepo(h.store, SystemClock())
    fact = await facts.remember("the pgbouncer pool on db-7 is capped at 200 clients")
    await facts.remember("nothing to do with it: the office wifi password rotates monthly")
    await h.ask("an unrelated first question about pgbouncer", key="other")

    result = await h.ask("why is pgbouncer refusing clients?")
    assert result.status == "ok"
    body = fake_llm.requests[-1]
    notes = _notes(body)
    assert len(notes) == 1 and body["messages"][-1]["content"] == notes[0]  # the tail
    assert f"[fact#{fact}]" in notes[0] and "capped at 200" in notes[0]
    assert '<untrusted-data source="memory">' in notes[0]
    assert "wifi" not in notes[0]
    assert "why is pgbouncer refusing" not in notes[0]  # its own conversation is left out
    assert "[message#" in notes[0]  # the other conversation is not
    # never stored: the next turn's history holds the question and the answer only
    await h.ask("and now?")
    stored = [m["content"] for m in fake_llm.requests[-1]["messages"] if m["role"] == "user"]
    assert not any(MEMORY_NOTE in str(content) for content in stored[:-1])


async def test_no_note_when_off_or_nothing_found(
    harness_factory: Any,  # noqa: F811
    fake_llm: FakeChatServer,
) -> None:
    fake_llm.responder = lambda body: Reply(content="ok", reasoning=None)
    h = await _wired(harness_factory, recall_hits=0)
    await FactRepo(h.store, SystemClock()).remember("pgbouncer is capped at 200 clients")
    await h.ask("pgbouncer?")
    assert _notes(fake_llm.requests[-1]) == []

    h = await _wired(harness_factory)
    await h.ask("zqxv nothing matches this")
    assert _notes(fake_llm.requests[-1]) == []
    conversation = await h.conversations.get_or_create("test", "c2")
    await h.loop.run(  # other kinds search only when told what for
        AgentRequest(conversation_id=conversation.id, text="pgbouncer", actor="t", kind="task")
    )
    assert _notes(fake_llm.requests[-1]) == []
