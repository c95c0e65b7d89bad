"""What tools may use besides the host: memory, the outbox, tasks and who is asking."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from memory.facts import FactRepo
from memory.outbox import OutboxRepo
from memory.recall import RecallRepo


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolServices:
    """Handed to tools through ToolContext.services."""

    facts: FactRepo
    outbox: OutboxRepo
    recall: RecallRepo | None = None  # search over everything; None: the recall tool reads facts
    channels: tuple[str, ...] = ("console",)
    wake_outbox: Callable[[], None] = field(default=lambda: None)
    # Recent HostSample readings of the host watcher, oldest first (evidence for investigations).
    host_history: Callable[[], Sequence[Any]] = field(default=lambda: ())
    # daemon.tasks.commands.TaskService (scheduler + task repo; the task tools check its type);
    # None when the scheduler is off. Typed loosely: the agent is below the tasks package.
    tasks: object | None = None
    # An actor ("slack:U123") → "viewer" | "operator" | "admin" | None; console actors are admin.
    role_of: Callable[[str], str | None] | None = None
