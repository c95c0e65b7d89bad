"""The agent loop against the fake Kimi server, a real SQLite store and real tools."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from daemon.agent.build import build_agent, build_llm
from daemon.agent.llm import LlmClient
from daemon.agent.loop import AgentLoop, AgentRequest, AgentResult
from daemon.agent.tools.base import Tier, Tool, ToolContext, ToolRegistry, tool
from daemon.agent.tools.evidence import grep_log
from daemon.agent.tools.files import tail_log
from daemon.chat.approvals import ApprovalBroker
from daemon.config import Settings, load_settings
from daemon.core.clock import SystemClock
from memory.audit import AuditRepo
from memory.conversations import ConversationRepo
from memory.runs import RunRepo
from memory.store import SqliteStore
from memory.usage import UsageRepo
from tests.fakes.chat_completions import DEFAULT_TEXT, FakeChatServer, Fault, Reply

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


@tool(tier=Tier.READ_ONLY)
async def look(ctx: ToolContext, path: str, reason: str = "") -> str:
    """Look at a path.

    Args:
        path: What to look at.
        reason: Why, in a few words.
    """
    return f"{path} looks fine"


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

    async def ask(self, text: str, *, unattended: bool = False, key: str = "c1") -> AgentResult:
        conversation = await self.conversations.get_or_create("test", key)
        return await self.loop.run(
            AgentRequest(
                conversation_id=conversation.id, text=text, actor="test:ann", unattended=unattended
            )
        )


def settings_for(
    fake: FakeChatServer,
    llm: dict[str, Any] | None = None,
    policy: dict[str, Any] | None = None,
    **agent: Any,
) -> Settings:
    return load_settings(
        None,
        overrides={
            "llm": {
                "base_url": fake.base_url,
                "api_key": "sk-test",
                "max_retries": 0,
                "retry_initial_seconds": 0,
                **(llm or {}),
            },
            "agent": {"tool_timeout_seconds": 0.5, **agent},
            "policy": policy or {},
        },
        environ_secrets=False,
    )


@pytest.fixture
async def harness_factory(tmp_path: Path, fake_llm: FakeChatServer) -> AsyncIterator[Any]:
    opened: list[tuple[SqliteStore, LlmClient]] = []

    async def make(
        llm_settings: dict[str, Any] | None = None,
        sleep: Any = None,
        *,
        tools: tuple[Tool, ...] = (),
        policy: dict[str, Any] | None = None,
        services: Any = None,
        **agent: Any,
    ) -> Harness:
        settings = settings_for(fake_llm, llm_settings, policy, **agent)
        clock = SystemClock()
        store = await SqliteStore.open(tmp_path / f"db{len(opened)}.sqlite")
        usage = UsageRepo(store, clock)
        llm = build_llm(settings, usage=usage, clock=clock)
        opened.append((store, llm))
        broker = ApprovalBroker(clock)
        audit = AuditRepo(store, clock)
        registry = ToolRegistry([echo, explode, hang, flood, look, restart_service, *tools])
        conversations, runs = ConversationRepo(store, clock), RunRepo(store, clock)
        loop = build_agent(
            settings=settings,
            store=store,
            clock=clock,
            llm=llm,
            registry=registry,
            approvals=broker,
            audit=audit,
            conversations=conversations,
            runs=runs,
            services=services(store, clock) if callable(services) else services,
            **({} if sleep is None else {"sleep": sleep}),
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


# -- model faults degrade, never mislead -------------------------------------------------------


class Gate:
    """A reply that waits: ``arrived`` is set when a request comes, ``release`` lets it go."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, body: dict[str, Any]) -> Reply:
        self.arrived.set()
        await self.release.wait()
        return self.reply


async def audit_rows(h: Harness, run_id: int | None) -> list[str]:
    assert run_id is not None
    return [a.tool for a in await h.audit.for_run(run_id)]


