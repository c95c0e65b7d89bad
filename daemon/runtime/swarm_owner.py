"""A swarm run resumed after a restart has ended: its owner is told. The report goes into the
coordinator's conversation (its next turn there sees it; the delegate call the dead turn left
unanswered gets it as its answer) and to the chat the run came from."""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING, Any

from daemon.core.errors import RecordNotFound

if TYPE_CHECKING:
    from daemon.runtime.channels import ChannelSet
    from memory.conversations import ConversationRepo
    from memory.outbox import OutboxRepo
    from memory.runs import RunRepo
    from memory.swarm import SwarmRun

__all__ = ["SwarmOwner"]


class SwarmOwner:
    """Tells a resumed swarm run's owner how it ended (a :data:`daemon.agent.swarm.Notify`)."""

    def __init__(
        self,
        runs: RunRepo,
        conversations: ConversationRepo,
        outbox: OutboxRepo,
        channels: ChannelSet,
    ) -> None:
        self._runs = runs
        self._conversations = conversations
        self._outbox = outbox
        self._channels = channels

    async def tell(self, run: SwarmRun, report: dict[str, Any]) -> None:
        """A swarm run resumed after a restart has ended: its report goes into the
        coordinator's conversation (its next turn there sees it) and to the chat it came from."""
        counts = ", ".join(f"{n} {status}" for status, n in report.get("summary", {}).items())
        text = (
            f"The daemon restarted during swarm run {run.id} ({run.goal[:200]}). Its unfinished "
            f"sub-agents were resumed; the run ended {run.status}: {counts or 'no subtasks'}."
            f"{f' {run.reason}.' if run.reason else ''}\n"
            + json.dumps(report.get("subtasks", []), ensure_ascii=False)[:3000]
        )
        if run.agent_run_id is not None:
            with contextlib.suppress(RecordNotFound):
                agent_run = await self._runs.get(run.agent_run_id)
                if agent_run.conversation_id is not None:
                    await self._answer_open_calls(agent_run.conversation_id, report)
                    await self._conversations.append(agent_run.conversation_id, "assistant", text)
        if run.origin and run.origin.count("|") == 2:
            channel, room, thread = run.origin.split("|")
            if channel in self._channels.channels:
                await self._outbox.enqueue(
                    channel, room, text, thread=thread or None, dedupe_key=f"swarm-resumed:{run.id}"
                )

    async def _answer_open_calls(self, conversation_id: int, report: dict[str, Any]) -> None:
        """The coordinator's turn died with its tool calls unanswered: if they are the
        conversation's last word, the delegate call gets the resumed run's report as its answer
        (as the tool would have given it) and any other call an error, so the history stays
        well-formed (the API refuses a tool call without its answer)."""
        from daemon.agent.swarm import DELEGATE

        history = await self._conversations.recent(conversation_id, 40)
        answered = {m.tool_call_id for m in history if m.role == "tool"}
        last = next((m for m in reversed(history) if m.role != "tool"), None)
        if last is None or last.role != "assistant" or not last.tool_calls:
            return
        for call in last.tool_calls:
            if call.get("id") in answered:
                continue
            name = str(call.get("function", {}).get("name", ""))
            content = (
                json.dumps(report, ensure_ascii=False)
                if name == DELEGATE
                else "ERROR: the daemon restarted before this call finished; it was not resumed"
            )
            await self._conversations.append(
                conversation_id, "tool", content, tool_call_id=call.get("id"), name=name
            )
