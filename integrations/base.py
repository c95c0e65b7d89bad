"""The channel contract every chat integration implements (console, Slack, Telegram, Matrix).

A channel turns a chat platform into four things: outbound ``send``/``edit`` (called only by the
outbox worker), an inbound stream of :class:`InboundMessage` handed to the ``InboundSink`` given
to ``start``, approval prompts with approve/deny buttons whose answers come back through the
same sink, and a ``health`` the daemon shows in ``nightshift status``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable


@dataclass(frozen=True, slots=True, kw_only=True)
class OutgoingMessage:
    """A message leaving through the outbox (``target`` is a room/chat id; "" = the default)."""

    outbox_id: int
    target: str
    text: str
    thread: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class InboundMessage:
    """A message a person sent us, parsed at the edge."""

    channel: str
    sender_id: str
    sender_name: str
    room: str
    text: str
    thread: str | None = None
    direct: bool = False  # a DM / private chat, not a group room
    message_id: str | None = None

    @property
    def conversation_key(self) -> str:
        """One conversation per DM, per thread, or per room."""
        if self.thread:
            return f"{self.room}:{self.thread}"
        return self.room


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovalPrompt:
    """Ask the people in a room to approve or deny one privileged action."""

    approval_id: str
    text: str
    target: str
    thread: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovalAnswer:
    """A person pressed approve or deny (or typed the equivalent command)."""

    channel: str
    approval_id: str
    approved: bool
    user_id: str
    user_name: str
    room: str = ""  # where the button was pressed (to answer the presser there)


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovalOutcome:
    """What the person who pressed approve/deny is told: the truth, accepted or not."""

    text: str
    accepted: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelHealth:
    state: Literal["up", "down", "starting", "stopped"]
    detail: str = ""


class InboundSink(Protocol):
    """Where a channel hands what people send; both calls return once the input is stored."""

    async def on_message(self, message: InboundMessage) -> None: ...

    async def on_approval(self, answer: ApprovalAnswer) -> ApprovalOutcome:
        """Decide (or refuse) the approval; the outcome is shown to whoever pressed."""
        ...


@runtime_checkable
class Channel(Protocol):
    """A chat transport."""

    name: str

    async def start(self, sink: InboundSink) -> None:
        """Connect and begin delivering inbound messages to ``sink``; return once started."""
        ...

    async def stop(self) -> None: ...

    def health(self) -> ChannelHealth: ...

    async def send(self, message: OutgoingMessage) -> str:
        """Deliver one message; return the platform's message id or raise a delivery error."""
        ...

    async def edit(self, target: str, platform_id: str, text: str) -> None:
        """Replace the text of a message we sent earlier."""
        ...

    async def ask_approval(self, prompt: ApprovalPrompt) -> str:
        """Post the prompt with approve/deny controls; return its platform message id."""
        ...

    async def close_approval(self, prompt: ApprovalPrompt, platform_id: str, outcome: str) -> None:
        """Replace the controls with the outcome (e.g. "approved by @ann")."""
        ...


Role = Literal["viewer", "operator", "admin"]