@pytest.mark.parametrize("fault", ["cut", "drop"])
async def test_no_tool_call_from_a_cut_stream_runs(
    harness_factory: Any, fake_llm: FakeChatServer, fault: Fault
) -> None:
    h = await harness_factory(llm_settings={"stream": True, "max_retries": 1})
    cut = Reply(tool_calls=[("echo", '{"text": "from a cut stream"}')], fault=fault)
    fake_llm.script(cut, cut)
    result = await h.ask("check it")
    assert result.status == "error" and "The model API is unavailable" in result.text
    assert fake_llm.calls == 2  # retried like a 5xx, then a clear error
    assert await audit_rows(h, result.run_id) == []  # nothing ran
    steps = await h.runs.steps(result.run_id)
    assert [s.kind for s in steps] == []


async def test_a_cut_stream_is_retried_and_the_retry_answers(
    harness_factory: Any, fake_llm: FakeChatServer
) -> None:
    h = await harness_factory(llm_settings={"stream": True, "max_retries": 1})
    fake_llm.script(
        Reply(tool_calls=[("echo", '{"text": "partial"}')], fault="cut"),
        Reply(content="All fine."),
    )
    result = await h.ask("check it")
    assert (result.status, result.text) == ("ok", "All fine.")
    assert await audit_rows(h, result.run_id) == []


@pytest.mark.parametrize("stream", [False, True])
async def test_a_tool_call_without_reasoning_does_not_poison_later_turns(
    harness_factory: Any, fake_llm: FakeChatServer, stream: bool
) -> None:
    h = await harness_factory(llm_settings={"stream": stream})
    fake_llm.script(
        Reply(reasoning=None, tool_calls=[("echo", '{"text": "a"}')]),
        Reply(content="first answer"),
        Reply(reasoning="", tool_calls=[("echo", '{"text": "b"}')]),
        Reply(content="second answer"),
    )
    assert (await h.ask("one")).text == "first answer"
    assert (await h.ask("two")).text == "second answer"
    assert (await h.ask("three")).text == DEFAULT_TEXT  # every earlier tool call replayed
    replayed = [m for m in fake_llm.requests[-1]["messages"] if m.get("tool_calls")]
    assert len(replayed) == 2 and all(m["reasoning_content"] for m in replayed)


async def test_a_stored_tool_call_with_empty_reasoning_and_no_answer_is_mended(
    harness_factory: Any, fake_llm: FakeChatServer
) -> None:
    # what an older build (or a turn cut mid-tool) left behind in SQLite
    h = await harness_factory()
    conversation = await h.conversations.get_or_create("test", "c1")
    await h.conversations.append(conversation.id, "user", "earlier question")
    call = {"id": "call-1", "type": "function", "function": {"name": "echo", "arguments": "{}"}}
    await h.conversations.append(
        conversation.id, "assistant", "", reasoning_content="", tool_calls=[call]
    )
    await h.conversations.append(conversation.id, "tool", "orphan", tool_call_id="call-9")
    result = await h.ask("and now?")
    assert (result.status, result.text) == ("ok", DEFAULT_TEXT)
    sent = fake_llm.requests[-1]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool", "user"]
    assert sent[2]["reasoning_content"] and sent[3]["tool_call_id"] == "call-1"
    assert "no result" in sent[3]["content"]


async def test_the_turn_deadline_stops_a_slow_model_and_nothing_runs(
    harness_factory: Any, fake_llm: FakeChatServer
) -> None:
    h = await harness_factory(turn_timeout_seconds=0.2, progress_after_seconds=0)
    gate = Gate(Reply(tool_calls=[("echo", '{"text": "too late"}')]))
    fake_llm.responder = gate
    try:
        result = await asyncio.wait_for(h.ask("slow one"), 30)
    finally:
        gate.release.set()
    assert result.status == "timeout"
    assert "took longer than 0.2 s (agent.turn_timeout_seconds)" in result.text
    assert await audit_rows(h, result.run_id) == []
    assert (await h.runs.get(result.run_id)).status == "timeout"


