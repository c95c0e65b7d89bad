"""Builds the LLM client on first use, so an idle daemon never imports openai (~16 MB, ~0.6 s).

The import happens on a worker thread: done on the event loop it froze every other component
(notifications, /healthz, chat) for 0.4-1.25 s at the first incident or question.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from daemon.agent.llm import LlmClient
    from daemon.agent.model import Completion
    from daemon.agent.settings import BudgetSettings


class LazyLlmClient:
    """Same calls as LlmClient; the real client (and openai) load at the first completion."""

    def __init__(self, factory: Callable[[], LlmClient]) -> None:
        self._factory = factory
        self._client: LlmClient | None = None
        self._building = asyncio.Lock()

    @property
    def built(self) -> bool:
        return self._client is not None

    async def _get(self) -> LlmClient:
        if self._client is None:
            async with self._building:
                if self._client is None:
                    await asyncio.to_thread(importlib.import_module, "daemon.agent.llm")
                    self._client = self._factory()
        return self._client

    async def complete(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        mode: Literal["thinking", "instant"],
        purpose: str,
        run_id: int | None = None,
    ) -> Completion:
        return await (await self._get()).complete(
            messages, tools=tools, mode=mode, purpose=purpose, run_id=run_id
        )

    async def ping(self) -> str:
        return await (await self._get()).ping()

    async def budget_status(self) -> tuple[int, int]:
        return await (await self._get()).budget_status()

    def set_budget(self, budget: BudgetSettings) -> None:
        if self._client is not None:  # an unbuilt client reads the current settings when built
            self._client.set_budget(budget)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
