"""The model boundary the agent loop depends on (LlmClient and LazyLlmClient implement it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from daemon.agent.llm import Completion


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