async def test_a_turn_cut_by_its_deadline_mid_tool_leaves_the_conversation_usable(
    harness_factory: Any, fake_llm: FakeChatServer
) -> None:
    h = await harness_factory(
        turn_timeout_seconds=0.2, tool_timeout_seconds=30, progress_after_seconds=0
    )
    fake_llm.script(Reply(tool_calls=[("hang", "{}")]), Reply(content="fresh answer"))
    first = await asyncio.wait_for(h.ask("hang"), 30)
    assert first.status == "timeout" and fake_llm.calls == 1
    second = await h.ask("something else")
    assert (second.status, second.text) == ("ok", "fresh answer")


async def test_tool_calls_past_the_per_step_cap_are_not_run(
    harness_factory: Any, fake_llm: FakeChatServer
) -> None:
    h = await harness_factory(max_tool_calls_per_step=2)
    fake_llm.script(
        Reply(tool_calls=[("echo", f'{{"text": "{n}"}}') for n in range(3)]),
        Reply(content="Two of three."),
    )
    result = await h.ask("three at once")
    assert (result.status, result.text) == ("ok", "Two of three.")
    assert await audit_rows(h, result.run_id) == ["echo", "echo"]
    third = tool_results(fake_llm.requests[1])[2]
    assert "not run: at most 2 tool calls run per step (agent.max_tool_calls_per_step)" in third


async def test_the_per_turn_cap_ends_the_turn_with_the_reason(
    harness_factory: Any, fake_llm: FakeChatServer
) -> None:
    h = await harness_factory(max_tool_calls_per_turn=3)
    fake_llm.script(
        Reply(tool_calls=[("echo", '{"text": "1"}'), ("echo", '{"text": "2"}')]),
        Reply(tool_calls=[("echo", '{"text": "3"}'), ("echo", '{"text": "4"}')]),
        Reply(content="Enough evidence."),
    )
    result = await h.ask("dig")
    assert result.status == "tool_cap"
    assert result.text.startswith("Enough evidence.")
    assert "stopped early: this request used all 3 tool calls" in result.text
    assert await audit_rows(h, result.run_id) == ["echo"] * 3
    final = fake_llm.requests[-1]
    assert not final.get("tools") and "Stop calling tools" in final["messages"][-1]["content"]


async def test_identical_calls_end_the_turn_even_when_their_reason_differs(
    harness_factory: Any, fake_llm: FakeChatServer
) -> None:
    h = await harness_factory(repeated_call_limit=2)
    fake_llm.script(
        *(
            Reply(tool_calls=[("look", json.dumps({"path": "/var/log", "reason": why}))])
            for why in ("check logs", "look again", "one more time")
        ),
        Reply(content="The logs look fine."),
    )
    result = await h.ask("logs?")
    assert result.status == "repeated_call"
    assert result.text.startswith("The logs look fine.")
    assert "look was already called 2 times with exactly these arguments" in result.text
    assert await audit_rows(h, result.run_id) == ["look", "look"]
    final = fake_llm.requests[-1]
    assert fake_llm.calls == 4 and not final.get("tools")


async def test_a_slow_model_shows_progress_once(
    harness_factory: Any, fake_llm: FakeChatServer
) -> None:
    tick, asked = asyncio.Event(), []

    async def sleep(seconds: float) -> None:  # the loop's timer, moved by the test
        asked.append(seconds)
        await tick.wait()

    h = await harness_factory(sleep=sleep, progress_after_seconds=30)
    gate = Gate(Reply(content="Done thinking."))
    fake_llm.responder = gate
    events: list[dict[str, Any]] = []
    shown = asyncio.Event()

    async def on_event(event: dict[str, Any]) -> None:
        events.append(event)
        if event["type"] == "progress":
            shown.set()

    conversation = await h.conversations.get_or_create("test", "c1")
    request = AgentRequest(conversation_id=conversation.id, text="think hard", actor="test:ann")
    turn = asyncio.create_task(h.loop.run(request, on_event))
    await gate.arrived.wait()
    tick.set()
    await shown.wait()
    gate.release.set()
    result = await turn
    assert result.text == "Done thinking." and asked == [30]
    assert events == [{"type": "progress", "seconds": 30, "text": "still thinking… (30 s)"}]
