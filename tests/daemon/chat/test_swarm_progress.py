"""Swarm progress in chat, in process: the real agent loop and swarm against the fake model on
loopback, a real SQLite store, and the console channel (recording, or failing its edits)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from daemon.agent.build import build_agent, build_llm
from daemon.agent.loop import AgentRequest, AgentResult
from daemon.agent.swarm import Swarm, attach_swarm
from daemon.agent.tools.base import Tier, ToolContext, ToolRegistry, tool
from daemon.chat.progress import SwarmProgress, render
from daemon.config import load_settings
from daemon.core.clock import SystemClock
from daemon.core.errors import DeliveryError, PermanentDeliveryError
from integrations.base import OutgoingMessage
from integrations.console import ConsoleChannel
from memory.conversations import ConversationRepo
from memory.store import SqliteStore
from memory.swarm import SwarmTask, TaskSpec
from tests.fakes.chat_completions import FakeChatServer, Reply, SwarmScript

THROTTLE = 0.2


@tool(tier=Tier.READ_ONLY)
async def echo(ctx: ToolContext, text: str) -> dict[str, Any]:
    """Echo text back.

    Args:
        text: What to echo.
    """
    return {"echo": text}


class RecordingConsole(ConsoleChannel):
    """The console channel, keeping what it sent and edited; its edits may fail."""

    def __init__(self, fail_edits: bool = False) -> None:
        super().__init__()
        self.sent: list[str] = []
        self.edited: list[str] = []
        self.edited_ids: set[str] = set()
        self.gone: set[str] = set()  # messages deleted on the platform: their edits are refused
        self.fail_edits = fail_edits
        self.tried = 0

    async def send(self, message: OutgoingMessage) -> str:
        self.sent.append(message.text)
        return await super().send(message)

    async def edit(self, target: str, platform_id: str, text: str) -> None:
        self.tried += 1
        if self.fail_edits:
            raise DeliveryError("502 bad gateway")
        if platform_id in self.gone:
            raise PermanentDeliveryError("message_not_found")
        self.edited.append(text)
        self.edited_ids.add(platform_id)
        await super().edit(target, platform_id, text)


@dataclass
class Rig:
    swarm: Swarm
    progress: SwarmProgress
    script: SwarmScript
    loop: Any
    conversations: ConversationRepo

    async def run(
        self,
        count: int,
        *,
        origin: str | None,
        delay: float = 0.1,
        on_event: Callable[[dict[str, Any]], Coroutine[Any, Any, None]] | None = None,
    ) -> AgentResult:
        tasks = [
            {"goal": f"behave=ok steps=1 delay={delay} id=h{i}", "tools": ["echo"]}
            for i in range(count)
        ]
        call = Reply(tool_calls=[("delegate", json.dumps({"tasks": tasks}))])
        self.script.coordinator.extend([call, Reply(content="all checked")])
        conversation = await self.conversations.get_or_create("console", "c1")
        request = AgentRequest(
            conversation_id=conversation.id, text="check the fleet", actor="console:ann",
            unattended=True, origin=origin,
        )  # fmt: skip
        result: AgentResult = await self.loop.run(request, on_event)
        assert result.status == "ok", result
        await self.progress._tasks.wait_idle()  # the final edit has landed
        return result


@pytest.fixture
async def rig_factory(
    tmp_path: Path, fake_llm: FakeChatServer
) -> AsyncIterator[Callable[[RecordingConsole], Coroutine[Any, Any, Rig]]]:
    opened: list[tuple[SqliteStore, Any, Swarm, SwarmProgress]] = []

    async def make(channel: RecordingConsole) -> Rig:
        settings = load_settings(
            None,
            overrides={
                "llm": {"base_url": fake_llm.base_url, "api_key": "sk-test", "max_retries": 0,
                        "retry_initial_seconds": 0, "concurrency": 50},
                "agent": {"swarm": {"concurrency": 4, "progress_edit_seconds": THROTTLE}},
            },
            environ_secrets=False,
        )  # fmt: skip
        clock = SystemClock()
        store = await SqliteStore.open(tmp_path / "db.sqlite")
        client = build_llm(settings, usage=None, clock=clock)
        conversations = ConversationRepo(store, clock)
        loop = build_agent(
            settings=settings, store=store, clock=clock, llm=client,
            registry=ToolRegistry([echo]), conversations=conversations,
        )  # fmt: skip
        swarm = attach_swarm(loop, settings=settings, llm=client, store=store, clock=clock)
        progress = SwarmProgress(
            channels={"console": channel},
            repo=swarm.repo,
            every=lambda: settings.agent.swarm.progress_edit_seconds,
        )
        swarm.observers.append(progress.observe)
        await channel.start()
        script = SwarmScript()
        fake_llm.responder = script
        opened.append((store, client, swarm, progress))
        return Rig(swarm, progress, script, loop, conversations)

    yield make
    for store, client, swarm, progress in opened:
        await progress.close()
        await swarm.close()
        await client.close()
        await store.close()


async def test_edits_coalesce_under_the_throttle_and_the_last_shows_the_final_counts(
    rig_factory: Callable[[RecordingConsole], Coroutine[Any, Any, Rig]],
) -> None:
    channel = RecordingConsole()
    rig = await rig_factory(channel)
    loop_time = asyncio.get_running_loop().time
    started = loop_time()
    await rig.run(20, origin="console|ops|")
    elapsed = loop_time() - started
    assert len(channel.sent) == 1 and channel.sent[0].startswith("swarm #")
    assert 1 <= len(channel.edited) <= elapsed / THROTTLE + 2, (len(channel.edited), elapsed)
    assert len(set(channel.edited)) == len(channel.edited)  # never the same text twice
    assert "finished in" in channel.edited[-1]
    assert "20 sub-agents — 20 done; 60 steps" in channel.edited[-1]
    run = await rig.swarm.repo.get_run(1)  # its message is kept for a resume after a restart
    assert run.progress_message is not None and run.progress_message.startswith("console-")


async def test_failing_edits_are_logged_once_and_the_run_goes_on(
    rig_factory: Callable[[RecordingConsole], Coroutine[Any, Any, Rig]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    channel = RecordingConsole(fail_edits=True)
    rig = await rig_factory(channel)
    with caplog.at_level(logging.INFO, logger="daemon.chat.progress"):
        result = await rig.run(16, origin="console|ops|", delay=0.15)
    assert result.text == "all checked"
    assert len(channel.sent) == 1
    assert 1 <= channel.tried <= 3  # gives up after 3 failures in a row: no retry storm
    warnings = [r for r in caplog.records if "not updated" in r.getMessage()]
    assert len(warnings) == 1
    assert any("finished in" in r.getMessage() for r in caplog.records)  # still logged


async def test_a_run_without_a_conversation_posts_nothing_and_logs_its_summary(
    rig_factory: Callable[[RecordingConsole], Coroutine[Any, Any, Rig]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    channel = RecordingConsole()
    rig = await rig_factory(channel)
    with caplog.at_level(logging.INFO, logger="daemon.chat.progress"):
        await rig.run(5, origin=None)
    assert channel.sent == [] and channel.edited == []
    lines = [r.getMessage() for r in caplog.records if "swarm #" in r.getMessage()]
    assert lines[0].startswith("swarm #") and "5 sub-agents" in lines[0]
    assert "finished in" in lines[-1] and "5 done" in lines[-1]


async def test_a_console_turn_without_a_chat_gets_the_progress_as_interim_events(
    rig_factory: Callable[[RecordingConsole], Coroutine[Any, Any, Rig]],
) -> None:
    channel = RecordingConsole()
    rig = await rig_factory(channel)
    events: list[dict[str, Any]] = []

    async def collect(event: dict[str, Any]) -> None:
        events.append(event)

    # what `nightshift chat` does through the local API: no origin, the turn's events streamed
    result = await rig.run(6, origin=None, on_event=collect, delay=0.3)
    assert result.text == "all checked"
    assert channel.sent == []  # no chat message: the stream is where the person waits
    lines = [e["text"] for e in events if e.get("type") == "progress" and "swarm_run" in e]
    assert lines and lines[0].startswith("swarm #") and "6 sub-agents" in lines[0]
    assert len(set(lines)) == len(lines)  # an update only when something changed
    assert "finished in" in lines[-1] and "6 done" in lines[-1]


async def test_a_channel_that_cannot_edit_gets_no_progress_message(
    rig_factory: Callable[[RecordingConsole], Coroutine[Any, Any, Rig]],
) -> None:
    channel = RecordingConsole()
    channel.__dict__["edit"] = None  # a platform without edits: nothing to keep up to date
    rig = await rig_factory(channel)
    result = await rig.run(5, origin="console|ops|")
    assert result.text == "all checked"  # the answer is the reply, as always
    assert channel.sent == [] and channel.tried == 0


async def _left_running(rig: Rig) -> int:
    """What a process killed right after queuing leaves: a running run with 3 queued
    sub-agents; its id."""
    repo = rig.swarm.repo
    run_id = await repo.start_run(
        actor="console:ann", goal="check the fleet", agent_run_id=None, max_tokens=1_000_000,
        max_steps=1_000, max_spawns=10, unattended=True, origin="console|ops|",
    )  # fmt: skip
    specs = [
        TaskSpec(goal=f"behave=ok steps=1 delay=0.1 id=r{i}", role="worker", tools=("echo",),
                 max_tokens=100_000, max_steps=10)
        for i in range(3)
    ]  # fmt: skip
    assert len(await repo.add_tasks(run_id, None, 1, specs)) == 3
    return run_id


@pytest.mark.parametrize("deleted", [False, True], ids=["kept", "deleted-meanwhile"])
async def test_a_resumed_run_edits_the_progress_message_it_had_before_the_restart(
    rig_factory: Callable[[RecordingConsole], Coroutine[Any, Any, Rig]], deleted: bool
) -> None:
    """One run, one message: after a restart the run goes on editing the message it posted
    (its id was kept with the run), or posts a new one if that message is gone."""
    channel = RecordingConsole()
    rig = await rig_factory(channel)
    run_id = await _left_running(rig)
    before = OutgoingMessage(outbox_id=0, target="ops", text=f"swarm #{run_id}: 3 sub-agents")
    old_id = await channel.send(before)  # what the dead process had posted...
    await rig.swarm.repo.set_progress_message(run_id, old_id)  # ...and kept
    if deleted:
        channel.gone.add(old_id)

    [report] = await rig.swarm.resume()
    await rig.progress._tasks.wait_idle()

    assert report["summary"] == {"done": 3}
    final = channel.edited[-1]
    assert final.startswith(f"swarm #{run_id} (resumed after a restart) finished in ")
    if deleted:
        assert len(channel.sent) == 2 and old_id not in channel.edited_ids
        assert (await rig.swarm.repo.get_run(run_id)).progress_message not in (None, old_id)
    else:
        assert len(channel.sent) == 1 and channel.edited_ids == {old_id}  # no second message


async def test_a_run_resumed_after_a_restart_gets_a_fresh_message_and_its_final_summary(
    rig_factory: Callable[[RecordingConsole], Coroutine[Any, Any, Rig]],
) -> None:
    channel = RecordingConsole()
    rig = await rig_factory(channel)
    run_id = await _left_running(rig)  # killed before its progress message was posted

    [report] = await rig.swarm.resume()
    await rig.progress._tasks.wait_idle()  # the final edit has landed

    assert report["summary"] == {"done": 3}
    [first] = channel.sent  # one fresh message in the chat the run came from
    assert first.startswith(f"swarm #{run_id} (resumed after a restart): 3 sub-agents")
    final = channel.edited[-1]
    assert final.startswith(f"swarm #{run_id} (resumed after a restart) finished in ")
    assert "3 sub-agents — 3 done" in final


def _task(i: int, status: str, reason: str | None = None, attempt: int = 1) -> SwarmTask:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return SwarmTask(
        id=i, run_id=12, parent_task_id=None, depth=1, goal="g", role="worker", tools=(),
        max_tokens=1, max_steps=1, deadline_at=None, result_shape=None, status=status,
        reason=reason, attempt=attempt, epoch=1, result=None, tokens=0, steps=0,
        created_at=now, started_at=None, progress_at=None, finished_at=None,
    )  # fmt: skip


def test_the_text_counts_every_status_and_the_summary_groups_reasons() -> None:
    tasks = (
        [_task(i, "done") for i in range(12)]
        + [_task(100 + i, "running") for i in range(25)]
        + [_task(200 + i, "queued") for i in range(3)]
    )
    live = render(12, tasks, steps=210, tokens=81_234, seconds=30, final=False)
    assert live == "swarm #12: 40 sub-agents — 12 done, 25 running, 3 queued; 210 steps, 81k tokens"
    tasks = (
        [_task(i, "done", attempt=2 if i < 3 else 1) for i in range(37)]
        + [_task(50, "failed", "model API: 500"), _task(51, "failed", "model API: 500")]
        + [_task(52, "stalled", "stalled: no progress for 90.2 s", attempt=2)]
    )
    final = render(12, tasks, steps=412, tokens=160_000, seconds=72, final=True)
    assert final == (
        "swarm #12 finished in 1m 12s: 40 sub-agents — 37 done, 2 failed, 1 stalled; "
        "412 steps, 160k tokens; 4 reassigned\n"
        "failed 2: model API: 500 (×2)\n"
        "stalled 1: stalled: no progress for 90.2 s"
    )


def test_a_resumed_run_says_so_live_and_in_its_summary() -> None:
    tasks = [_task(1, "done"), _task(2, "running")]
    live = render(12, tasks, steps=3, tokens=900, seconds=5, final=False, resumed=True)
    head = "swarm #12 (resumed after a restart): "
    assert live == head + "2 sub-agents — 1 done, 1 running; 3 steps, 900 tokens"
    final = render(12, tasks[:1], steps=4, tokens=1_200, seconds=75, final=True, resumed=True)
    assert final == (
        "swarm #12 (resumed after a restart) finished in 1m 15s: 1 sub-agent — 1 done; "
        "4 steps, 1k tokens"
    )


def test_a_run_paused_for_a_shutdown_says_it_goes_on_at_the_next_start() -> None:
    tasks = [_task(1, "done"), _task(2, "running"), _task(3, "queued")]
    final = render(12, tasks, steps=5, tokens=2_000, seconds=8, final=True,
                   paused="nightshift is stopping")  # fmt: skip
    assert final == (
        "swarm #12 paused after 8 s: 3 sub-agents — 1 done, 1 running, 1 queued; "
        "5 steps, 2k tokens\n"
        "paused: nightshift is stopping; it resumes when nightshift starts again"
    )
