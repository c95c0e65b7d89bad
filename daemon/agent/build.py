"""The one place an agent is assembled: model client, tools, executor (policy, audit,
approvals) and loop, for the runtime, the test rigs and the benchmarks alike."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from daemon.agent.executor import ToolExecutor
from daemon.agent.loop import AgentLoop, Sleep
from memory.audit import AuditRepo
from memory.conversations import ConversationRepo
from memory.runs import RunRepo

if TYPE_CHECKING:
    from daemon.agent.llm import LlmClient
    from daemon.agent.model import ChatModel
    from daemon.agent.settings import AgentConfig
    from daemon.agent.tools.base import ToolRegistry
    from daemon.core.abc import Approver
    from daemon.core.clock import Clock
    from memory.store import SqliteStore
    from memory.usage import UsageRepo

__all__ = ["build_agent", "build_llm"]


def build_llm(settings: AgentConfig, *, usage: UsageRepo | None, clock: Clock) -> LlmClient:
    """The Kimi client for ``settings``, counting tokens (imported here: openai is heavy)."""
    from daemon.agent.llm import LlmClient

    return LlmClient(settings.llm, settings.agent.budget, usage=usage, clock=clock)


def build_agent(
    *,
    settings: AgentConfig,
    store: SqliteStore,
    clock: Clock,
    llm: ChatModel | None,
    registry: ToolRegistry | None = None,
    approvals: Approver | None = None,
    audit: AuditRepo | None = None,
    conversations: ConversationRepo | None = None,
    runs: RunRepo | None = None,
    services: Any = None,
    disabled_reason: str = "",
    sleep: Sleep = asyncio.sleep,
) -> AgentLoop:
    """An agent loop on ``store``; ``llm`` None means the agent is off (``disabled_reason``).

    ``registry`` defaults to every tool; ``approvals`` None means nobody can approve (a
    privileged call is refused); the repositories default to fresh ones on ``store``.
    """
    if registry is None:
        from daemon.agent.tools.registry import default_registry

        registry = default_registry()
    audit = audit if audit is not None else AuditRepo(store, clock)
    conversations = conversations if conversations is not None else ConversationRepo(store, clock)
    return AgentLoop(
        settings=settings,
        llm=llm,
        executor=ToolExecutor(registry, audit=audit, approvals=approvals),
        conversations=conversations,
        runs=runs if runs is not None else RunRepo(store, clock),
        store=store,
        clock=clock,
        services=services,
        disabled_reason=disabled_reason,
        sleep=sleep,
    )
