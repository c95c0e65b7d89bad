"""Keeps the prompt under the configured limits and its prefix byte-stable for the model's cache.

History only grows between compactions: every unsummarised message is sent, in the order stored,
until the conversation passes ``agent.history_messages`` messages or the token budget. Then one
compaction folds a big chunk (everything before the last ``keep_recent_messages``, cut at a user
turn, so a tool call never loses its result) into the conversation summary, which then stays
fixed until the next compaction. A prefix cache therefore reuses the whole prompt but the newest
messages on every turn in between.

Before each compaction pass a silent flush turn (one request, no follow-up) lets the model save
what matters in the chunk as facts with ``remember_fact``, the only tool it may use then, through
the normal tool path (policy, audit); the turn is recorded as run steps but never joins the
conversation. A failed flush is logged and the compaction goes on: the messages stay stored and
searchable either way.

The flush and summary requests are built as continuations of the conversation's own prompt (same
system prompt, tools and messages, then one instruction), so they are served from the cache too.
A failed, empty or timed-out summary marks nothing: the messages stay and the next turn tries
again. A pass that leaves the prompt over the token budget (one huge turn) is followed by a
second pass that keeps only the newest turn; what is still over is trimmed from this prompt (not
from memory) and logged. Each pass is recorded as a ``compaction`` run step: which messages it
folded, tokens before and after, and the summary (``nightshift memory compactions``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from daemon.agent.prompts import (
    FLUSH,
    FLUSH_ABOVE,
    MEMORY_NOTE,
    MEMORY_SNIPPET_CHARS,
    SUMMARISE,
    SUMMARISE_ABOVE,
    facts_snapshot,
    fence,
    system_prompt,
)
from daemon.agent.replay import replay
from daemon.agent.settings import AgentConfig
from daemon.core.errors import BudgetExhaustedError, NightshiftError
from memory.conversations import Conversation, ConversationRepo, StoredMessage
from memory.facts import FactRepo
from memory.recall import RecallRepo

if TYPE_CHECKING:
    from daemon.agent.executor import ToolExecutor
    from daemon.agent.model import ChatModel
    from daemon.agent.tools.base import ToolContext
    from memory.runs import RunRepo
    from memory.store import SqliteStore

log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 4
ELIDED = "[earlier tool output elided to keep the context small]"
LOAD_FACTOR = 10  # messages loaded per request: history_messages × this (bounds a failing streak)
MAX_PASSES = 2  # compaction passes per turn: the chunk, then (if still over) all but the last turn
FLUSH_TOOL = "remember_fact"  # the one tool the flush turn may use
FLUSH_MAX_CALLS = 5  # facts one flush turn may save


def estimate_tokens(messages: list[dict[str, Any]]) -> int:
    """A cheap, conservative token estimate (about four characters per token)."""
    return len(json.dumps(messages, ensure_ascii=False)) // CHARS_PER_TOKEN + 1


class ContextKeeper:
    """Decides what of a conversation goes into the next prompt."""

    def __init__(
        self,
        settings: AgentConfig,
        llm: ChatModel | None,
        conversations: ConversationRepo,
        *,
        executor: ToolExecutor | None = None,
        runs: RunRepo | None = None,
        store: SqliteStore | None = None,
        facts: FactRepo | None = None,
    ) -> None:
        self._config = settings
        self._settings = settings.agent
        self._llm = llm
        self._conversations = conversations
        self._executor = executor  # None: no flush turn (nothing could run remember_fact)
        self._runs = runs  # None (or no run): compactions are logged, not recorded as steps
        self._store = store
        self._facts = facts
        self.failures = 0  # summaries that failed (the messages were kept)
        self.flush_failures = 0  # flush turns that failed (the compaction went on)

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
        *,
        ctx: ToolContext | None = None,
        order: Iterator[int] | None = None,
    ) -> list[dict[str, Any]]:
        """The messages that open a turn: system prompt (with the conversation's facts snapshot
        and summary), then the history. A compaction retakes the facts snapshot.

        ``ctx`` is the turn's tool context (the flush turn runs its calls under it); ``order``
        numbers the run steps this writes.
        """
        facts = await self.facts_snapshot(conversation.id)
        summary, history = await self.fit(
            conversation, history, run_id, tools, ctx=ctx, order=order, facts=facts
        )
        if summary != (conversation.summary or None):
            facts = await self.facts_snapshot(conversation.id, refresh=True)
        return [system_prompt(self._config, summary, facts), *replay(history)]

    async def facts_snapshot(self, conversation_id: int, *, refresh: bool = False) -> str:
        """The facts block this conversation's prompts carry (stored, so byte-stable)."""
        limit = self._settings.facts_in_prompt
        if self._facts is None or limit <= 0:
            return ""
        return await self._facts.snapshot(
            conversation_id, facts_snapshot, limit=limit, refresh=refresh
        )

    async def fit(
        self,
        conversation: Conversation,
        history: list[StoredMessage],
        run_id: int | None,
        tools: list[dict[str, Any]] | None = None,
        *,
        ctx: ToolContext | None = None,
        order: Iterator[int] | None = None,
        facts: str = "",
    ) -> tuple[str | None, list[StoredMessage]]:
        """Return (summary, history) within the limits, compacting when over them.

        History always starts at a user message so no tool result is orphaned from its call.
        """
        history = _from_first_user(history)
        summary = conversation.summary or None
        if not self._over(summary, history):
            return summary, history
        order = order if order is not None else itertools.count(1)
        keeps = (self._settings.keep_recent_messages, 1)  # the second pass keeps the newest turn
        for number, keep in enumerate(keeps[:MAX_PASSES], start=1):
            if number > 1 and self._tokens(summary, history) <= self._budget():
                break
            cut = _cut_point(history, keep)
            if cut <= 0 or self._llm is None:
                break
            old, recent = history[:cut], history[cut:]
            await self._flush(summary, old, run_id, tools, ctx, order, facts)
            new_summary = await self._summarise(summary, old, run_id, tools, facts)
            if new_summary is None:  # keep every message; the next turn retries
                self.failures += 1
                break
            before = self._tokens(summary, history)
            after = self._tokens(new_summary, recent)
            await self._fold(
                conversation.id, old, new_summary, (before, after, number), run_id, order
            )
            summary, history = new_summary, recent
        trimmed = self._trim(summary, history)
        if len(trimmed) < len(history):
            log.warning(
                "conversation %s: still over the token budget after compaction; the oldest %d "
                "messages are left out of this prompt (they stay stored and searchable)",
                conversation.id,
                len(history) - len(trimmed),
            )
        if self._tokens(summary, trimmed) > self._budget():
            log.warning(
                "conversation %s: the newest turn alone is over the token budget; its oldest "
                "tool outputs are elided from the prompt",
                conversation.id,
            )
        return summary, trimmed

    async def _flush(
        self,
        summary: str | None,
        old: list[StoredMessage],
        run_id: int | None,
        tools: list[dict[str, Any]] | None,
        ctx: ToolContext | None,
        order: Iterator[int],
        facts: str = "",
    ) -> int:
        """The silent turn before a compaction pass; returns how many facts it saved.

        One request, no follow-up: the model may call ``remember_fact`` (at most
        FLUSH_MAX_CALLS times; other tools are refused, not run). A failure is logged and
        swallowed: the compaction goes on, and the messages stay searchable.
        """
        if self._llm is None or self._executor is None or ctx is None:
            return 0
        registry = self._executor.registry
        if FLUSH_TOOL not in registry.names():
            return 0
        only = [registry.get(FLUSH_TOOL).schema()]
        offered = [t.get("function", {}).get("name") for t in tools or []]
        messages, sent = self._continuation(
            summary,
            old,
            FLUSH_ABOVE.format(calls=FLUSH_MAX_CALLS),
            FLUSH.format(calls=FLUSH_MAX_CALLS),
            tools if FLUSH_TOOL in offered else only,  # the same tools: the prefix is cached
            only,
            facts,
        )
        try:
            async with asyncio.timeout(self._settings.summary_timeout_seconds):
                completion = await self._llm.complete(
                    messages, tools=sent, mode="instant", purpose="flush", run_id=run_id
                )
        except (TimeoutError, NightshiftError) as exc:
            self.flush_failures += 1
            why = str(exc) or f"no answer within {self._settings.summary_timeout_seconds:g} s"
            log.warning(
                "memory flush before compaction failed, compacting anyway "
                "(the %d messages stay searchable): %s",
                len(old),
                why,
            )
            return 0
        calls = completion.tool_calls[:FLUSH_MAX_CALLS]
        await self._step(
            run_id,
            order,
            kind="flush",
            name=completion.model,
            input={"messages": len(messages), "compacting": len(old)},
            output={
                "content": completion.content,
                "tool_calls": [
                    {"id": c.id, "name": c.name, "arguments": c.arguments}
                    for c in completion.tool_calls
                ],
            },
            duration_ms=completion.latency_ms,
            tokens=completion.usage.total_tokens,
        )
        flush_ctx = dataclasses.replace(ctx, reason="memory flush before compaction")
        saved = 0
        for call in calls:
            if call.name == FLUSH_TOOL:
                outcome = await self._executor.execute(call.name, call.arguments, flush_ctx)
                text, ok, duration_ms = outcome.text, outcome.ok, outcome.duration_ms
            else:
                text, ok, duration_ms = f"ERROR: only {FLUSH_TOOL} runs in a flush", False, 0.0
            saved += ok
            await self._step(
                run_id,
                order,
                kind="tool",
                name=call.name,
                input=call.arguments,
                output=text if ok else None,
                error=None if ok else text,
                duration_ms=duration_ms,
            )
        unsaved = len(completion.tool_calls) - saved
        log.info(
            "memory flush before compaction: %d facts saved, %d calls refused or failed",
            saved,
            unsaved,
        )
        return saved

    async def _summarise(
        self,
        summary: str | None,
        old: list[StoredMessage],
        run_id: int | None,
        tools: list[dict[str, Any]] | None,
        facts: str = "",
    ) -> str | None:
        """The new summary of ``summary`` plus ``old``, or None when the model gave none."""
        assert self._llm is not None
        messages, tools = self._continuation(
            summary, old, SUMMARISE_ABOVE, SUMMARISE, tools, None, facts
        )
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

    def _continuation(
        self,
        summary: str | None,
        old: list[StoredMessage],
        instruction: str,
        standalone: str,
        tools: list[dict[str, Any]] | None,
        standalone_tools: list[dict[str, Any]] | None,
        facts: str = "",
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
        """The conversation's own prompt plus ``instruction`` (a cached prefix), or, when that
        is too big to send, a short transcript under ``standalone`` with ``standalone_tools``."""
        messages = [
            system_prompt(self._config, summary, facts),
            *replay(old),
            {"role": "user", "content": instruction},
        ]
        if estimate_tokens(messages) <= self._budget():
            return messages, tools
        transcript = [
            {"role": "system", "content": standalone},
            {"role": "user", "content": _transcript(summary, old)},
        ]
        return transcript, standalone_tools

    async def _fold(
        self,
        conversation_id: int,
        old: list[StoredMessage],
        summary: str,
        pass_tokens: tuple[int, int, int],
        run_id: int | None,
        order: Iterator[int],
    ) -> None:
        """Mark ``old`` summarised under ``summary`` and record the pass, in one transaction."""
        before, after, number = pass_tokens
        last = old[-1].id
        if self._store is None or self._runs is None or run_id is None:
            first, count = await self._conversations.unsummarized_span(conversation_id, last)
            await self._conversations.mark_summarized(conversation_id, last, summary)
        else:
            async with self._store.write():
                first, count = await self._conversations.unsummarized_span(conversation_id, last)
                await self._conversations.mark_summarized(conversation_id, last, summary)
                await self._runs.add_step(
                    run_id,
                    index=next(order),
                    kind="compaction",
                    name=f"pass {number}",
                    input={
                        "conversation": conversation_id,
                        "first_message": first,
                        "last_message": last,
                        "messages": count,
                        "tokens_before": before,
                        "tokens_after": after,
                        "round": number,  # not "pass": redacted as a password key
                    },
                    output=summary,
                )
        log.info(
            "conversation %s: compaction pass %d folded %d messages (#%d..#%d), ~%d → ~%d tokens",
            conversation_id,
            number,
            count,
            first,
            last,
            before,
            after,
        )

    async def _step(self, run_id: int | None, order: Iterator[int], **step: Any) -> None:
        if self._runs is not None and run_id is not None:
            await self._runs.add_step(run_id, index=next(order), **step)

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
