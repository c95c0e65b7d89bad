"""The agent loop: model → tool calls → results → model, capped, persisted step by step.

A turn ends with an answer, or early: at the step cap, the tool-call caps or a repeated call
(one last model call without tools gives the answer), at its deadline
(``agent.turn_timeout_seconds``: nothing more runs), or on a model API failure. A turn still
waiting after ``agent.progress_after_seconds`` emits one ``progress`` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

from daemon.agent.call_guard import CallGuard
from daemon.agent.context import ContextKeeper, memory_note
from daemon.agent.executor import ToolExecutor
from daemon.agent.model import REASONING_PLACEHOLDER
from daemon.agent.prompts import STEP_CAP_NOTE, TURN_STOP_NOTE
from daemon.agent.settings import AgentConfig
from daemon.agent.tools.base import ToolContext
from daemon.core.clock import Clock
from daemon.core.errors import AgentDisabledError, BudgetExhaustedError, LlmUnavailableError
from memory.conversations import ConversationRepo
from memory.facts import FactRepo
from memory.recall import RecallRepo
from memory.runs import RunRepo
from memory.store import SqliteStore

if TYPE_CHECKING:
    from daemon.agent.model import ChatModel, Completion

log = logging.getLogger(__name__)

Mode = Literal["thinking", "instant"]
EventSink = Callable[[dict[str, Any]], Awaitable[None]]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentResult:
    """The outcome of one agent run."""

    text: str
    run_id: int | None
    status: str
    steps: int
    tokens: int
    stop_reason: str | None = None  # why the turn ended early, when it did


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentRequest:
    """One thing for the agent to do, in one conversation."""

    conversation_id: int
    text: str
    actor: str
    kind: str = "chat"
    mode: Mode = "thinking"
    unattended: bool = False
    origin: str | None = None  # "channel|room|thread", where approval prompts are posted
    stored: bool = False  # the user message is already committed to the conversation
    tools: bool = True  # False: answer from the conversation alone (no tool schemas sent)
    # What to search memory for, to add the best hits to the prompt: None = the text of a chat
    # request (nothing for other kinds); "" = nothing. recall_skip: labels of documents that
    # are no news to this request (its own incident's), left out.
    recall_query: str | None = None
    recall_skip: tuple[str, ...] = ()


class WriteBehind:
    """Persists a run's steps in order while the loop moves on; flush() waits for all of them.

    Each step's write overlaps the next tool call or HTTP request instead of adding to it; the
    run is marked finished only after every step is committed.
    """

    def __init__(self) -> None:
        self._tail: asyncio.Task[None] | None = None

    def submit(self, write: Callable[[], Awaitable[None]]) -> None:
        previous = self._tail

        async def chained() -> None:
            if previous is not None:
                await previous
            await write()

        self._tail = asyncio.create_task(chained())

    async def flush(self) -> None:
        if self._tail is not None:
            await asyncio.shield(self._tail)


class AgentLoop:
    """Drives one conversation turn to an answer."""

    def __init__(
        self,
        *,
        settings: AgentConfig,
        llm: ChatModel | None,
        executor: ToolExecutor,
        conversations: ConversationRepo,
        runs: RunRepo,
        store: SqliteStore,
        clock: Clock,
        services: Any = None,
        disabled_reason: str = "",
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self._llm = llm
        self._executor = executor
        self._conversations = conversations
        self._runs = runs
        self._store = store
        self._clock = clock
        self._services = services
        self._disabled_reason = disabled_reason
        self._sleep = sleep
        facts = getattr(services, "facts", None)
        self._context = ContextKeeper(
            settings,
            llm,
            conversations,
            executor=executor,
            runs=runs,
            store=store,
            facts=facts if isinstance(facts, FactRepo) else None,
        )

    @property
    def services(self) -> Any:
        """The services tools may use (what each ToolContext gets)."""
        return self._services

    @property
    def executor(self) -> ToolExecutor:
        """The door every tool call of this agent passes (sub-agents share it)."""
        return self._executor

    @property
    def enabled(self) -> bool:
        return self._llm is not None

    async def run(self, request: AgentRequest, on_event: EventSink | None = None) -> AgentResult:
        """Answer ``request.text``; the user message is stored before anything else happens."""
        if not request.stored:
            await self._conversations.append(request.conversation_id, "user", request.text)
        if self._llm is None:
            raise AgentDisabledError(self._disabled_reason or "the agent is off")
        run_id = await self._runs.start(request.kind, request.actor, request.conversation_id)
        emit = on_event or _ignore
        limit = self.settings.agent.turn_timeout_seconds
        deadline = asyncio.timeout(limit)
        progress = asyncio.create_task(self._progress(emit)) if on_event else None
        try:
            async with deadline:
                result = await self._drive(request, run_id, emit)
        except TimeoutError:
            if not deadline.expired():
                await self._runs.finish(run_id, "error", "TimeoutError")
                raise
            log.warning("run %d stopped at its %gs deadline", run_id, limit)
            result = await self._stop(
                run_id,
                "timeout",
                f"I stopped: this request took longer than {limit:g} s "
                "(agent.turn_timeout_seconds), so I gave up on it and ran nothing more. "
                "Ask again, perhaps with a narrower question.",
            )
        except BudgetExhaustedError as exc:
            result = await self._stop(
                run_id,
                "budget",
                f"I can't think right now: {exc}. "
                "Alerts and notifications keep working without me.",
            )
        except LlmUnavailableError as exc:
            result = await self._stop(run_id, "error", f"The model API is unavailable: {exc}")
        except BaseException as exc:
            await self._runs.finish(run_id, "cancelled" if _is_cancel(exc) else "error", repr(exc))
            raise
        finally:
            if progress is not None:
                progress.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await progress
        return result

    async def _progress(self, emit: EventSink) -> None:
        """One ``progress`` event if the turn is still going after the configured seconds."""
        after = self.settings.agent.progress_after_seconds
        if after <= 0:
            return
        await self._sleep(after)
        try:
            await emit(
                {"type": "progress", "seconds": after, "text": f"still thinking… ({after:g} s)"}
            )
        except Exception:  # a lost progress note must not fail the turn
            log.warning("could not show progress", exc_info=True)

    async def _drive(self, request: AgentRequest, run_id: int, emit: EventSink) -> AgentResult:
        writes = WriteBehind()
        try:
            result = await self._steps(request, run_id, emit, writes)
        finally:
            await writes.flush()
        await self._runs.finish(run_id, result.status, result.stop_reason)
        return result

    async def _steps(
        self, request: AgentRequest, run_id: int, emit: EventSink, writes: WriteBehind
    ) -> AgentResult:
        assert self._llm is not None
        agent = self.settings.agent
        tools = self._executor.registry.schemas() if request.tools else None
        ctx = ToolContext(
            actor=request.actor,
            reason=request.text[:500],
            settings=self.settings,
            clock=self._clock,
            run_id=run_id,
            unattended=request.unattended,
            origin=request.origin,
            services=self._services,
            events=None if emit is _ignore else emit,
        )
        conversation = await self._conversations.get(request.conversation_id)
        history = await self._conversations.recent(
            request.conversation_id, self._context.load_limit
        )
        order = itertools.count(1)  # step numbers in the run: flush, compaction, LLM and tool
        messages = await self._context.prompt(
            conversation, history, run_id, tools, ctx=ctx, order=order
        )
        memory = await self._memory_note(request)
        if memory is not None:
            messages.append(memory)
        guard = CallGuard(agent)
        tokens = 0
        conversation_id = request.conversation_id
        for step in range(1, agent.max_steps + 2):
            ending = guard.ending
            capped = ending is not None or step > agent.max_steps  # last call, no tools
            if ending is not None:
                messages.append({"role": "user", "content": TURN_STOP_NOTE.format(ending.reason)})
            elif capped:
                note = STEP_CAP_NOTE.format(steps=agent.max_steps)
                messages.append({"role": "user", "content": note})
            completion = await self._call(messages, None if capped else tools, request.mode, run_id)
            tokens += completion.usage.total_tokens
            reply = completion.as_message()
            if capped:  # calls asked for anyway are never run, so never stored unanswered
                reply.pop("tool_calls", None)
            elif completion.tool_calls and not reply.get("reasoning_content"):
                reply["reasoning_content"] = completion.reasoning_content or REASONING_PLACEHOLDER
            record = partial(self._record_llm, run_id, next(order), completion, len(messages))
            writes.submit(partial(record, reply, conversation_id))
            messages.append(reply)
            if capped or not completion.tool_calls:
                text, status, why = completion.content, "ok", None
                if ending is not None:
                    status, why = ending.status or "tool_cap", f"stopped early: {ending.reason}"
                    text = f"{text}\n\n({why})" if text else f"({why})"
                elif capped:
                    status, why = "step_cap", f"stopped after {agent.max_steps} steps"
                return AgentResult(
                    text=text,
                    run_id=run_id,
                    status=status,
                    steps=min(step, agent.max_steps),
                    tokens=tokens,
                    stop_reason=why,
                )
            for position, call in enumerate(completion.tool_calls):
                refusal = guard.check(call.name, call.arguments, position)
                if refusal is not None:
                    text, ok, tool_ms = refusal.text, False, 0.0
                else:
                    await emit({"type": "tool", "name": call.name, "arguments": call.arguments})
                    text, ok, tool_ms = await self._run_tool(call.name, call.arguments, ctx)
                    await emit({"type": "tool_result", "name": call.name, "ok": ok})
                tool_message = {"role": "tool", "tool_call_id": call.id, "content": text}
                step_number = next(order)
                writes.submit(
                    partial(
                        self._record_tool,
                        run_id,
                        step_number,
                        call.name,
                        call.arguments,
                        ok,
                        tool_ms,
                        tool_message,
                        conversation_id,
                    )
                )
                messages.append(tool_message)
        raise AssertionError("unreachable: the last iteration always returns")

    async def _memory_note(self, request: AgentRequest) -> dict[str, Any] | None:
        recall = getattr(self._services, "recall", None)
        hits = self.settings.agent.recall_hits
        query = request.recall_query
        if query is None:
            query = request.text if request.kind == "chat" else ""
        if not isinstance(recall, RecallRepo) or not hits or not query:
            return None
        skip = (f"conversation={request.conversation_id}", *request.recall_skip)
        return await memory_note(recall, query, hits=hits, skip_labels=skip)

    async def _call(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        mode: Mode,
        run_id: int,
    ) -> Completion:
        assert self._llm is not None
        self._context.shrink_in_run(messages)
        return await self._llm.complete(
            messages, tools=tools, mode=mode, purpose="agent", run_id=run_id
        )

    async def _record_llm(
        self,
        run_id: int,
        index: int,
        completion: Completion,
        message_count: int,
        reply: dict[str, Any],
        conversation_id: int,
    ) -> None:
        """Persist an LLM step and the assistant message in one transaction."""
        async with self._store.write():
            await self._runs.add_step(
                run_id,
                index=index,
                kind="llm",
                name=completion.model,
                input={"messages": message_count},
                output={
                    "content": completion.content,
                    "reasoning_content": completion.reasoning_content,
                    "tool_calls": [
                        {"id": c.id, "name": c.name, "arguments": c.arguments}
                        for c in completion.tool_calls
                    ],
                    "finish_reason": completion.finish_reason,
                },
                duration_ms=completion.latency_ms,
                tokens=completion.usage.total_tokens,
            )
            await self._append(conversation_id, reply)

    async def _record_tool(
        self,
        run_id: int,
        index: int,
        name: str,
        arguments: str,
        ok: bool,
        duration_ms: float,
        message: dict[str, Any],
        conversation_id: int,
    ) -> None:
        """Persist a tool step and the tool message in one transaction."""
        text = message["content"]
        async with self._store.write():
            await self._runs.add_step(
                run_id,
                index=index,
                kind="tool",
                name=name,
                input=arguments,
                output=text if ok else None,
                error=None if ok else text,
                duration_ms=duration_ms,
            )
            await self._append(conversation_id, message)

    async def _run_tool(
        self, name: str, arguments: str, ctx: ToolContext
    ) -> tuple[str, bool, float]:
        """Run one call; returns the text for the model, success, ms."""
        outcome = await self._executor.execute(name, arguments, ctx)
        limit = self.settings.agent.tool_output_chars
        text = outcome.text
        if len(text) > limit:
            text = (
                text[:limit]
                + f"\n[output truncated: showing {limit} of {len(outcome.text)} characters; "
                "ask for a narrower range if you need more]"
            )
        return text, outcome.ok, outcome.duration_ms

    async def _append(self, conversation_id: int, message: dict[str, Any]) -> None:
        await self._conversations.append(
            conversation_id,
            message["role"],
            message.get("content"),
            reasoning_content=message.get("reasoning_content"),
            tool_calls=message.get("tool_calls"),
            tool_call_id=message.get("tool_call_id"),
        )

    async def _stop(self, run_id: int, status: str, text: str) -> AgentResult:
        await self._runs.finish(run_id, status, text)
        run = await self._runs.get(run_id)
        return AgentResult(text=text, run_id=run_id, status=status, steps=0, tokens=run.tokens)


def _is_cancel(exc: BaseException) -> bool:
    return isinstance(exc, asyncio.CancelledError)


async def _ignore(_: dict[str, Any]) -> None:
    return None
