"""Sub-agents: the ``delegate`` tool, the lean sub-agent loop, lifecycle and budgets."""

from __future__ import annotations

from typing import TYPE_CHECKING

from daemon.agent.swarm.child import RunBudget
from daemon.agent.swarm.coordinator import DELEGATE, Notify, RunObserver, Subtask, Swarm

if TYPE_CHECKING:
    from daemon.agent.loop import AgentLoop
    from daemon.agent.model import ChatModel
    from daemon.agent.settings import AgentConfig
    from daemon.core.clock import Clock
    from memory.store import SqliteStore

__all__ = ["DELEGATE", "Notify", "RunBudget", "RunObserver", "Subtask", "Swarm", "attach_swarm"]


def attach_swarm(
    loop: AgentLoop, *, settings: AgentConfig, llm: ChatModel, store: SqliteStore, clock: Clock
) -> Swarm:
    """Give ``loop``'s agent the ``delegate`` tool; sub-agents share its tool executor."""
    swarm = Swarm(
        settings=settings, llm=llm, executor=loop.executor, store=store, clock=clock,
        services=loop.services,
    )  # fmt: skip
    loop.executor.registry.add(swarm.tool())
    return swarm
