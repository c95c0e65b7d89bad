"""A real ChannelHub on a real SQLite store with a recording channel (agent off by default)."""

from __future__ import annotations

from dataclasses import dataclass, field

from daemon.agent.build import build_agent
from daemon.agent.loop import AgentLoop
from daemon.agent.tools.base import ToolRegistry
from daemon.chat.access import AccessControl
from daemon.chat.approvals import ApprovalBroker
from daemon.chat.conversations import ChatService
from daemon.chat.hub import ChannelHub
from daemon.chat.pairing import PairingCodes
from daemon.config import Settings
from daemon.core.clock import ManualClock
from daemon.incidents.commands import IncidentCommands
from daemon.tasks.commands import TaskCommands
from integrations.base import ApprovalPrompt, ChannelHealth, InboundSink, OutgoingMessage
from integrations.outbox import OutboxWorker
from memory.audit import AuditRepo
from memory.channels import ChannelStateRepo, InboundRepo
from memory.conversations import ConversationRepo
from memory.outbox import OutboxRepo
from memory.store import SqliteStore


@dataclass
class RecordingChannel:
    name: str = "chat"
    sent: list[OutgoingMessage] = field(default_factory=list)
    prompts: list[ApprovalPrompt] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)

    async def start(self, sink: InboundSink) -> None: ...

    async def stop(self) -> None: ...

    def health(self) -> ChannelHealth:
        return ChannelHealth(state="up")

    async def send(self, message: OutgoingMessage) -> str:
        self.sent.append(message)
        return f"p{len(self.sent)}"

    async def edit(self, target: str, platform_id: str, text: str) -> None: ...

    async def ask_approval(self, prompt: ApprovalPrompt) -> str:
        self.prompts.append(prompt)
        return "prompt-1"

    async def close_approval(self, prompt: ApprovalPrompt, platform_id: str, outcome: str) -> None:
        self.closed.append(outcome)


@dataclass
class HubParts:
    hub: ChannelHub
    channel: RecordingChannel
    worker: OutboxWorker
    broker: ApprovalBroker
    audit: AuditRepo
    conversations: ConversationRepo
    state: ChannelStateRepo
    pairing: PairingCodes


def build_hub(
    store: SqliteStore,
    clock: ManualClock,
    *,
    channel: str,
    users: dict[str, str],
    commands: IncidentCommands | None = None,
    task_commands: TaskCommands | None = None,
    agent: AgentLoop | None = None,
) -> HubParts:
    """The hub with ``users`` (id → role) on one recording channel named ``channel``.

    The agent is off unless one is given.
    """
    conversations, outbox, audit = (
        ConversationRepo(store, clock),
        OutboxRepo(store, clock),
        AuditRepo(store, clock),
    )
    broker = ApprovalBroker(clock)
    agent = agent or build_agent(
        settings=Settings(),
        store=store,
        clock=clock,
        llm=None,
        registry=ToolRegistry(),
        approvals=broker,
        audit=audit,
        conversations=conversations,
        disabled_reason="no API key (test)",
    )

    async def status_text() -> str:
        return "all good"

    state, pairing = ChannelStateRepo(store, clock), PairingCodes(clock)
    hub = ChannelHub(
        access=AccessControl({channel: users}),
        chat=ChatService(agent, conversations),
        approvals=broker,
        outbox=outbox,
        audit=audit,
        inbound=InboundRepo(store, clock),
        state=state,
        pairing=pairing,
        store=store,
        clock=clock,
        status_text=status_text,
        commands=commands,
        task_commands=task_commands,
    )
    recorder = RecordingChannel(name=channel)
    worker = OutboxWorker(outbox, recorder, clock)
    hub.register(recorder, worker)
    return HubParts(hub, recorder, worker, broker, audit, conversations, state, pairing)
