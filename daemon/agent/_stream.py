"""Reading what a Chat Completions server sent: whole answers, streams, errors (for llm.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import openai

from daemon.core.errors import TransientError

__all__ = [
    "Answer",
    "MalformedAnswer",
    "StreamAggregate",
    "describe",
    "error_text",
    "extra_field",
    "read_response",
    "retry_after",
    "usage_counts",
]


class MalformedAnswer(TransientError):
    """A 200 that is no usable completion (not JSON, wrong shape, cut stream); retried as a 5xx."""


def extra_field(obj: Any, name: str) -> Any:
    """A field of a dict or an openai model, declared or extra (``reasoning_content``), or None."""
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    extra = getattr(obj, "model_extra", None) or {}
    if name in extra:
        return extra[name]
    return getattr(obj, name, None)


def usage_counts(raw: Any) -> tuple[int, int, int, int]:
    """(prompt, completion, cached, total) tokens; cache hits from either place Kimi puts them."""
    if raw is None:
        return 0, 0, 0, 0
    prompt = int(extra_field(raw, "prompt_tokens") or 0)
    completion = int(extra_field(raw, "completion_tokens") or 0)
    cached = extra_field(extra_field(raw, "prompt_tokens_details"), "cached_tokens")
    if not cached:
        cached = extra_field(raw, "cached_tokens")
    total = int(extra_field(raw, "total_tokens") or prompt + completion)
    return prompt, completion, int(cached or 0), total


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer:
    """The parts of one answer; ``tool_calls`` are (id, name, raw arguments)."""

    content: str
    reasoning_content: str | None
    tool_calls: list[tuple[str, str, str]]
    finish_reason: str
    model: str
    usage: tuple[int, int, int, int]


def read_response(response: Any) -> Answer:
    """The first choice of a ``ChatCompletion``; MalformedAnswer when there is none to read."""
    if isinstance(response, str):  # openai hands back the text of a body that is not JSON
        raise MalformedAnswer(f"HTTP 200 with a body that is not JSON ({len(response)} characters)")
    try:
        return _read_choice(response)
    except (AttributeError, TypeError, IndexError, KeyError) as exc:
        raise MalformedAnswer(f"HTTP 200 with JSON that is not a chat completion ({exc})") from exc


def _read_choice(response: Any) -> Answer:
    if not response.choices:
        raise MalformedAnswer("HTTP 200 with no choices")
    choice = response.choices[0]
    message = choice.message
    return Answer(
        content=message.content or "",
        reasoning_content=extra_field(message, "reasoning_content"),
        tool_calls=[
            (call.id, call.function.name, call.function.arguments)
            for call in message.tool_calls or ()
            if call.type == "function"
        ],
        finish_reason=choice.finish_reason or "",
        model=response.model or "",
        usage=usage_counts(response.usage),
    )


@dataclass(slots=True)
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass(slots=True)
class StreamAggregate:
    """Accumulates ``ChatCompletionChunk`` objects; call :meth:`answer` once the stream ends."""

    model: str = ""
    finish_reason: str = ""
    chunks: int = 0
    usage: Any = None
    content: list[str] = field(default_factory=list)
    reasoning: list[str] | None = None
    calls: dict[int, _PartialCall] = field(default_factory=dict)

    def feed(self, chunk: Any) -> None:
        """Fold one chunk in: deltas of the first choice, the model name and usage if present.

        ``chunk`` is a ``ChatCompletionChunk`` or its JSON as a plain dict (what the client
        streams: building the pydantic model costs more CPU than the rest of the step)."""
        try:
            if isinstance(chunk, dict):
                self._feed_json(chunk)
            else:
                self._feed(chunk)
        except (AttributeError, TypeError, KeyError) as exc:
            raise MalformedAnswer(f"stream chunk {self.chunks} is not a completion chunk") from exc

    def _feed(self, chunk: Any) -> None:
        self.chunks += 1
        self.model = chunk.model or self.model
        if (usage := extra_field(chunk, "usage")) is not None:
            self.usage = usage
        for choice in chunk.choices or ():
            if choice.index != 0:
                continue
            choice_usage = extra_field(choice, "usage")  # Moonshot puts usage on the last choice
            if choice_usage is not None and self.usage is None:
                self.usage = choice_usage
            if choice.finish_reason:
                self.finish_reason = choice.finish_reason
            if (delta := choice.delta) is not None:
                self._feed_delta(delta)

    def _feed_json(self, chunk: dict[str, Any]) -> None:
        """:meth:`_feed` on the JSON: required fields by key (a missing one is malformed, as an
        attribute missing from the model is), the optional ones by ``get``."""
        self.chunks += 1
        self.model = chunk["model"] or self.model
        if (usage := chunk.get("usage")) is not None:
            self.usage = usage
        for choice in chunk["choices"] or ():
            if choice["index"] != 0:
                continue
            choice_usage = choice.get("usage")
            if choice_usage is not None and self.usage is None:
                self.usage = choice_usage
            if finish := choice.get("finish_reason"):
                self.finish_reason = finish
            if (delta := choice["delta"]) is not None:
                self._feed_json_delta(delta)

    def _feed_json_delta(self, delta: dict[str, Any]) -> None:
        reasoning = delta.get("reasoning_content")
        if reasoning is not None:
            if self.reasoning is None:
                self.reasoning = []
            self.reasoning.append(reasoning)
        if content := delta.get("content"):
            self.content.append(content)
        for call in delta.get("tool_calls") or ():
            partial = self.calls.setdefault(call["index"], _PartialCall())
            if call_id := call.get("id"):
                partial.id = call_id
            if (function := call.get("function")) is not None:
                if name := function.get("name"):
                    partial.name += name
                if arguments := function.get("arguments"):
                    partial.arguments.append(arguments)

    def _feed_delta(self, delta: Any) -> None:
        reasoning = extra_field(delta, "reasoning_content")
        if reasoning is not None:
            if self.reasoning is None:
                self.reasoning = []
            self.reasoning.append(reasoning)
        if delta.content:
            self.content.append(delta.content)
        for call in delta.tool_calls or ():
            partial = self.calls.setdefault(call.index, _PartialCall())
            if call.id:
                partial.id = call.id
            if call.function is not None:
                if call.function.name:
                    partial.name += call.function.name
                if call.function.arguments:
                    partial.arguments.append(call.function.arguments)

    def answer(self) -> Answer:
        """Everything received, joined; tool calls in index order.

        A stream that ended without a ``finish_reason`` was cut (a proxy timeout, a dropped
        upstream): its text and tool calls may be partial, so none of it is used.
        """
        if not self.finish_reason:
            raise MalformedAnswer(
                f"the stream ended after {self.chunks} chunk(s) without a finish_reason (cut off)"
            )
        return Answer(
            content="".join(self.content),
            reasoning_content=None if self.reasoning is None else "".join(self.reasoning),
            tool_calls=[
                (call.id, call.name, "".join(call.arguments))
                for _, call in sorted(self.calls.items())
            ],
            finish_reason=self.finish_reason,
            model=self.model,
            usage=usage_counts(self.usage),
        )


def retry_after(value: str | None, now: datetime) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - now).total_seconds(), 0.0)


def error_text(exc: openai.APIError) -> str:
    body = exc.body
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])
    return exc.message


def describe(exc: BaseException) -> str:
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}: {error_text(exc)}"
    return f"{type(exc).__name__}: {exc}"
