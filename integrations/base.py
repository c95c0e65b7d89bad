"""The channel contract every chat integration implements (console now; Slack, IM next)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable


@dataclass(frozen=True, slots=True, kw_only=True)
class OutgoingMessage:
    """A message leaving through the outbox."""

    outbox_id: int
    target: str
    text: str
    thread: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class InboundMessage:
    """A message a person sent us."""

    channel: str
    sender_id: str
    sender_name: str
    room: str
    text: str
    thread: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelHealth:
    state: Literal["up", "down", "starting", "stopped"]
    detail: str = ""


class DeliveryError(Exception):
    """Sending failed but may succeed later (network, rate limit)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentDeliveryError(Exception):
    """Sending can never succeed (unknown room, message rejected)."""


@runtime_checkable
class Channel(Protocol):
    """A chat transport."""

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def health(self) -> ChannelHealth: ...

    async def send(self, message: OutgoingMessage) -> str:
        """Deliver one message; return the platform's message id or raise DeliveryError."""
        ...
