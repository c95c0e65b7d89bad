"""The agent loop: model → tool calls → results → model, capped, persisted step by step."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

from daemon.agent.context import ContextKeeper
from daemon.agent.executor import ToolExecutor
from daemon.agent.prompts import STEP_CAP_NOTE, system_prompt
from daemon.agent.tools.base import ToolContext
from daemon.clock import Clock
from daemon.config import Settings
from daemon.errors import AgentDisabledError, BudgetExhaustedError, LlmUnavailableError
from memory.conversations import ConversationRepo, StoredMessage
from memory.runs import RunRepo
from memory.store import SqliteStore

if TYPE_CHECKING:
    from daemon.agent.llm import Completion
    from daemon.agent.model import ChatModel

log = logging.getLogger(__name__)

Mode = Literal["thinking", "instant"]
EventSink = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentResult:
    """The outcome of one agent run."""

    text: str
    run_id: int | None
    status: str
    steps: int
    tokens: int


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
        settings: Settings,
        llm: ChatModel | None,
        executor: ToolExecutor,
        conversations: ConversationRepo,
        runs: RunRepo,
        store: SqliteStore,
        clock: Clock,
        services: Any = None,
        disabled_reason: str = "",
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
        self._context = ContextKeeper(settings.agent, llm, conversations)

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
        try:
            result = await self._drive(request, run_id, emit)
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
        return result

    async def _drive(self, request: AgentRequest, run_id: int, emit: EventSink) -> AgentResult:
        writes = WriteBehind()
        try:
            result = await self._steps(request, run_id, emit, writes)
        finally:
            await writes.flush()
        await self._runs.finish(
            run_id,
            result.status,
            None
            if result.status == "ok"
            else f"stopped after {self.settings.agent.max_steps} steps",
        )
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
        )
        conversation = await self._conversations.get(request.conversation_id)
        history = await self._conversations.recent(request.conversation_id, agent.history_messages)
        summary, history = await self._context.fit(conversation, history, run_id)
        messages = [system_prompt(self.settings, summary)] + [to_api(m) for m in history]
        seen_calls: dict[str, int] = {}
        order = itertools.count(1)  # step numbers in the run, LLM and tool steps alike
        tokens = 0
        conversation_id = request.conversation_id
        for step in range(1, agent.max_steps + 2):
            capped = step > agent.max_steps  # one last call, without tools, for an answer
            if capped:
                note = STEP_CAP_NOTE.format(steps=agent.max_steps)
                messages.append({"role": "user", "content": note})
            completion = await self._call(messages, None if capped else tools, request.mode, run_id)
            tokens += completion.usage.total_tokens
            reply = completion.as_message()
            if completion.tool_calls and "reasoning_content" not in reply:
                reply["reasoning_content"] = completion.reasoning_content or ""
            record = partial(self._record_llm, run_id, next(order), completion, len(messages))
            writes.submit(partial(record, reply, conversation_id))
            messages.append(reply)
            if capped or not completion.tool_calls:
                return AgentResult(
                    text=completion.content,
                    run_id=run_id,
                    status="step_cap" if capped else "ok",
                    steps=min(step, agent.max_steps),
                    tokens=tokens,
                )
            for call in completion.tool_calls:
                await emit({"type": "tool", "name": call.name, "arguments": call.arguments})
                text, ok, tool_ms = await self._run_tool(call.name, call.arguments, ctx, seen_calls)
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
        self, name: str, arguments: str, ctx: ToolContext, seen: dict[str, int]
    ) -> tuple[str, bool, float]:
        """Run one call (or refuse a repeat); returns the text for the model, success, ms."""
        key = f"{name}:{_canonical(arguments)}"
        seen[key] = seen.get(key, 0) + 1
        if seen[key] > self.settings.agent.repeated_call_limit:
            return (
                (
                    f"ERROR: {name} was already called {seen[key] - 1} times with exactly these "
                    "arguments; the result will not change. Use the earlier result or answer now."
                ),
                False,
                0.0,
            )
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


def to_api(message: StoredMessage) -> dict[str, Any]:
    """A stored message in the Chat Completions shape, reasoning_content kept for replay."""
    out: dict[str, Any] = {"role": message.role, "content": message.content or ""}
    if message.tool_calls:
        out["tool_calls"] = message.tool_calls
        out["reasoning_content"] = message.reasoning_content or ""
    elif message.reasoning_content is not None and message.role == "assistant":
        out["reasoning_content"] = message.reasoning_content
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    return out


def _canonical(arguments: str) -> str:
    try:
        return json.dumps(json.loads(arguments), sort_keys=True)
    except (json.JSONDecodeError, TypeError):
        return arguments


def _is_cancel(exc: BaseException) -> bool:
    return isinstance(exc, asyncio.CancelledError)


async def _ignore(_: dict[str, Any]) -> None:
    return None
