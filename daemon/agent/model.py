"""The model boundary the agent loop depends on (LlmClient and LazyLlmClient implement it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from daemon.agent.llm import Completion

__all__ = ["REASONING_PLACEHOLDER", "ChatModel"]

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
