"""Keeps the prompt under the configured token limit: older turns summarised, big outputs elided."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from daemon.agent.prompts import SUMMARISE
from daemon.agent.settings import AgentSettings
from memory.conversations import Conversation, ConversationRepo, StoredMessage

if TYPE_CHECKING:
    from daemon.agent.model import ChatModel

log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 4
ELIDED = "[earlier tool output elided to keep the context small]"


def estimate_tokens(messages: list[dict[str, Any]]) -> int:
    """A cheap, conservative token estimate (about four characters per token)."""
    return len(json.dumps(messages, ensure_ascii=False)) // CHARS_PER_TOKEN + 1


class ContextKeeper:
    """Decides what of a conversation goes into the next prompt."""

    def __init__(
        self, settings: AgentSettings, llm: ChatModel | None, conversations: ConversationRepo
    ) -> None:
        self._settings = settings
        self._llm = llm
        self._conversations = conversations

    async def fit(
        self, conversation: Conversation, history: list[StoredMessage], run_id: int | None
    ) -> tuple[str | None, list[StoredMessage]]:
        """Return (summary, history) small enough for the context limit.

        History always starts at a user message so no tool result is orphaned from its call.
        When it is too big, everything before the last ``keep_recent_messages`` (cut at a user
        turn) is summarised by the model and marked summarised in memory.
        """
        history = _from_first_user(history)
        summary = conversation.summary or None
        rendered = [
            {"role": m.role, "content": m.content or "", "t": m.tool_calls} for m in history
        ]
        if estimate_tokens(rendered) + len(summary or "") // 4 <= self._budget():
            return summary, history
        cut = _cut_point(history, self._settings.keep_recent_messages)
        if cut <= 0 or self._llm is None:
            return summary, history
        old, recent = history[:cut], history[cut:]
        transcript = _transcript(summary, old)
        completion = await self._llm.complete(
            [{"role": "system", "content": SUMMARISE}, {"role": "user", "content": transcript}],
            mode="instant",
            purpose="summary",
            run_id=run_id,
        )
        new_summary = completion.content.strip() or (summary or "")
        await self._conversations.mark_summarized(conversation.id, old[-1].id, new_summary)
        log.info("conversation %s: summarised %d older messages", conversation.id, len(old))
        return new_summary, recent

    def shrink_in_run(self, messages: list[dict[str, Any]]) -> int:
        """Within one long run, elide the oldest tool outputs until the prompt fits.

        Returns the token estimate of what is left.
        """
        budget = self._budget()
        estimate = estimate_tokens(messages)
        for message in messages[1:-2]:
            if estimate <= budget:
                break
            content = message.get("content")
            if message.get("role") == "tool" and content != ELIDED:
                message["content"] = ELIDED
                estimate -= (len(str(content)) - len(ELIDED)) // CHARS_PER_TOKEN
        return estimate

    def _budget(self) -> int:
        # leave room for the answer and the tool schemas
        return int(self._settings.context_tokens * 0.8)


def _from_first_user(history: list[StoredMessage]) -> list[StoredMessage]:
    for index, message in enumerate(history):
        if message.role == "user":
            return history[index:]
    return []


def _cut_point(history: list[StoredMessage], keep: int) -> int:
    """Index of the user message that starts the recent tail (at most ``keep`` messages)."""
    start = max(0, len(history) - keep)
    for index in range(start, len(history)):
        if history[index].role == "user":
            return index
    for index in range(start - 1, 0, -1):
        if history[index].role == "user":
            return index
    return 0


def _transcript(summary: str | None, messages: list[StoredMessage]) -> str:
    lines = [f"Earlier summary: {summary}"] if summary else []
    for message in messages:
        if message.tool_calls:
            calls = ", ".join(c.get("function", {}).get("name", "?") for c in message.tool_calls)
            lines.append(f"assistant called tools: {calls}")
        if message.content:
            text = message.content if len(message.content) < 2000 else message.content[:2000] + "…"
            lines.append(f"{message.role}: {text}")
    return "<transcript>\n" + "\n".join(lines) + "\n</transcript>"
