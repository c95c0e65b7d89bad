"""What tools may use besides the host: memory and the outbox."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from memory.facts import FactRepo
from memory.outbox import OutboxRepo


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolServices:
    """Handed to tools through ToolContext.services."""

    facts: FactRepo
    outbox: OutboxRepo
    channels: tuple[str, ...] = ("console",)
    wake_outbox: Callable[[], None] = field(default=lambda: None)
