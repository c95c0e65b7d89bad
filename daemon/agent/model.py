"""The model boundary the agent loop depends on (LlmClient and LazyLlmClient implement it)
and the values that cross it: completions, tool calls, token usage."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal, Protocol

__all__ = [
    "REASONING_PLACEHOLDER",
    "ChatModel",
    "Completion",
    "ToolCall",
    "Usage",
    "model_progress",
]

# Told when a model request of this context is sent ("start"), on every streamed chunk
# ("chunk") and when it has ended ("end"): a sub-agent's watchdog measures the model's progress
# (a stream that hangs midway is told from one that is slow; waits of our own do not count).
model_progress: ContextVar[Callable[[str], None] | None] = ContextVar(
    "model_progress", default=None
)

# Replayed as the reasoning of a tool-call message that came without any: with thinking on, Kimi
# answers 400 to an earlier tool-call message whose reasoning_content is missing or empty.
REASONING_PLACEHOLDER = "(no reasoning was returned with this tool call)"


class ChatModel(Protocol):
    """Something that answers Chat Completions requests."""

    async def complete(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        mode: Literal["thinking", "instant"],
        purpose: str,
        run_id: int | None = None,
    ) -> Completion: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCall:
    """A function call the model asked for; ``arguments`` is the raw JSON text (may be invalid)."""

    id: str
    name: str
    arguments: str

    def as_dict(self) -> dict[str, Any]:
        """The OpenAI wire shape."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Usage:
    """Token counts of one call; ``cached_tokens`` is the part of the prompt served from cache."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    total_tokens: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Completion:
    """One model answer."""

    content: str
    reasoning_content: str | None
    tool_calls: tuple[ToolCall, ...]
    finish_reason: str
    model: str
    usage: Usage
    latency_ms: float

    def as_message(self) -> dict[str, Any]:
        """The assistant message to append to the history and send back verbatim.

        ``reasoning_content`` is kept whenever the model gave one; the client sets a placeholder
        for thinking-mode tool calls that came without it (K2.6 rejects ``""`` as missing), so
        the replay never gets a 400.
        """
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.reasoning_content is not None:
            message["reasoning_content"] = self.reasoning_content
        if self.tool_calls:
            message["tool_calls"] = [call.as_dict() for call in self.tool_calls]
        return message
