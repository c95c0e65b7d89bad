"""Turns a message from a person into an agent run, and tracks the runs in flight."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from daemon.agent.loop import AgentLoop, AgentRequest, EventSink
from daemon.core import metrics
from daemon.core.background import BackgroundTasks
from daemon.core.errors import AgentDisabledError, DrainingError
from memory.conversations import ConversationRepo

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatReply:
    text: str
    status: str
    run_id: int | None
    conversation_id: int
    tokens: int = 0


class ChatService:
    """The one way messages from people reach the agent."""

    def __init__(self, agent: AgentLoop, conversations: ConversationRepo) -> None:
        self.agent = agent
        self._conversations = conversations
        self._in_flight = BackgroundTasks("chat")
        self.accepting = True

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def handle(
        self,
        *,
        channel: str,
        conversation_key: str,
        text: str,
        actor: str,
        on_event: EventSink | None = None,
        origin: str | None = None,
    ) -> ChatReply:
        """Store the message, run the agent, return its answer (or why there is none)."""
        request = await self.accept(
            channel=channel,
            conversation_key=conversation_key,
            text=text,
            actor=actor,
            origin=origin,
        )
        return await self.answer(request, on_event)

    async def accept(
        self,
        *,
        channel: str,
        conversation_key: str,
        text: str,
        actor: str,
        origin: str | None = None,
    ) -> AgentRequest:
        """Commit the message to its conversation; only then may the channel acknowledge it."""
        if not self.accepting:
            raise DrainingError("nightshift is shutting down; try again in a moment")
        conversation = await self._conversations.get_or_create(channel, conversation_key)
        await self._conversations.append(conversation.id, "user", text)
        return AgentRequest(
            conversation_id=conversation.id,
            text=text,
            actor=actor,
            mode=self.agent.settings.agent.chat_mode,
            origin=origin,
            stored=True,
        )

    async def answer(self, request: AgentRequest, on_event: EventSink | None = None) -> ChatReply:
        """Run the agent on an accepted message; the run survives the caller going away."""
        name = f"agent run (conversation {request.conversation_id})"
        task = self._in_flight.spawn(self.agent.run(request, on_event), name, awaited=True)
        try:
            result = await asyncio.shield(task)
        except AgentDisabledError as exc:
            metrics.AGENT_RUNS.labels(status="disabled").inc()
            return ChatReply(
                text=f"The agent is off: {exc}. Your message was saved.",
                status="disabled",
                run_id=None,
                conversation_id=request.conversation_id,
            )
        metrics.AGENT_RUNS.labels(status=result.status).inc()
        return ChatReply(
            text=result.text,
            status=result.status,
            run_id=result.run_id,
            conversation_id=request.conversation_id,
            tokens=result.tokens,
        )

    async def drain(self, timeout: float) -> int:
        """Stop accepting; wait up to ``timeout`` for runs in flight, then cancel the rest."""
        self.accepting = False
        if self._in_flight:
            log.info("draining %d agent run(s) for up to %.0fs", len(self._in_flight), timeout)
        return await self._in_flight.drain(timeout)
