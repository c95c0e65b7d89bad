"""The agent loop against the fake Kimi server, a real SQLite store and real tools."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from daemon.agent.executor import ToolExecutor
from daemon.agent.llm import LlmClient
from daemon.agent.loop import AgentLoop, AgentRequest
from daemon.agent.tools.base import Tier, Tool, ToolContext, ToolRegistry, tool
from daemon.agent.tools.evidence import grep_log
from daemon.agent.tools.files import tail_log
from daemon.approvals import ApprovalBroker
from daemon.clock import SystemClock
from daemon.config import Settings, load_settings
from memory.audit import AuditRepo
from memory.conversations import ConversationRepo
from memory.runs import RunRepo
from memory.store import SqliteStore
from memory.usage import UsageRepo
from tests.fakes.chat_completions import FakeChatServer, Reply

restarts: list[str] = []


@tool(tier=Tier.READ_ONLY)
async def echo(ctx: ToolContext, text: str) -> dict[str, Any]:
    """Echo text back.

    Args:
        text: What to echo.
    """
    return {"echo": text}


@tool(tier=Tier.READ_ONLY)
async def explode(ctx: ToolContext) -> str:
    """Always fails."""
    raise RuntimeError("disk on fire")


@tool(tier=Tier.READ_ONLY)
async def hang(ctx: ToolContext) -> str:
    """Never returns."""
    await asyncio.Event().wait()
    return "unreachable"


@tool(tier=Tier.READ_ONLY)
async def flood(ctx: ToolContext) -> str:
    """Returns far too much text."""
    return "x" * 50_000


@tool(tier=Tier.PRIVILEGED)
async def restart_service(ctx: ToolContext, name: str) -> str:
    """Restart a service.

    Args:
        name: Service name.
    """
    restarts.append(name)
    return f"restarted {name}"


class Harness:
    def __init__(
        self,
        loop: AgentLoop,
        store: SqliteStore,
        broker: ApprovalBroker,
        conversations: ConversationRepo,
        runs: RunRepo,
        audit: AuditRepo,
    ) -> None:
        self.loop, self.store, self.broker = loop, store, broker
        self.conversations, self.runs, self.audit = conversations, runs, audit

    async def ask(self, text: str, *, unattended: bool = False, key: str = "c1"):
        conversation = await self.conversations.get_or_create("test", key)
        return await self.loop.run(
            AgentRequest(
                conversation_id=conversation.id, text=text, actor="test:ann", unattended=unattended
            )
        )


def settings_for(
    fake: FakeChatServer, policy: dict[str, Any] | None = None, **agent: Any
) -> Settings:
    return load_settings(
        None,
        overrides={
            "llm": {"base_url": fake.base_url, "api_key": "sk-test", "max_retries": 0},
            "agent": {"tool_timeout_seconds": 0.5, **agent},
            "policy": policy or {},
        },
        environ_secrets=False,
    )


@pytest.fixture
async def harness_factory(tmp_path: Path, fake_llm: FakeChatServer) -> AsyncIterator[Any]:
    opened: list[tuple[SqliteStore, LlmClient]] = []

    async def make(
        *, tools: tuple[Tool, ...] = (), policy: dict[str, Any] | None = None, **agent: Any
    ) -> Harness:
        settings = settings_for(fake_llm, policy, **agent)
        clock = SystemClock()
        store = await SqliteStore.open(tmp_path / f"db{len(opened)}.sqlite")
        usage = UsageRepo(store, clock)
        llm = LlmClient(settings.llm, settings.agent.budget, usage=usage, clock=clock)
        opened.append((store, llm))
        broker = ApprovalBroker(clock)
        audit = AuditRepo(store, clock)
        registry = ToolRegistry([echo, explode, hang, flood, restart_service, *tools])
        conversations, runs = ConversationRepo(store, clock), RunRepo(store, clock)
        loop = AgentLoop(
            settings=settings,
            llm=llm,
            executor=ToolExecutor(registry, audit=audit, approvals=broker),
            conversations=conversations,
            runs=runs,
            store=store,
            clock=clock,
        )
        return Harness(loop, store, broker, conversations, runs, audit)

    yield make
    for store, llm in opened:
        await llm.close()
        await store.close()


def tool_results(request: dict[str, Any]) -> list[str]:
    return [m["content"] for m in request["messages"] if m["role"] == "tool"]


async def test_tool_errors_go_back_to_the_model_and_the_loop_continues(
    harness_factory: Any, fake_llm: FakeChatServer
) -> None:
    h = await harness_factory()
    fake_llm.script(
        Reply(tool_calls=[("explode", "{}"), ("echo", '{"text": oops'), ("nope", "{}")]),
        Reply(content="All three failed, sorry."),
    )
    result = await h.ask("try things")
    assert result.status == "ok" and result.text == "All three failed, sorry."
    fire, bad_json, unknown = tool_results(fake_llm.requests[1])
    assert "disk on fire" in fire and fire.startswith("ERROR")
    assert "not valid JSON" in bad_json
    assert "unknown tool 'nope'" in unknown
    steps = await h.runs.steps(result.run_id)
    assert [s.kind for s in steps] == ["llm", "tool", "tool", "tool", "llm"]
    assert [s.index for s in steps] == [1, 2, 3, 4, 5]


async def test_a_catastrophic_grep_from_the_model_finishes_and_the_loop_keeps_running(
    harness_factory: Any, fake_llm: FakeChatServer, tmp_path: Path
) -> None:
    """`(a+)+$` backtracks for a minute per hostile line in Python's re, holding the GIL: the
    whole loop froze, from a worker thread too. On RE2 both greps answer, and a task beside
    them keeps ticking."""
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    log.write_text("boot\n" + "a" * 30 + "!\n" + "x aaaa\n" + "a" * 30 + "!\n")
    h = await harness_factory(
        tools=(tail_log, grep_log), policy={"read_paths": [str(logs)]}, tool_timeout_seconds=5
    )
    grep = json.dumps({"path": str(log), "grep": "(a+)+$"})
    pattern = json.dumps({"path": str(log), "pattern": "(a+)+$"})
    fake_llm.script(
        Reply(tool_calls=[("tail_log", grep), ("grep_log", pattern)]),
        Reply(content="One line ends in a's."),
    )
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    ticking = asyncio.create_task(ticker())
    try:
        result = await asyncio.wait_for(h.ask("which lines end in a's?"), 60)
    finally:
        ticking.cancel()
    assert result.status == "ok" and result.text == "One line ends in a's."
    tail, grepped = (json.loads(text) for text in tool_results(fake_llm.requests[1]))
    assert tail["lines"] == 1 and tail["text"] == "x aaaa"
    assert grepped["matched"] == 1 and grepped["lines"] == ["x aaaa"]
    assert ticks > 1


async def test_hanging_tool_times_out(harness_factory: Any, fake_llm: FakeChatServer) -> None:
    h = await harness_factory()
    fake_llm.script(Reply(tool_calls=[("hang", "{}")]), Reply(content="It hung."))
    result = await h.ask("hang please")
    assert result.text == "It hung."
    assert "timed out after 0.5s" in tool_results(fake_llm.requests[1])[0]


async def test_oversized_output_is_truncated_with_a_note(
    harness_factory: Any, fake_llm: FakeChatServer
) -> None:
    h = await harness_factory(tool_output_chars=1000)
    fake_llm.script(Reply(tool_calls=[("flood", "{}")]), Reply(content="big"))
    await h.ask("flood")
    text = tool_results(fake_llm.requests[1])[0]
    assert len(text) < 1200 and "output truncated: showing 1000 of 50000 characters" in text


async def test_repeated_identical_calls_are_refused(
    harness_factory: Any, fake_llm: FakeChatServer
) -> None:
    h = await harness_factory(repeated_call_limit=2)
    same = Reply(tool_calls=[("echo", '{"text": "a"}')])
    fake_llm.script(
        same, Reply(tool_calls=[("echo", '{ "text":"a" }')]), same, Reply(content="done")
    )
    await h.ask("loop")
    results = [tool_results(fake_llm.requests[i])[-1] for i in (1, 2, 3)]
    assert '"echo": "a"' in results[0] and '"echo": "a"' in results[1]
    assert "already called 2 times with exactly these arguments" in results[2]


async def test_step_cap_forces_an_answer_without_tools(
    harness_factory: Any, fake_llm: FakeChatServer
) -> None:
    h = await harness_factory(max_steps=2, repeated_call_limit=10)
    fake_llm.script(
        Reply(tool_calls=[("echo", '{"text": "1"}')]),
        Reply(tool_calls=[("echo", '{"text": "2"}')]),
        Reply(content="Here is what I have."),
    )
    result = await h.ask("go")
    assert result.status == "step_cap" and result.text == "Here is what I have."
    final = fake_llm.requests[2]
    assert "tools" not in final or not final["tools"]
    assert "used all 2 tool steps" in final["messages"][-1]["content"]
    assert (await h.runs.get(result.run_id)).status == "step_cap"


async def test_unattended_privileged_call_is_denied_at_once(
    harness_factory: Any, fake_llm: FakeChatServer
) -> None:
    h = await harness_factory()
    restarts.clear()
    fake_llm.script(
        Reply(tool_calls=[("restart_service", '{"name": "nginx"}')]),
        Reply(content="I could not restart it."),
    )
    result = await asyncio.wait_for(h.ask("fix nginx", unattended=True), 5)
    assert result.text == "I could not restart it."
    assert restarts == [] and h.broker.pending() == []
    assert "unattended, so it was denied at once" in tool_results(fake_llm.requests[1])[0]
    audit = await h.audit.for_run(result.run_id)
    assert [(a.tool, a.tier, a.ok) for a in audit] == [("restart_service", "privileged", False)]


async def test_privileged_call_runs_after_approval(
    harness_factory: Any, fake_llm: FakeChatServer
) -> None:
    h = await harness_factory()
    restarts.clear()
    h.broker.subscribe(lambda req: h.broker.resolve(req.id, approved=True, by="console:bob"))
    fake_llm.script(
        Reply(tool_calls=[("restart_service", '{"name": "nginx"}')]), Reply(content="Restarted.")
    )
    result = await h.ask("restart nginx")
    assert restarts == ["nginx"] and result.text == "Restarted."
    assert tool_results(fake_llm.requests[1]) == ["restarted nginx"]


async def test_denied_approval_is_reported_to_the_model(
    harness_factory: Any, fake_llm: FakeChatServer
) -> None:
    h = await harness_factory()
    restarts.clear()
    h.broker.subscribe(lambda req: h.broker.resolve(req.id, approved=False, by="console:bob"))
    fake_llm.script(
        Reply(tool_calls=[("restart_service", '{"name": "db"}')]), Reply(content="Not allowed.")
    )
    await h.ask("restart db")
    assert restarts == []
    assert "not approved: denied by console:bob" in tool_results(fake_llm.requests[1])[0]


async def test_budget_exhausted_degrades_without_calling_the_api(
    harness_factory: Any, fake_llm: FakeChatServer
) -> None:
    h = await harness_factory(budget={"daily_tokens": 0})
    result = await h.ask("anything")
    assert result.status == "budget" and "budget exhausted" in result.text
    assert fake_llm.calls == 0
    stored = await h.conversations.recent((await h.conversations.get_or_create("test", "c1")).id)
    assert [m.content for m in stored] == ["anything"]  # the message itself was kept


async def test_long_conversation_is_summarised_to_fit_the_context(
    harness_factory: Any, fake_llm: FakeChatServer
) -> None:
    h = await harness_factory(context_tokens=4000, keep_recent_messages=2)
    for turn in range(6):
        fake_llm.script(Reply(content=f"answer {turn} " + "y" * 3000))
        await h.ask(f"question {turn} " + "z" * 3000)
    summary_requests = [
        r for r in fake_llm.requests if "Condense the conversation" in r["messages"][0]["content"]
    ]
    assert summary_requests, "a long conversation must be summarised"
    assert summary_requests[0].get("thinking") == {"type": "disabled"}  # summaries are instant
    last = fake_llm.requests[-1]["messages"]
    assert "Summary of the earlier part" in last[0]["content"]
    assert len(json.dumps(last)) // 4 < 4000
    assert last[-1]["content"].startswith("question 5")
