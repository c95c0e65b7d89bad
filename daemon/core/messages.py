"""Messages between parts of nightshift and people: approval requests and the decisions on them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovalRequest:
    """A privileged tool call waiting for a person's decision."""

    id: str
    tool: str
    arguments: dict[str, Any]
    actor: str
    reason: str
    expires_at: datetime
    conversation: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tool": self.tool,
            "arguments": self.arguments,
            "actor": self.actor,
            "reason": self.reason,
            "expires_at": self.expires_at.isoformat(),
            "conversation": self.conversation,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovalDecision:
    approved: bool
    by: str
    note: str = ""
