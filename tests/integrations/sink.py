"""A recording InboundSink shared by the channel contract tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from integrations.base import ApprovalAnswer, ApprovalOutcome, InboundMessage
from tests.support import eventually

__all__ = ["RecordingSink", "eventually"]


class RecordingSink:
    """Stores what a channel hands over; ``fail`` makes the next N calls raise like a bad store."""

    def __init__(self) -> None:
        self.messages: list[InboundMessage] = []
        self.answers: list[ApprovalAnswer] = []
        self.fail = 0
        self.outcome = ApprovalOutcome(text="Approved.", accepted=True)  # what presses are told
        self.after_store: Callable[[], None] | None = None
        self._changed = asyncio.Condition()

    async def on_message(self, message: InboundMessage) -> None:
        if self.fail:
            self.fail -= 1
            raise RuntimeError("store unavailable")
        async with self._changed:
            self.messages.append(message)
            self._changed.notify_all()
        if self.after_store is not None:
            self.after_store()

    async def on_approval(self, answer: ApprovalAnswer) -> ApprovalOutcome:
        async with self._changed:
            self.answers.append(answer)
            self._changed.notify_all()
        return self.outcome

    def texts(self) -> list[str]:
        return [message.text for message in self.messages]

    async def wait(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)
