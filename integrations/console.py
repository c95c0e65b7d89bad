"""The local console channel: messages go to the log and to every attached `nightshift chat`."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from typing import Any

from daemon.core.section import Section
from integrations.base import ApprovalPrompt, ChannelHealth, InboundSink, OutgoingMessage

log = logging.getLogger(__name__)

SUBSCRIBER_QUEUE = 256


class ConsoleChannel:
    """Delivers to the daemon log (always) and to live chat sessions (when attached)."""

    name = "console"

    def __init__(self) -> None:
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        self._ids = itertools.count(1)
        self._running = False

    async def start(self, sink: InboundSink | None = None) -> None:
        """Console input arrives through the local API, not through the sink."""
        self._running = True

    async def stop(self) -> None:
        self._running = False
        for queue in self._subscribers:
            queue.put_nowait({"type": "closed"})

    def health(self) -> ChannelHealth:
        if not self._running:
            return ChannelHealth(state="stopped")
        return ChannelHealth(state="up", detail=f"{len(self._subscribers)} chat session(s)")

    async def send(self, message: OutgoingMessage) -> str:
        platform_id = f"console-{next(self._ids)}"
        log.info(
            "message to console%s: %s",
            f" ({message.target})" if message.target else "",
            message.text,
        )
        self.publish(
            {"type": "message", "id": platform_id, "target": message.target, "text": message.text}
        )
        return platform_id

    async def edit(self, target: str, platform_id: str, text: str) -> None:
        self.publish({"type": "edit", "id": platform_id, "target": target, "text": text})

    async def ask_approval(self, prompt: ApprovalPrompt) -> str:
        """Attached sessions see the prompt (the chat API also streams it to its requester)."""
        platform_id = f"console-{next(self._ids)}"
        self.publish({"type": "approval_prompt", "id": prompt.approval_id, "text": prompt.text})
        return platform_id

    async def close_approval(self, prompt: ApprovalPrompt, platform_id: str, outcome: str) -> None:
        self.publish({"type": "approval_closed", "id": prompt.approval_id, "outcome": outcome})

    def publish(self, event: dict[str, Any]) -> None:
        """Push an event to every attached session; a slow session drops, never blocks us."""
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                log.warning("console session too slow; dropping an event for it")

    def attach(self) -> tuple[asyncio.Queue[dict[str, Any]], Callable[[], None]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(SUBSCRIBER_QUEUE)
        self._subscribers.add(queue)
        return queue, lambda: self._subscribers.discard(queue)


class ConsoleChannelSettings(Section):
    """The local console channel used by `nightshift chat`."""

    enabled: bool = True
