"""The swarm end to end: a coordinator agent delegates to sub-agents through the real openai
client against the fake on loopback, a real SQLite store and the real tool executor; every
lifecycle path (slow, stalled, failing, looping, malformed, over budget) ends truthfully."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from daemon.agent.build import build_agent, build_llm
from daemon.agent.llm import LlmClient
from daemon.agent.loop import AgentRequest, AgentResult
from daemon.agent.swarm import RunBudget, Swarm, attach_swarm
from daemon.agent.tools.base import Tier, ToolContext, ToolRegistry, tool
from daemon.config import load_settings
from daemon.core.clock import SystemClock
from daemon.core.redact import use_secrets
from memory.audit import AuditRepo
from memory.conversations import ConversationRepo
from memory.store import SqliteStore
from memory.swarm import SwarmRepo, SwarmTask, TaskSpec
from tests.fakes.chat_completions import SUBAGENT_MARK, FakeChatServer, Reply, SwarmScript
from tests.support import eventually

SHAPE = {
    "type": "object",
    "properties": {"status": {"type": "string", "enum": ["ok"]}, "steps": {"type": "integer"}},
    "required": ["status", "steps"],
}
restarts: list[str] = []


@tool(tier=Tier.READ_ONLY)
async def echo(ctx: ToolContext, text: str) -> dict[str, Any]:
    """Echo text back.

    Args:
        text: What to echo.
    """
    return {"echo": text}


@tool(tier=Tier.PRIVILEGED)
async def restart_service(ctx: ToolContext, text: str) -> str:
    """Restart a service.

    Args:
        text: Service name.
    """
    restarts.append(text)
    return f"restarted {text}"


LEAKED = "ToolResultPw-Leak-55"
SAID = "glpat-ModelSaid0123456789abcd"


@tool(tier=Tier.READ_ONLY)
async def leak(ctx: ToolContext, text: str) -> str:
    """Read a config file that holds a password.

    Args:
        text: Which file.
    """
    return f"file {text}: password={LEAKED}"


@dataclass
class Rig:
    swarm: Swarm
    fake: FakeChatServer
    script: SwarmScript
    conversations: ConversationRepo
    audit: AuditRepo
    loop: Any
    store: SqliteStore
    llm: LlmClient

    def restarted(self) -> Swarm:
        """A new swarm on the same database, as the next process would have."""
        s = self.swarm
        return Swarm(settings=s.settings, llm=self.llm, executor=self.loop.executor,
                     store=self.store, clock=SystemClock())  # fmt: skip

    async def delegate(self, *tasks: dict[str, Any], then: str = "summary") -> dict[str, Any]:
        """The coordinator delegates ``tasks`` in one call; returns what the tool answered."""
        call = Reply(tool_calls=[("delegate", json.dumps({"tasks": list(tasks)}))])
        self.script.coordinator.extend([call, Reply(content=then)])
        result = await self.ask()
        assert result.status == "ok", result
        return self.tool_answer()

    async def ask(self) -> AgentResult:
        conversation = await self.conversations.get_or_create("test", "c1")
        request = AgentRequest(
            conversation_id=conversation.id, text="check the fleet", actor="test:ann",
            unattended=True,
        )  # fmt: skip
        result: AgentResult = await self.loop.run(request)
        return result

    def tool_answer(self) -> dict[str, Any]:
        last = [r for r in self.fake.requests if not _is_child(r)][-1]
        text = last["messages"][-1]["content"]
        try:
            answer: dict[str, Any] = json.loads(text)
        except json.JSONDecodeError:
            return {"error": text}
        return answer

    async def tasks(self, answer: dict[str, Any]) -> list[SwarmTask]:
        return await self.swarm.repo.tasks(answer["run"])


def _is_child(request: dict[str, Any]) -> bool:
    return str(request["messages"][0].get("content", "")).startswith(SUBAGENT_MARK)


def task(goal: str, **extra: Any) -> dict[str, Any]:
    return {"goal": goal, "tools": ["echo"], "result_shape": SHAPE, **extra}


@pytest.fixture
async def rig_factory(tmp_path: Path, fake_llm: FakeChatServer) -> AsyncIterator[Any]:
    opened: list[tuple[SqliteStore, LlmClient, Swarm]] = []

    async def make(llm: dict[str, Any] | None = None, **swarm: Any) -> Rig:
        settings = load_settings(
            None,
            overrides={
                "llm": {
                    "base_url": fake_llm.base_url,
                    "api_key": "sk-test",
                    "max_retries": 0,
                    "retry_initial_seconds": 0,
                    "concurrency": 50,
                    **(llm or {}),
                },
                "agent": {"swarm": {"concurrency": 8, **swarm}},
            },
            environ_secrets=False,
        )
        clock = SystemClock()
        store = await SqliteStore.open(tmp_path / f"db{len(opened)}.sqlite")
        client = build_llm(settings, usage=None, clock=clock)
        audit = AuditRepo(store, clock)
        conversations = ConversationRepo(store, clock)
        loop = build_agent(
            settings=settings, store=store, clock=clock, llm=client, audit=audit,
            registry=ToolRegistry([echo, restart_service, leak]), conversations=conversations,
        )  # fmt: skip
        attached = attach_swarm(loop, settings=settings, llm=client, store=store, clock=clock)
        script = SwarmScript()
        fake_llm.responder = script
        opened.append((store, client, attached))
        return Rig(attached, fake_llm, script, conversations, audit, loop, store, client)

    yield make
    for store, client, attached in opened:
        await attached.close()
        await client.close()
        await store.close()


async def test_children_run_concurrently_with_lean_prompts_and_return_structured_results(
    rig_factory: Any,
) -> None:
    rig = await rig_factory()
    answer = await rig.delegate(
        *(task(f"behave=slow delay=0.2 steps=2 id=h{i}", role="checker") for i in range(4))
    )
    assert answer["summary"] == {"done": 4}
    assert [s["result"] for s in answer["subtasks"]] == [
        {"status": "ok", "id": f"h{i}", "steps": 2} for i in range(4)
    ]
    assert rig.fake.max_in_flight >= 3  # they ran side by side, not one after another
    firsts = [r for r in rig.fake.requests if _is_child(r) and len(r["messages"]) == 2]
    assert len(firsts) == 4
    for request in firsts:  # own small prompt + the goal; no parent history
        assert "checker" in request["messages"][0]["content"]
        assert len(request["messages"][0]["content"]) < 1200
        assert [t["function"]["name"] for t in request["tools"]] == ["echo"]
    tasks = await rig.tasks(answer)
    assert [(t.status, t.depth, t.attempt, t.steps) for t in tasks] == [("done", 1, 1, 5)] * 4
    steps = await rig.swarm.repo.steps(tasks[0].id)
    assert [s.kind for s in steps] == ["llm", "tool", "llm", "tool", "llm"]
    assert steps[-1].output["content"] == json.dumps({"status": "ok", "id": "h0", "steps": 2})
    run = await rig.swarm.repo.get_run(answer["run"])
    assert (run.status, run.spawns, run.steps) == ("done", 4, 20)
    assert run.tokens == sum(t.tokens for t in tasks) > 0


async def test_secrets_in_a_childs_goal_and_tool_results_never_reach_the_model(
    rig_factory: Any,
) -> None:
    """Each child message is redacted once as it joins the conversation (not on every call):
    none of them may reach the model unredacted, on the first call or any later one."""
    rig = await rig_factory()
    script = rig.fake.responder

    def saying_a_token(body: dict[str, Any]) -> Reply:
        reply: Reply = script(body)
        if reply.tool_calls:  # the model's own words, sent back to it on the next call
            reply.content = f"checking; the token is {SAID}"
        return reply

    rig.fake.responder = saying_a_token
    use_secrets(["Opaque-Configured-Value-9"])
    try:
        goal = "behave=ok steps=2 tool=leak id=s1 PGPASSWORD=GoalPw-Hunter-42 "
        goal += "Opaque-Configured-Value-9"
        answer = await rig.delegate({"goal": goal, "tools": ["leak"], "result_shape": SHAPE})
    finally:
        use_secrets([])
    assert answer["summary"] == {"done": 1}
    children = [r for r in rig.fake.requests if _is_child(r)]
    assert len(children) == 3
    assert [m["role"] for m in children[-1]["messages"]][-2:] == ["assistant", "tool"]
    sent = json.dumps(children)
    assert "[REDACTED]" in sent
    for secret in ("GoalPw-Hunter-42", "Opaque-Configured-Value-9", LEAKED, SAID):
        assert secret not in sent


async def test_the_global_concurrency_limit_holds(rig_factory: Any) -> None:
    rig = await rig_factory(concurrency=2)
    answer = await rig.delegate(*(task(f"behave=slow delay=0.1 steps=0 id={i}") for i in range(6)))
    assert answer["summary"] == {"done": 6}
    assert rig.fake.max_in_flight == 2


async def test_a_reloaded_concurrency_limit_holds_up_and_down(rig_factory: Any) -> None:
    rig = await rig_factory(concurrency=1)
    swarm = rig.swarm.settings.agent.swarm
    swarm.concurrency = 3
    rig.swarm.apply_settings()
    await rig.delegate(*(task(f"behave=slow delay=0.1 steps=0 id={i}") for i in range(6)))
    assert rig.fake.max_in_flight == 3
    swarm.concurrency = 2
    rig.swarm.apply_settings()
    rig.fake.max_in_flight = 0
    await rig.delegate(*(task(f"behave=slow delay=0.1 steps=0 id={i}") for i in range(6)))
    assert rig.fake.max_in_flight == 2


async def test_a_stalled_stream_is_caught_cancelled_fenced_and_reassigned(
    rig_factory: Any,
) -> None:
    rig = await rig_factory({"stream": True}, stall_seconds=0.3)
    answer = await rig.delegate(task("behave=stall steps=1 id=s"), task("behave=ok id=k"))
    assert answer["summary"] == {"done": 2}
    stalled, ok = await rig.tasks(answer)
    assert (stalled.status, stalled.attempt, stalled.epoch, ok.attempt) == ("done", 2, 3, 1)
    assert rig.swarm.watchdog.stalls == 1
    assert 0.3 <= rig.swarm.watchdog.stall_latency[0] < 1.3  # caught within T + 1 s
    assert rig.script.starts["behave=stall steps=1 id=s"] == 2


async def test_a_child_that_always_stalls_ends_stalled_with_the_reason(rig_factory: Any) -> None:
    rig = await rig_factory({"stream": True}, stall_seconds=0.2, max_attempts=2)
    answer = await rig.delegate(task("behave=stall_always"))
    [entry] = answer["subtasks"]
    assert entry["status"] == "stalled" and entry["attempts"] == 2
    assert "no progress" in entry["reason"]
    assert answer["summary"] == {"stalled": 1}
    assert (await rig.swarm.repo.get_run(answer["run"])).status == "partial"


async def test_failing_looping_and_malformed_children_end_with_their_reasons(
    rig_factory: Any,
) -> None:
    rig = await rig_factory()
    answer = await rig.delegate(
        task("behave=fail"),
        task("behave=loop"),
        task("behave=malformed steps=0"),
        task("behave=malformed_once steps=1"),
    )
    fail, loop, bad, fixed = answer["subtasks"]
    assert fail["status"] == "failed" and "HTTP 500" in fail["reason"]
    assert loop["status"] == "failed" and loop["reason"].startswith("looping: echo called 3")
    assert bad["status"] == "failed" and "malformed result after correction" in bad["reason"]
    assert "not JSON" in bad["reason"]
    assert fixed["status"] == "done" and fixed["result"]["status"] == "ok"
    assert rig.script.calls["malformed"] == 2  # one correction turn, then failed


async def test_a_child_over_its_token_budget_fails_and_the_run_stops_at_its_cap(
    rig_factory: Any,
) -> None:
    rig = await rig_factory(concurrency=1, run_max_tokens=25_000)
    answer = await rig.delegate(
        task("behave=tokens steps=3 id=a", max_tokens=15_000),
        task("behave=tokens steps=0 id=b"),
        task("behave=tokens steps=0 id=c"),
        task("behave=ok id=d"),
    )
    a, b, c, d = sorted(answer["subtasks"], key=lambda entry: entry["id"])
    assert a["status"] == "failed" and "token budget exhausted" in a["reason"]
    assert b["status"] == "done"  # it spent the run's last tokens
    assert c["status"] == d["status"] == "cancelled"
    assert "not started" in c["reason"] and "token budget" in c["reason"]
    assert "token budget is spent" in answer["stopped"]
    run = await rig.swarm.repo.get_run(answer["run"])
    assert run.status == "cancelled" and "token budget" in (run.reason or "")


async def test_step_budgets_end_a_child_and_stop_the_run(rig_factory: Any) -> None:
    rig = await rig_factory(concurrency=1, run_max_steps=12)
    answer = await rig.delegate(
        task("behave=ok steps=5 id=long", max_steps=2),
        task("behave=ok steps=3 id=fits"),
        task("behave=ok steps=3 id=over"),
        task("behave=ok id=never"),
    )
    long, fits, over, never = sorted(answer["subtasks"], key=lambda entry: entry["id"])
    assert (long["status"], long["reason"]) == (
        "failed",
        "step budget exhausted (2 steps) without a result",
    )
    assert fits["status"] == "done"  # 4 + 7 steps: the run has 1 left
    assert over["status"] == "cancelled" and "step budget is spent (12 of 12)" in over["reason"]
    assert never["status"] == "cancelled" and never["reason"].startswith("not started")
    run = await rig.swarm.repo.get_run(answer["run"])
    assert (run.status, run.steps) == ("cancelled", 12)


async def test_tools_beyond_the_parents_depth_and_spawn_caps_are_refused(
    rig_factory: Any,
) -> None:
    rig = await rig_factory(max_spawns_per_run=3, max_depth=1)
    refused = await rig.delegate({"goal": "x", "tools": ["echo", "rm_everything"]})
    assert "only get tools its parent has" in refused["error"]
    assert "rm_everything" in refused["error"]
    deep = await rig.delegate({"goal": "x", "tools": ["delegate"]})
    assert "may not delegate" in deep["error"]
    shape = await rig.delegate({"goal": "x", "result_shape": {"type": "object", "oneOf": []}})
    assert "unsupported keyword" in shape["error"]
    two = {"tasks": [task("behave=ok"), task("behave=ok")]}
    rig.script.coordinator.extend(  # one coordinator turn: one run, one spawn cap
        [Reply(tool_calls=[("delegate", json.dumps(two))])] * 2 + [Reply(content="done")]
    )
    await rig.ask()
    coordinator = [r for r in rig.fake.requests if not _is_child(r)]
    ok = json.loads(coordinator[-2]["messages"][-1]["content"])
    assert ok["summary"] == {"done": 2}
    capped = rig.tool_answer()
    assert "spawn cap: this run may start 3 sub-agents and has started 2" in capped["error"]
    assert not any(_is_child(r) for r in rig.fake.requests[-2:])
    assert len(await rig.swarm.repo.tasks(ok["run"])) == 2


async def test_a_privileged_tool_in_a_child_still_needs_a_person(rig_factory: Any) -> None:
    restarts.clear()
    rig = await rig_factory()
    answer = await rig.delegate(
        task("behave=ok steps=1 tool=restart_service", tools=["restart_service"])
    )
    assert answer["summary"] == {"done": 1}
    assert restarts == []  # unattended: denied at once, never run
    [child] = await rig.tasks(answer)
    intent = [s for s in await rig.swarm.repo.steps(child.id) if s.kind == "tool"]
    assert [(s.name, s.state) for s in intent] == [("restart_service", "failed")]
    assert "privileged" in (intent[0].error or "")


async def test_the_coordinator_retries_a_failed_child_with_a_changed_brief(
    rig_factory: Any,
) -> None:
    rig = await rig_factory()
    first = {"tasks": [task("behave=fail id=r")]}
    retry = {"tasks": [task("behave=ok id=r2", retry_of=1)]}
    rig.script.coordinator.extend(
        [
            Reply(tool_calls=[("delegate", json.dumps(first))]),
            Reply(tool_calls=[("delegate", json.dumps(retry))]),
            Reply(content="done"),
        ]
    )
    await rig.ask()
    coordinator = [r for r in rig.fake.requests if not _is_child(r)]
    failed = json.loads(coordinator[1]["messages"][-1]["content"])
    assert failed["subtasks"][0]["status"] == "failed"
    again = rig.tool_answer()
    [entry] = again["subtasks"]
    assert (entry["id"], entry["status"], entry["attempts"]) == (1, "done", 2)
    assert entry["result"]["id"] == "r2"
    assert again["run"] == failed["run"]
    run = await rig.swarm.repo.get_run(again["run"])
    assert (run.status, run.reason, run.spawns) == ("done", None, 1)  # reopened, then done
    [row] = await rig.swarm.repo.tasks(again["run"])
    assert (row.goal, row.epoch) == ("behave=ok id=r2", 3)


async def test_a_child_past_its_deadline_fails_and_its_retry_gets_a_fresh_deadline(
    rig_factory: Any,
) -> None:
    rig = await rig_factory(stall_seconds=0.4)  # the watchdog looks every 0.1 s
    first = {"tasks": [task("behave=ok delay=5 id=late", deadline_seconds=0.3)]}
    again = task("behave=ok delay=0.2 steps=1 id=on-time", retry_of=1, deadline_seconds=5)
    retry = {"tasks": [again]}
    rig.script.coordinator.extend(
        [
            Reply(tool_calls=[("delegate", json.dumps(first))]),
            Reply(tool_calls=[("delegate", json.dumps(retry))]),
            Reply(content="done"),
        ]
    )
    await rig.ask()
    coordinator = [r for r in rig.fake.requests if not _is_child(r)]
    late = json.loads(coordinator[1]["messages"][-1]["content"])["subtasks"][0]
    assert (late["status"], late["reason"]) == ("failed", "deadline passed before a result")
    [again] = rig.tool_answer()["subtasks"]
    assert (again["status"], again["attempts"], again["result"]["id"]) == ("done", 2, "on-time")


async def test_many_results_fit_the_coordinators_tool_output_failures_first(
    rig_factory: Any,
) -> None:
    rig = await rig_factory(concurrency=20)
    rig.swarm.settings.agent.tool_output_chars = 2_000
    answer = await rig.delegate(
        *(task(f"behave=ok steps=0 id=host-{i:02d}") for i in range(40)), task("behave=fail")
    )  # a truncated answer would not parse as JSON
    assert answer["summary"] == {"done": 40, "failed": 1}
    first, *rest = answer["subtasks"]
    assert first["status"] == "failed"
    assert 5 < len(rest) < 40 and answer["not_shown"] == {"done": 40 - len(rest)}


async def test_a_parent_cancelled_mid_run_leaves_no_child_running(rig_factory: Any) -> None:
    rig = await rig_factory()
    rig.script.coordinator.append(
        Reply(tool_calls=[("delegate", json.dumps({"tasks": [task("behave=stall_always")]}))])
    )
    running = asyncio.create_task(rig.ask())
    for _ in range(500):
        if rig.swarm.live():
            break
        await asyncio.sleep(0.01)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert rig.swarm.live() == 0
    run_tasks = await rig.swarm.repo.tasks(1)
    assert [(t.status, t.reason) for t in run_tasks] == [("cancelled", "cancelled by its parent")]


async def test_a_sub_agent_delegates_within_the_depth_limit_and_only_its_own_tools(
    rig_factory: Any,
) -> None:
    # one slot: a parent waiting for its child gives its slot up, or this would never end
    rig = await rig_factory(max_depth=2, concurrency=1)
    async with asyncio.timeout(30):
        answer = await rig.delegate(
            task("behave=nest id=n1 subtools=echo", tools=["delegate", "echo"]),
            task("behave=nest id=n2 subtools=restart_service", tools=["delegate", "echo"]),
        )
    ok, refused = answer["subtasks"]
    assert ok["status"] == refused["status"] == "done"
    inner = json.loads(ok["result"]["delegated"])
    assert inner["summary"] == {"done": 1} and inner["run"] == answer["run"]
    assert "restart_service" in refused["result"]["delegated"]
    assert "only get tools its parent has" in refused["result"]["delegated"]
    tree = await rig.swarm.repo.tasks(answer["run"])
    assert [(t.depth, t.parent_task_id, t.status) for t in tree] == [
        (1, None, "done"),
        (1, None, "done"),
        (2, tree[0].id, "done"),
    ]
    assert tree[2].goal == "behave=ok steps=0 id=n1-child"


async def test_the_daily_budget_still_stops_the_swarm(rig_factory: Any) -> None:
    rig = await rig_factory({}, concurrency=1)
    rig.loop._llm.set_budget(
        rig.swarm.settings.agent.budget.model_copy(update={"daily_tokens": 40})
    )
    call = {"tasks": [task("behave=ok steps=4 id=a"), task("behave=ok id=b")]}
    rig.script.coordinator.append(Reply(tool_calls=[("delegate", json.dumps(call))]))
    result = await rig.ask()
    assert result.status == "budget"  # the coordinator's own last call is refused too
    a, b = await rig.swarm.repo.tasks(1)
    assert a.status == "failed" and "budget" in (a.reason or "")
    assert (b.status, b.reason) == ("cancelled", "not started: the daily token budget is spent: "
                                    f"{a.reason.removeprefix('budget: ')}")  # fmt: skip
    assert rig.script.calls["ok"] == 2  # 15 + 15 + 15 tokens: the third call was never sent


def _starts(rig: Rig) -> list[str]:
    """Sub-agent goals in the order their attempts sent their first request."""
    firsts = [r for r in rig.fake.requests if _is_child(r) and len(r["messages"]) == 2]
    return [str(r["messages"][1]["content"]) for r in firsts]


async def test_longer_expected_subtasks_start_first(rig_factory: Any) -> None:
    """With more subtasks than slots, the ones expected to take longest go first (ties and
    subtasks without an estimate keep the order given), so the run does not end waiting for
    a long one that started last."""
    rig = await rig_factory(concurrency=1)
    answer = await rig.delegate(
        task("behave=ok id=a"),
        task("behave=ok id=b", expected_seconds=5),
        task("behave=ok id=c", expected_seconds=50),
        task("behave=ok id=d", expected_seconds=5),
    )
    assert answer["summary"] == {"done": 4}
    assert _starts(rig) == [f"behave=ok id={x}" for x in "cbda"]


async def test_a_stalled_subtasks_retry_goes_before_queued_new_ones(rig_factory: Any) -> None:
    rig = await rig_factory({"stream": True}, concurrency=1, stall_seconds=0.2)
    answer = await rig.delegate(
        task("behave=stall steps=0 id=s"), task("behave=ok id=k1"), task("behave=ok id=k2")
    )
    assert answer["summary"] == {"done": 3}
    stall = "behave=stall steps=0 id=s"
    assert _starts(rig) == [stall, stall, "behave=ok id=k1", "behave=ok id=k2"]


async def test_a_shutdown_pauses_the_run_and_the_next_start_resumes_it(rig_factory: Any) -> None:
    """Stopping the daemon mid-run neither waits for the swarm nor ends it: running sub-agents
    stop without a final status, queued ones stay queued, the coordinator is told the run is
    paused, and the next start finishes it without redoing finished work."""
    rig = await rig_factory(concurrency=1)
    goals = [f"behave=ok steps=3 delay=0.2 id=p{i}" for i in range(3)]
    call = Reply(tool_calls=[("delegate", json.dumps({"tasks": [task(g) for g in goals]}))])
    rig.script.coordinator.extend([call, Reply(content="The run is paused for the restart.")])
    asking = asyncio.create_task(rig.ask())

    async def part_way() -> bool:
        rows = await rig.swarm.repo.tasks(1)
        return [t.status for t in rows] == ["done", "running", "queued"] and rows[1].steps >= 2

    await eventually(part_way, 20, "the first sub-agent done, the second part way")
    assert rig.swarm.suspend("nightshift is stopping") == 1
    result = await asyncio.wait_for(asking, 10)
    assert result.status == "ok" and "paused" in result.text
    said = rig.tool_answer()["error"]
    assert "swarm run 1 is paused with 1 of 3 sub-agents finished" in said
    assert "resumes when nightshift starts again" in said
    assert [t.status for t in await rig.swarm.repo.tasks(1)] == ["done", "running", "queued"]
    assert (await rig.swarm.repo.get_run(1)).status == "running"
    await rig.swarm.close()
    split = len(rig.fake.requests)

    again = rig.restarted()
    [report] = await again.resume()
    assert report["summary"] == {"done": 3}
    assert [t.status for t in await again.repo.tasks(1)] == ["done"] * 3
    goals_sent = [
        str(r["messages"][1]["content"]) for r in rig.fake.requests[split:] if _is_child(r)
    ]
    assert goals[0] not in goals_sent  # finished: not redone
    assert again.replayed >= 2  # the interrupted one went on from its recorded replies
    await again.close()


async def _run_left_running(repo: SwarmRepo) -> int:
    """A swarm run as a dead process leaves it (its coordinator's turn gone); its id."""
    return await repo.start_run(
        actor="test:ann", goal="check", agent_run_id=None, max_tokens=1_000_000, max_steps=100,
        max_spawns=10, unattended=True, origin=None,
    )  # fmt: skip


async def test_queued_subtasks_taken_up_after_a_restart_start_longest_expected_first(
    rig_factory: Any,
) -> None:
    rig = await rig_factory(concurrency=1)
    repo = rig.swarm.repo
    run_id = await _run_left_running(repo)
    expected = {"a": None, "b": 5.0, "c": 50.0}
    specs = [
        TaskSpec(goal=f"behave=ok id={name}", role="worker", tools=("echo",), max_tokens=10_000,
                 max_steps=5, result_shape=SHAPE, expected_seconds=seconds)
        for name, seconds in expected.items()
    ]  # fmt: skip
    await repo.add_tasks(run_id, None, 1, specs)
    [report] = await rig.swarm.resume()
    assert report["summary"] == {"done": 3}
    assert _starts(rig) == [f"behave=ok id={x}" for x in "cba"]


async def test_a_later_turn_retries_a_failed_subtask_of_an_earlier_run(rig_factory: Any) -> None:
    """The person asks, a turn later (or after a restart), to retry what failed: the retry runs
    in the new run with the earlier subtask's tools and result shape; nobody else may retry it."""
    rig = await rig_factory()
    first = await rig.delegate(task("behave=fail id=r"))
    [failed] = first["subtasks"]
    assert failed["status"] == "failed"
    # only the goal is given again: tools and result shape come from the earlier subtask
    again = await rig.delegate({"goal": "behave=ok id=r2", "retry_of": failed["id"]})
    [entry] = again["subtasks"]
    assert again["run"] != first["run"]
    assert (entry["status"], entry["result"]["id"]) == ("done", "r2")
    [row] = await rig.swarm.repo.tasks(again["run"])
    assert (row.tools, row.result_shape) == (("echo",), SHAPE)

    rig.script.coordinator.extend(
        [Reply(tool_calls=[("delegate", json.dumps({"tasks": [
            {"goal": "behave=ok id=r3", "retry_of": failed["id"]}]}))]),
         Reply(content="no")],
    )  # fmt: skip
    conversation = await rig.conversations.get_or_create("test", "c2")
    stranger = AgentRequest(conversation_id=conversation.id, text="retry theirs",
                            actor="test:bob", unattended=True)  # fmt: skip
    await rig.loop.run(stranger)
    refused = rig.tool_answer()["error"]
    assert f"subtask {failed['id']} is not one of yours to retry" in refused


async def test_a_stop_while_a_run_is_being_resumed_pauses_it_again(rig_factory: Any) -> None:
    """Restarted twice in a row: the second stop comes while the first restart is still
    resuming the run. It is paused again (not ended cancelled or partial), and the third start
    finishes it."""
    rig = await rig_factory(concurrency=1)
    repo = rig.swarm.repo
    run_id = await _run_left_running(repo)
    specs = [
        TaskSpec(goal=f"behave=ok steps=2 delay=0.2 id=q{i}", role="worker", tools=("echo",),
                 max_tokens=10_000, max_steps=5, result_shape=SHAPE)
        for i in range(3)
    ]  # fmt: skip
    await repo.add_tasks(run_id, None, 1, specs)

    second = rig.restarted()
    resuming = asyncio.create_task(second.resume())

    async def part_way() -> bool:
        return [t.status for t in await repo.tasks(run_id)][:2] == ["done", "running"]

    await eventually(part_way, 20, "the resumed run part way")
    second.suspend("nightshift is stopping")
    assert await asyncio.wait_for(resuming, 10) == [
        {"run": run_id, "paused": "nightshift is stopping"}
    ]
    await second.close()
    assert [t.status for t in await repo.tasks(run_id)] == ["done", "running", "queued"]
    assert (await repo.get_run(run_id)).status == "running"

    third = rig.restarted()
    [report] = await third.resume()
    assert report["summary"] == {"done": 3}
    await third.close()


async def test_a_stop_while_a_parent_waits_for_its_children_leaves_the_slots_whole(
    rig_factory: Any,
) -> None:
    """A sub-agent that delegated gave its slot up while it waits; stopped then, it must not
    give the slot back a second time (one slot too many would break the concurrency limit for
    every later run)."""
    rig = await rig_factory(max_depth=2, concurrency=1)
    call = Reply(tool_calls=[("delegate", json.dumps({"tasks": [
        task("behave=nest id=n1 subtools=echo", tools=["delegate", "echo"]),
        task("behave=ok steps=3 delay=0.3 id=slow"),
    ]}))])  # fmt: skip
    rig.script.coordinator.extend([call, Reply(content="paused")])
    asking = asyncio.create_task(rig.ask())

    async def parent_waiting() -> bool:
        rows = await rig.swarm.repo.tasks(1)
        return len(rows) == 3 and rows[1].status == "running" and rows[1].steps >= 1

    await eventually(parent_waiting, 20, "the parent waiting, the slow one running")
    rig.swarm.suspend("nightshift is stopping")
    await asyncio.wait_for(asking, 10)
    await rig.swarm.close()
    assert (rig.swarm._slots.held, rig.swarm._slots.waiting) == (0, 0)


async def test_a_parent_stopped_before_it_has_its_slot_back_does_not_release_it_twice(
    rig_factory: Any,
) -> None:
    """The mechanism under the test above, forced: the parent's wait to take its slot back
    is cancelled while another sub-agent holds the only slot."""
    from daemon.agent.swarm.coordinator import _Frame, _Hold

    rig = await rig_factory(concurrency=1)
    swarm, slots = rig.swarm, rig.swarm._slots
    await slots.acquire()  # the parent's driver holds the slot...
    hold = _Hold(held=True)
    frame = _Frame(RunBudget(run_id=1, agent_run_id=None, max_tokens=1, max_steps=1), 7, 1,
                   frozenset(), hold)  # fmt: skip
    taken = asyncio.Event()

    async def parent() -> None:
        async with swarm._slot_released(frame):  # ...gives it up to wait for its children
            await slots.acquire()  # a child takes it
            taken.set()
            await asyncio.Event().wait()  # holds it until stopped

    waiting = asyncio.create_task(parent())
    await taken.wait()
    waiting.cancel()  # stopped: it leaves the block and waits to take the slot back...
    await eventually(lambda: slots.waiting == 1, 5, "the parent waiting for its slot")
    waiting.cancel()  # ...and is stopped again there, before it has it
    with contextlib.suppress(asyncio.CancelledError):
        await waiting
    if hold.held:  # what its driver does on the way out
        slots.release()
    slots.release()  # the child ends
    assert (slots.held, slots.waiting) == (0, 0)


async def test_an_infinite_estimate_is_refused_with_the_field_named(rig_factory: Any) -> None:
    rig = await rig_factory()
    raw = '{"tasks": [{"goal": "behave=ok id=x", "tools": ["echo"], "expected_seconds": 1e999}]}'
    rig.script.coordinator.extend([Reply(tool_calls=[("delegate", raw)]), Reply(content="ok")])
    await rig.ask()
    said = rig.tool_answer()["error"]
    assert "expected_seconds" in said and "finite" in said
    assert await rig.swarm.repo.unfinished_runs() == []  # nothing was queued
