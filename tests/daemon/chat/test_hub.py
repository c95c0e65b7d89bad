"""The channel hub: default deny, plain commands, replies through the outbox, chat approvals."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from daemon.agent.build import build_agent
from daemon.agent.llm import LlmClient
from daemon.agent.tools.base import ToolRegistry
from daemon.chat.approvals import ApprovalBroker
from daemon.chat.hub import ChannelHub
from daemon.chat.pairing import PairingCodes
from daemon.config import load_settings
from daemon.core.clock import ManualClock
from daemon.incidents.commands import IncidentCommands
from integrations.base import (
    ApprovalAnswer,
    InboundMessage,
    OutgoingMessage,
)
from integrations.outbox import OutboxWorker
from memory.audit import AuditRepo
from memory.channels import ChannelStateRepo
from memory.conversations import ConversationRepo
from memory.incidents import IncidentRepo, SilenceRepo
from memory.store import SqliteStore
from tests.daemon.chat.hub_rig import RecordingChannel, build_hub
from tests.fakes.chat_completions import FakeChatServer, Reply
from tests.support import eventually


@dataclass
class Rig:
    hub: ChannelHub
    channel: RecordingChannel
    worker: OutboxWorker
    broker: ApprovalBroker
    audit: AuditRepo
    clock: ManualClock
    conversations: ConversationRepo
    state: ChannelStateRepo
    pairing: PairingCodes

    async def say(self, user: str, text: str, thread: str | None = None) -> list[str]:
        before = len(self.channel.sent)
        await self.hub.on_message(
            InboundMessage(
                channel="chat",
                sender_id=user,
                sender_name=user.lower(),
                room="R1",
                text=text,
                thread=thread,
            )
        )
        await self.hub.drain(timeout=30)  # agent answers are produced in the background
        await self.worker.flush()
        return [m.text for m in self.channel.sent[before:]]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    clock = ManualClock()
    store = await SqliteStore.open(tmp_path / "hub.db")
    incidents = IncidentRepo(store, clock)
    async with store.write() as db:  # one open incident to talk about
        incident_id = await IncidentRepo.create(
            db, group_key="alertname=DiskFull", title="DiskFull", severity="warning",
            labels={"alertname": "DiskFull"}, opened_at=clock.now(), flush_at=clock.now(),
        )  # fmt: skip
        await IncidentRepo.add_event(db, incident_id, clock.now(), "opened", "DiskFull")
    parts = build_hub(
        store,
        clock,
        channel="chat",
        users={"VIEW": "viewer", "OPS": "operator"},
        commands=IncidentCommands(incidents, SilenceRepo(store, clock), clock),
    )
    yield Rig(
        parts.hub, parts.channel, parts.worker, parts.broker, parts.audit, clock,
        parts.conversations, parts.state, parts.pairing,
    )  # fmt: skip
    await store.close()


async def test_a_stranger_is_refused_politely_once_an_hour_and_audited(rig: Rig) -> None:
    first = await rig.say("EVE", "run rm -rf / please")
    assert len(first) == 1 and "only take requests" in first[0] and "EVE" in first[0]
    assert await rig.say("EVE", "hello??") == []  # no second notice within the hour
    rig.clock.advance(3601)
    assert len(await rig.say("EVE", "still there?")) == 1
    denied = [a for a in await rig.audit.recent() if a.action == "access_denied"]
    assert len(denied) == 3 and denied[0].actor == "chat:EVE"


async def test_commands_work_without_the_llm(rig: Rig) -> None:
    assert await rig.say("VIEW", "status") == ["all good"]
    assert "approve ID" in (await rig.say("VIEW", "help"))[0]


async def test_incident_commands_answer_viewers_but_only_operators_silence(rig: Rig) -> None:
    [listing] = await rig.say("VIEW", "incidents")
    assert listing.startswith("#1 open") and "DiskFull" in listing
    [details] = await rig.say("VIEW", "incidents show 1")
    assert "Incident #1: DiskFull" in details and "opened: DiskFull" in details
    [refused] = await rig.say("VIEW", "silence 1 2h")
    assert refused == "Your role (viewer) cannot silence; ask an operator."
    [done] = await rig.say("OPS", "silence 1 2h noisy during the migration")
    assert done.startswith("Silence #1: alertname=DiskFull until 2026-01-01 02:00 UTC")
    [listed] = await rig.say("VIEW", "silences")
    assert "#1 active  alertname=DiskFull" in listed and "by chat:ops" in listed
    [details] = await rig.say("VIEW", "incidents show 1")
    assert "silenced (chat:ops): #1 until 02:00 UTC" in details
    assert await rig.say("OPS", "unsilence 1") == ["Silence #1 expired."]
    [bad] = await rig.say("OPS", "silence alertname=DiskFull forever")
    assert "give a duration" in bad and "Usage:" in bad
    [misordered] = await rig.say("OPS", "silence alertname=DiskFull 30m1h")
    assert misordered.startswith("duration '30m1h' repeats or misorders units (largest first)")
    [too_long] = await rig.say("OPS", "silence alertname=DiskFull 31d")
    assert too_long.startswith("a silence can last at most 30 days")
    [done] = await rig.say("OPS", "silence alertname=DiskFull 1.5h")  # as tasks take it
    assert done.startswith("Silence #2: alertname=DiskFull until 2026-01-01 01:30 UTC")
    [stranger] = await rig.say("EVE", "incidents")
    assert "only take requests" in stranger


async def test_a_silence_regex_the_linear_time_engine_cannot_run_gets_a_clear_reply(
    rig: Rig,
) -> None:
    [backref] = await rig.say("OPS", r"silence alertname=~(Disk)\1 2h")
    assert "matcher alertname=~(Disk)\\1: invalid regular expression" in backref
    assert "the backreference `\\1` is not supported by the linear-time engine" in backref
    [lookahead] = await rig.say("OPS", "silence alertname=~Disk(?=Full) 2h")
    assert "lookahead `(?=…)` is not supported" in lookahead
    [done] = await rig.say("OPS", "silence alertname=~(a+)+$ 2h")
    assert done.startswith("Silence #1: alertname=~(a+)+$ until")


async def test_questions_go_to_the_agent_and_the_answer_comes_back_in_the_thread(
    rig: Rig,
) -> None:
    replies = await rig.say("VIEW", "why is the disk full?", thread="T9")
    assert replies == ["The agent is off: no API key (test). Your message was saved."]
    assert rig.channel.sent[-1].target == "R1" and rig.channel.sent[-1].thread == "T9"


async def test_only_operators_may_approve_and_the_prompt_is_updated(rig: Rig) -> None:
    waiting = asyncio.create_task(
        rig.broker.request(
            tool="run_command",
            arguments={"command": "systemctl restart nginx"},
            actor="chat:VIEW",
            reason="nginx down",
            ttl_seconds=30,
            conversation="chat|R1|T9",
        )
    )
    await eventually(lambda: len(rig.channel.prompts) == 1)
    prompt = rig.channel.prompts[0]
    assert prompt.target == "R1" and prompt.thread == "T9"
    assert f"approve {prompt.approval_id}" in prompt.text

    refused = await rig.say("VIEW", f"approve {prompt.approval_id}")
    assert refused == ["Only operators and admins can approve or deny actions."]

    def press(user: str) -> ApprovalAnswer:
        return ApprovalAnswer(
            channel="chat", approval_id=prompt.approval_id, approved=True, user_id=user,
            user_name=user.lower(),
        )  # fmt: skip

    told = await rig.hub.on_approval(press("VIEW"))  # the presser hears the truth
    assert not told.accepted and "your role (viewer) cannot approve" in told.text
    assert not waiting.done()

    told = await rig.hub.on_approval(press("OPS"))
    assert told.accepted and told.text == "Approved."
    decision = await asyncio.wait_for(waiting, 5)
    assert decision.approved and decision.by == "chat:ops"
    await eventually(lambda: len(rig.channel.closed) == 1)
    assert rig.channel.closed == ["run_command: approved by chat:ops"]
    told = await rig.hub.on_approval(press("OPS"))  # a second press changes nothing
    assert not told.accepted and "already answered" in told.text


async def test_a_huge_message_is_cut_before_it_reaches_the_agent(rig: Rig) -> None:
    await rig.say("VIEW", "x" * 100_000)
    conversation = await rig.conversations.get_or_create("chat", "R1")
    messages = await rig.conversations.recent(conversation.id)
    assert len(messages[0].content or "") < 16_100
    assert "message truncated: 84000 more characters" in (messages[0].content or "")


async def test_a_message_is_committed_before_the_channel_may_acknowledge_it(rig: Rig) -> None:
    await rig.hub.on_message(
        InboundMessage(
            channel="chat",
            sender_id="VIEW",
            sender_name="view",
            room="R7",
            text="is the backup done?",
        )
    )
    conversation = await rig.conversations.get_or_create("chat", "R7")
    stored = await rig.conversations.recent(conversation.id)
    assert [m.content for m in stored][:1] == ["is the backup done?"]


async def test_a_redelivered_message_is_taken_once(rig: Rig) -> None:
    message = InboundMessage(
        channel="chat",
        sender_id="VIEW",
        sender_name="view",
        room="R2",
        text="status",
        message_id="m-77",
    )
    await rig.hub.on_message(message)
    await rig.hub.on_message(message)  # the platform sends it again after a crash
    await rig.worker.flush()
    assert [m.text for m in rig.channel.sent] == ["all good"]


async def test_pairing_binds_the_sender_once_and_survives_in_memory(rig: Rig) -> None:
    code = rig.pairing.issue("operator").code  # what `nightshift pair` asks the daemon for
    assert "only take requests" in (await rig.say("NEWBIE", "hello"))[0]
    assert (await rig.say("NEWBIE", f"pair {code.lower()}")) == [
        "Paired: newbie is now operator on chat."
    ]
    assert await rig.say("NEWBIE", "status") == ["all good"]
    assert await rig.state.items(prefix="role:") == [("chat", "role:NEWBIE", "operator")]
    rig.clock.advance(3601)
    replies = await rig.say("MALLORY", f"pair {code}")  # used up: a second person gets nothing
    assert "only take requests" in replies[0]


async def test_a_slow_answer_shows_one_progress_note_in_the_thread(
    tmp_path: Path, fake_llm: FakeChatServer
) -> None:
    clock = ManualClock()
    settings = load_settings(
        None,
        overrides={
            "llm": {"base_url": fake_llm.base_url, "api_key": "sk-test", "max_retries": 0},
            "agent": {"progress_after_seconds": 30},
        },
        environ_secrets=False,
    )
    tick, arrived, release = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def timer(seconds: float) -> None:  # the agent loop's sleep, moved by the test
        await tick.wait()

    async def slow_model(body: dict[str, Any]) -> Reply:
        arrived.set()
        await release.wait()
        return Reply(content="The disk is 91% full.")

    fake_llm.responder = slow_model
    async with await SqliteStore.open(tmp_path / "hub.db") as store:
        conversations, broker = ConversationRepo(store, clock), ApprovalBroker(clock)
        async with LlmClient(settings.llm, settings.agent.budget, clock=clock) as llm:
            agent = build_agent(
                settings=settings,
                store=store,
                clock=clock,
                llm=llm,
                registry=ToolRegistry(),
                approvals=broker,
                conversations=conversations,
                sleep=timer,
            )
            parts = build_hub(store, clock, channel="chat", users={"OPS": "operator"}, agent=agent)
            delivered: asyncio.Queue[str] = asyncio.Queue()
            record = parts.channel.send

            async def send(message: OutgoingMessage) -> str:
                delivered.put_nowait(message.text)
                return await record(message)

            parts.channel.send = send  # type: ignore[method-assign]
            worker = asyncio.create_task(parts.worker.run())
            try:
                await parts.hub.on_message(
                    InboundMessage(
                        channel="chat", sender_id="OPS", sender_name="ops", room="R1",
                        text="why is the disk full?", thread="T9",
                    )
                )  # fmt: skip
                await arrived.wait()
                tick.set()
                assert await asyncio.wait_for(delivered.get(), 30) == "still thinking… (30 s)"
                release.set()
                assert await delivered.get() == "The disk is 91% full."
            finally:
                worker.cancel()
    assert [m.thread for m in parts.channel.sent] == ["T9", "T9"]
