"""Keeps the prompt under the configured limits and its prefix byte-stable for the model's cache.

History only grows between compactions: every unsummarised message is sent, in the order stored,
until the conversation passes ``agent.history_messages`` messages or the token budget. Then one
compaction folds a big chunk (everything before the last ``keep_recent_messages``, cut at a user
turn, so a tool call never loses its result) into the conversation summary, which then stays
fixed until the next compaction. A prefix cache therefore reuses the whole prompt but the newest
messages on every turn in between.

The summary request is built as a continuation of the conversation's own prompt (same system
prompt, tools and messages, then one instruction), so it is served from the cache too. A failed,
empty or timed-out summary marks nothing: the messages stay and the next turn tries again.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from daemon.agent.prompts import (
    MEMORY_NOTE,
    MEMORY_SNIPPET_CHARS,
    SUMMARISE,
    SUMMARISE_ABOVE,
    fence,
    system_prompt,
)
from daemon.agent.replay import replay
from daemon.agent.settings import AgentConfig
from daemon.core.errors import BudgetExhaustedError, NightshiftError
from memory.conversations import Conversation, ConversationRepo, StoredMessage
from memory.recall import RecallRepo

if TYPE_CHECKING:
    from daemon.agent.model import ChatModel

log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 4
ELIDED = "[earlier tool output elided to keep the context small]"
LOAD_FACTOR = 10  # messages loaded per request: history_messages × this (bounds a failing streak)


def estimate_tokens(messages: list[dict[str, Any]]) -> int:
    """A cheap, conservative token estimate (about four characters per token)."""
    return len(json.dumps(messages, ensure_ascii=False)) // CHARS_PER_TOKEN + 1


class ContextKeeper:
    """Decides what of a conversation goes into the next prompt."""

    def __init__(
        self, settings: AgentConfig, llm: ChatModel | None, conversations: ConversationRepo
    ) -> None:
        self._config = settings
        self._settings = settings.agent
        self._llm = llm
        self._conversations = conversations
        self.failures = 0  # summaries that failed (the messages were kept)

    @property
    def load_limit(self) -> int:
        """How many unsummarised messages to load for one request."""
        return self._settings.history_messages * LOAD_FACTOR

    async def prompt(
        self,
        conversation: Conversation,
        history: list[StoredMessage],
        run_id: int | None,
        tools: list[dict[str, Any]] | None = None,
    ) -> list[dict[str, Any]]:
        """The messages that open a turn: system prompt (with the summary), then the history."""
        summary, history = await self.fit(conversation, history, run_id, tools)
        return [system_prompt(self._config, summary), *replay(history)]

    async def fit(
        self,
        conversation: Conversation,
        history: list[StoredMessage],
        run_id: int | None,
        tools: list[dict[str, Any]] | None = None,
    ) -> tuple[str | None, list[StoredMessage]]:
        """Return (summary, history) within the limits, compacting in one chunk when over them.

        History always starts at a user message so no tool result is orphaned from its call.
        """
        history = _from_first_user(history)
        summary = conversation.summary or None
        if not self._over(summary, history):
            return summary, history
        cut = _cut_point(history, self._settings.keep_recent_messages)
        if cut <= 0 or self._llm is None:
            return summary, self._trim(summary, history)
        old, recent = history[:cut], history[cut:]
        new_summary = await self._summarise(summary, old, run_id, tools)
        if new_summary is None:  # keep every message; the next turn retries
            self.failures += 1
            return summary, self._trim(summary, history)
        await self._conversations.mark_summarized(conversation.id, old[-1].id, new_summary)
        log.info("conversation %s: compacted %d older messages", conversation.id, len(old))
        return new_summary, self._trim(new_summary, recent)

    async def _summarise(
        self,
        summary: str | None,
        old: list[StoredMessage],
        run_id: int | None,
        tools: list[dict[str, Any]] | None,
    ) -> str | None:
        """The new summary of ``summary`` plus ``old``, or None when the model gave none."""
        assert self._llm is not None
        messages = [
            system_prompt(self._config, summary),
            *replay(old),
            {"role": "user", "content": SUMMARISE_ABOVE},
        ]
        if estimate_tokens(messages) > self._budget():  # too big to continue: a short transcript
            tools = None
            messages = [
                {"role": "system", "content": SUMMARISE},
                {"role": "user", "content": _transcript(summary, old)},
            ]
        try:
            async with asyncio.timeout(self._settings.summary_timeout_seconds):
                completion = await self._llm.complete(
                    messages, tools=tools, mode="instant", purpose="summary", run_id=run_id
                )
        except BudgetExhaustedError:
            raise
        except (TimeoutError, NightshiftError) as exc:
            why = str(exc) or f"no answer within {self._settings.summary_timeout_seconds:g} s"
            log.warning("summary failed, %d messages kept for a later try: %s", len(old), why)
            return None
        text = completion.content.strip()
        if not text or completion.tool_calls:
            log.warning("summary came back empty, %d messages kept for a later try", len(old))
            return None
        return text

    def _over(self, summary: str | None, history: list[StoredMessage]) -> bool:
        if len(history) > self._settings.history_messages:
            return True
        return self._tokens(summary, history) > self._budget()

    def _tokens(self, summary: str | None, history: list[StoredMessage]) -> int:
        rendered = [
            {"role": m.role, "content": m.content or "", "t": m.tool_calls} for m in history
        ]
        return estimate_tokens(rendered) + len(summary or "") // CHARS_PER_TOKEN

    def _trim(self, summary: str | None, history: list[StoredMessage]) -> list[StoredMessage]:
        """Drop the oldest whole turns from this prompt (not from memory) until it fits."""
        while self._tokens(summary, history) > self._budget():
            cut = _next_turn(history)
            if cut <= 0:
                break
            history = history[cut:]
        return history

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


async def memory_note(
    recall: RecallRepo, query: str, *, hits: int, skip_labels: Sequence[str] = ()
) -> dict[str, Any] | None:
    """A message with the best ``hits`` recall hits for ``query``, fenced as untrusted data and
    cited; None when nothing is found. Documents carrying any of ``skip_labels`` (the
    conversation's own messages, say) are left out. It goes after the history, in the prompt's
    volatile tail, so the cached prefix is untouched; it is never stored."""
    if hits <= 0 or not query.strip():
        return None
    try:
        found = await recall.search(query, limit=hits * 3)
    except Exception as exc:  # memory is a help, never a reason for a turn to fail
        log.warning("recall for the prompt failed: %s", exc)
        return None
    skip = set(skip_labels)
    lines = []
    for hit in found:
        if skip & set(hit.labels.split()):
            continue
        when = hit.at.strftime("%Y-%m-%d %H:%M")
        lines.append(f"[{hit.cite}] {when} {hit.labels}\n{hit.snippet[:MEMORY_SNIPPET_CHARS]}")
        if len(lines) == hits:
            break
    if not lines:
        return None
    return {"role": "user", "content": MEMORY_NOTE + "\n" + fence("memory", "\n\n".join(lines))}


def _from_first_user(history: list[StoredMessage]) -> list[StoredMessage]:
    for index, message in enumerate(history):
        if message.role == "user":
            return history[index:]
    return []


def _next_turn(history: list[StoredMessage]) -> int:
    """Index of the second user message (where the next turn starts), 0 if there is none."""
    for index in range(1, len(history)):
        if history[index].role == "user":
            return index
    return 0


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
