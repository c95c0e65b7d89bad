"""The boundary Protocols whose types are the core's: what one part of nightshift needs of
another, so neither imports the other.

- :class:`Clock`: wall-clock and monotonic time (``daemon.core.clock`` has the real one and a
  manual one for tests).
- :class:`Approver`: asks a person to approve a privileged action and waits for the decision
  (``daemon.chat.approvals.ApprovalBroker``; the agent's executor and remediation use it).

Protocols whose types live higher up stay beside them: the Channel contract in
``integrations/base.py``, the Watcher contract in ``daemon/watchers/base.py``, the model in
``daemon/agent/model.py``, the incident Responder in ``daemon/incidents/manager.py``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from daemon.core.messages import ApprovalDecision

__all__ = ["Approver", "Clock"]


class Clock(Protocol):
    """Wall-clock and monotonic time."""

    def now(self) -> datetime:
        """Aware UTC wall-clock time."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin, never going backwards."""
        ...


class Approver(Protocol):
    """Asks a person to approve a privileged action; expiry or shutdown is a denial."""

    async def request(
        self,
        *,
        tool: str,
        arguments: dict[str, Any],
        actor: str,
        reason: str,
        ttl_seconds: float,
        conversation: str | None = None,
    ) -> ApprovalDecision: ...
