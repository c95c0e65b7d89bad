"""The inbound side of every chat channel: access control, plain commands, the agent, approvals.

Replies never go straight to a platform: they are outbox rows first, delivered by the channel's
outbox worker, so a channel outage delays them instead of losing them.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, replace
from typing import Any

from daemon.agent.loop import AgentRequest
from daemon.chat.access import AccessControl
from daemon.chat.approvals import ApprovalBroker
from daemon.chat.conversations import ChatService
from daemon.chat.pairing import PairingCodes
from daemon.core.background import BackgroundTasks
from daemon.core.clock import Clock
from daemon.core.errors import DrainingError
from daemon.core.messages import ApprovalDecision, ApprovalRequest
from daemon.incidents.commands import IncidentCommands
from daemon.tasks.commands import SCHEDULER_OFF, TASK_WORDS, TaskCommands
from integrations.base import (
    ApprovalAnswer,
    ApprovalOutcome,
    ApprovalPrompt,
    Channel,
    InboundMessage,
)
from integrations.outbox import OutboxWorker
from memory.audit import AuditEntry, AuditRepo
from memory.channels import ChannelStateRepo, InboundRepo
from memory.outbox import OutboxRepo
from memory.store import SqliteStore

log = logging.getLogger(__name__)

DENIED_TEXT = (
    "Sorry, I only take requests from people my operators have allowed. "
    "Ask an admin to add your user id ({user_id}) to [channels.{channel}.users]."
)
HELP_TEXT = (
    "Commands (no AI needed): status · incidents · incidents show ID · silence ID 2h · "
    "silences · unsilence ID · tasks · tasks show NAME · tasks add|pause|resume|remove|run "
    "NAME (admins; `tasks help` shows how) · approve ID · deny ID · pair CODE · help. "
    "Anything else is a question for the agent."
)
StatusText = Callable[[], Awaitable[str]]
MAX_INBOUND_CHARS = 16_000  # longer messages are cut (with a note) before they reach the agent


@dataclass(slots=True)
class _OpenPrompt:
    channel: Channel
    prompt: ApprovalPrompt
    platform_id: str


class ChannelHub:
    """Implements the InboundSink every channel is started with."""

    def __init__(
        self,
        *,
        access: AccessControl,
        chat: ChatService,
        approvals: ApprovalBroker,
        outbox: OutboxRepo,
        audit: AuditRepo,
        inbound: InboundRepo,
        state: ChannelStateRepo,
        pairing: PairingCodes,
        store: SqliteStore,
        clock: Clock,
        status_text: StatusText,
        commands: IncidentCommands | None = None,
        task_commands: TaskCommands | None = None,
    ) -> None:
        self._access = access
        self._chat = chat
        self._approvals = approvals
        self._outbox = outbox
        self._audit = audit
        self._inbound = inbound
        self._state = state
        self._pairing = pairing
        self._store = store
        self._clock = clock
        self._status_text = status_text
        self._commands = commands
        self._task_commands = task_commands
        self._channels: dict[str, Channel] = {}
        self._workers: dict[str, OutboxWorker] = {}
        self._tasks = BackgroundTasks("chat hub")
        self._prompts: dict[str, _OpenPrompt] = {}
        approvals.subscribe(self._on_approval_requested)
        approvals.on_resolved(self._on_approval_resolved)

    def register(self, channel: Channel, worker: OutboxWorker) -> None:
        self._channels[channel.name] = channel
        self._workers[channel.name] = worker

    # -- InboundSink ---------------------------------------------------------------------------

    async def on_message(self, message: InboundMessage) -> None:
        """Take a message exactly once: everything it causes commits in one transaction.

        Task commands are the exception: they run right after the commit, because the scheduler
        arms jobs in memory (not undone by a rollback) and reads its own writes back.
        """
        async with self._store.write():
            if message.message_id and not await self._inbound.first_time(
                message.channel, message.room, message.message_id
            ):
                log.info(
                    "ignoring %s message %s: already taken", message.channel, message.message_id
                )
                return
            after_commit = await self._take(message)
        if after_commit is not None:
            await after_commit()
        self._wake(message.channel)  # replies queued above are committed only now

    async def _take(self, message: InboundMessage) -> Callable[[], Awaitable[None]] | None:
        """Answer commands at once; hand questions to the agent without blocking the channel.

        Returns work to do once the message is committed (a task command), if any.
        """
        text = message.text.strip()
        if not text:
            return None
        if len(text) > MAX_INBOUND_CHARS:
            cut = len(text) - MAX_INBOUND_CHARS
            text = text[:MAX_INBOUND_CHARS] + f"\n[message truncated: {cut} more characters]"
            message = replace(message, text=text)
        word, _, rest = text.partition(" ")
        command = word.lower()
        if command == "pair" and rest.strip():
            await self._pair(message, rest.strip())
            return None
        if not self._access.allows(message.channel, message.sender_id, "ask"):
            await self._deny(message, "message")
            return None
        if command in ("help", "status"):
            reply = HELP_TEXT if command == "help" else await self._status_text()
            await self.reply(message, reply)
        elif self._commands is not None and (needed := self._commands.required(command)):
            if not self._access.allows(message.channel, message.sender_id, needed):
                role = self._access.role_of(message.channel, message.sender_id)
                await self._record_denial(message.channel, message.sender_id, f"{command} command")
                name = role.name.lower() if role else "none"
                await self.reply(message, f"Your role ({name}) cannot {command}; ask an operator.")
                return None
            actor = f"{message.channel}:{message.sender_name or message.sender_id}"
            await self.reply(message, await self._commands.run(command, rest, actor))
        elif command in TASK_WORDS:
            return functools.partial(self._task_command, message, command, rest)
        elif command in ("approve", "deny") and rest.strip():
            await self._answer_by_text(message, command == "approve", rest.strip().split()[0])
        else:
            await self._accept(message)
        return None

    async def _task_command(self, message: InboundMessage, command: str, rest: str) -> None:
        """`tasks …`: viewers may look, only admins may change anything."""
        if self._task_commands is None:
            await self.reply(message, SCHEDULER_OFF)
            return
        needed = self._task_commands.required(command, rest) or "admin"
        if not self._access.allows(message.channel, message.sender_id, needed):
            role = self._access.role_of(message.channel, message.sender_id)
            verb = rest.split(maxsplit=1)[0].lower() if rest.strip() else command
            await self._record_denial(message.channel, message.sender_id, f"tasks {verb} command")
            name = role.name.lower() if role else "none"
            await self.reply(message, f"Your role ({name}) cannot change tasks; ask an admin.")
            return
        actor = f"{message.channel}:{message.sender_name or message.sender_id}"
        origin = f"{message.channel}|{message.room}|{message.thread or ''}"
        await self.reply(message, await self._task_commands.run(command, rest, actor, origin))

    async def on_approval(self, answer: ApprovalAnswer) -> ApprovalOutcome:
        """A button press: only operators and admins may decide; the presser is told the truth."""
        if not self._access.allows(answer.channel, answer.user_id, "approve"):
            await self._record_denial(answer.channel, answer.user_id, "approval answer")
            role = self._access.role_of(answer.channel, answer.user_id)
            name = role.name.lower() if role else "none"
            return ApprovalOutcome(
                text=f"Not done: your role ({name}) cannot approve or deny; ask an operator.",
                accepted=False,
            )
        decided = self._approvals.resolve(
            answer.approval_id, approved=answer.approved, by=f"{answer.channel}:{answer.user_name}"
        )
        if not decided:
            return ApprovalOutcome(
                text="Not done: this request was already answered or has expired.", accepted=False
            )
        return ApprovalOutcome(text="Approved." if answer.approved else "Denied.", accepted=True)

    # -- replies -------------------------------------------------------------------------------

    async def reply(self, message: InboundMessage, text: str) -> None:
        """Queue a reply in the same room and thread as ``message``."""
        await self._outbox.enqueue(message.channel, message.room, text, thread=message.thread)
        self._wake(message.channel)

    def _wake(self, channel: str) -> None:
        worker = self._workers.get(channel)
        if worker is not None:
            worker.wake()

    async def _accept(self, message: InboundMessage) -> None:
        """Commit the message before the channel acknowledges it; answer in the background."""
        origin = f"{message.channel}|{message.room}|{message.thread or ''}"
        try:
            request = await self._chat.accept(
                channel=message.channel,
                conversation_key=message.conversation_key,
                text=message.text,
                actor=f"{message.channel}:{message.sender_id}",
                origin=origin,
            )
        except DrainingError as exc:
            await self.reply(message, str(exc))
            return
        self._spawn(self._answer(message, request), f"answer {message.channel}")

    async def _answer(self, message: InboundMessage, request: AgentRequest) -> None:
        async def show_progress(event: dict[str, Any]) -> None:
            if event.get("type") == "progress":  # "still thinking… (30 s)", once a turn
                await self.reply(message, str(event["text"]))

        try:
            text = (await self._chat.answer(request, show_progress)).text
        except Exception as exc:  # noqa: BLE001 - the person still gets an answer
            log.exception("agent failed on a %s message", message.channel)
            text = f"Something went wrong while answering: {type(exc).__name__}: {exc}"
        await self.reply(message, text)

    async def _pair(self, message: InboundMessage, code: str) -> None:
        role = self._pairing.redeem(code)
        if role is None:
            await self._deny(message, "pairing with an unknown or expired code")
            return
        self._access.grant(message.channel, message.sender_id, role)
        await self._state.set(message.channel, f"role:{message.sender_id}", role)
        await self._audit.record(
            AuditEntry(
                actor=f"{message.channel}:{message.sender_id}",
                action="paired",
                tool="",
                tier="",
                reason=f"paired as {role} with a one-time code",
                arguments={"name": message.sender_name},
                result=f"granted {role}",
                ok=True,
                duration_ms=0.0,
            )
        )
        await self.reply(
            message, f"Paired: {message.sender_name} is now {role} on {message.channel}."
        )

    async def _answer_by_text(self, message: InboundMessage, approve: bool, ident: str) -> None:
        if not self._access.allows(message.channel, message.sender_id, "approve"):
            await self.reply(message, "Only operators and admins can approve or deny actions.")
            await self._record_denial(message.channel, message.sender_id, "approval command")
            return
        who = f"{message.channel}:{message.sender_name}"
        done = self._approvals.resolve(ident, approved=approve, by=who)
        verdict = "approved" if approve else "denied"
        text = f"{ident} {verdict}." if done else f"No pending approval {ident} (expired?)."
        await self.reply(message, text)

    async def _deny(self, message: InboundMessage, what: str) -> None:
        await self._record_denial(message.channel, message.sender_id, what)
        if self._access.should_tell(message.channel, message.sender_id, self._clock.now()):
            text = DENIED_TEXT.format(user_id=message.sender_id, channel=message.channel)
            await self.reply(message, text)

    async def _record_denial(self, channel: str, user_id: str, what: str) -> None:
        log.warning("denied %s from unknown or unauthorised %s user %s", what, channel, user_id)
        await self._audit.record(
            AuditEntry(
                actor=f"{channel}:{user_id}",
                action="access_denied",
                tool="",
                tier="",
                reason=what,
                arguments={},
                result="denied: no role for this user",
                ok=False,
                duration_ms=0.0,
                run_id=None,
            )
        )

    # -- approval prompts on chat platforms ----------------------------------------------------

    def _on_approval_requested(self, request: ApprovalRequest) -> None:
        channel_name, room, thread = _parse_origin(request.conversation)
        channel = self._channels.get(channel_name or "")
        if channel is None:
            return
        prompt = ApprovalPrompt(
            approval_id=request.id,
            text=_prompt_text(request),
            target=room,
            thread=thread,
        )
        self._spawn(self._post_prompt(channel, prompt), f"approval prompt {prompt.approval_id}")

    async def _post_prompt(self, channel: Channel, prompt: ApprovalPrompt) -> None:
        try:
            platform_id = await channel.ask_approval(prompt)
        except Exception:  # noqa: BLE001 - `nightshift approvals` still shows the request
            log.exception("could not post approval %s to %s", prompt.approval_id, channel.name)
            return
        self._prompts[prompt.approval_id] = _OpenPrompt(channel, prompt, platform_id)

    def _on_approval_resolved(self, request: ApprovalRequest, decision: ApprovalDecision) -> None:
        open_prompt = self._prompts.pop(request.id, None)
        if open_prompt is None:
            return
        verdict = "approved" if decision.approved else "denied"
        outcome = f"{request.tool}: {verdict} by {decision.by}"
        self._spawn(self._close_prompt(open_prompt, outcome), f"approval close {request.id}")

    async def _close_prompt(self, open_prompt: _OpenPrompt, outcome: str) -> None:
        try:
            await open_prompt.channel.close_approval(
                open_prompt.prompt, open_prompt.platform_id, outcome
            )
        except Exception:  # noqa: BLE001
            log.exception("could not update approval message %s", open_prompt.platform_id)

    async def drain(self, timeout: float) -> None:
        """Let answers whose runs finished reach the outbox before it is flushed at shutdown."""
        await self._tasks.drain(timeout)

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        self._tasks.spawn(coroutine, name)


def _parse_origin(origin: str | None) -> tuple[str | None, str, str | None]:
    if not origin or origin.count("|") != 2:
        return None, "", None
    channel, room, thread = origin.split("|")
    return channel, room, thread or None


def _prompt_text(request: ApprovalRequest) -> str:
    arguments = ", ".join(f"{key}={value!r}" for key, value in request.arguments.items())
    return (
        f"Approval needed [{request.id}]: {request.tool}({arguments})\n"
        f"Asked by {request.actor} for: {request.reason[:300]}\n"
        f"Expires {request.expires_at:%H:%M} UTC; no answer means deny. "
        f"Reply `approve {request.id}` or `deny {request.id}`, or use the buttons."
    )
