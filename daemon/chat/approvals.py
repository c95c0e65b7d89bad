"""Approval requests for privileged actions: asked in chat, answered by a person; expiry denies."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from daemon.core.clock import Clock
from daemon.core.messages import ApprovalDecision, ApprovalRequest

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Pending:
    request: ApprovalRequest
    future: asyncio.Future[ApprovalDecision] = field(repr=False)


Listener = Callable[[ApprovalRequest], None]
ResolvedListener = Callable[[ApprovalRequest, "ApprovalDecision"], None]


class ApprovalBroker:
    """Holds open approval requests; channels show them and report answers."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._pending: dict[str, _Pending] = {}
        self._listeners: list[Listener] = []
        self._resolved_listeners: list[ResolvedListener] = []

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` for every new request; returns an unsubscribe function."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def on_resolved(self, listener: ResolvedListener) -> None:
        """Call ``listener`` with each request once it is decided (approved, denied, expired)."""
        self._resolved_listeners.append(listener)

    async def request(
        self,
        *,
        tool: str,
        arguments: dict[str, Any],
        actor: str,
        reason: str,
        ttl_seconds: float,
        conversation: str | None = None,
    ) -> ApprovalDecision:
        """Ask for approval and wait; expiry (or shutdown) is a denial."""
        request = ApprovalRequest(
            id=secrets.token_hex(3),
            tool=tool,
            arguments=arguments,
            actor=actor,
            reason=reason,
            expires_at=self._clock.now() + timedelta(seconds=ttl_seconds),
            conversation=conversation,
        )
        future: asyncio.Future[ApprovalDecision] = asyncio.get_running_loop().create_future()
        self._pending[request.id] = _Pending(request, future)
        log.info("approval %s requested for %s by %s", request.id, tool, actor)
        for listener in list(self._listeners):
            try:
                listener(request)
            except Exception:  # noqa: BLE001 - a broken listener must not block the request
                log.exception("approval listener failed")
        try:
            decision = await asyncio.wait_for(asyncio.shield(future), timeout=ttl_seconds)
        except TimeoutError:
            decision = ApprovalDecision(
                approved=False, by="timeout", note="no answer before expiry"
            )
        finally:
            self._pending.pop(request.id, None)
        for resolved in list(self._resolved_listeners):
            try:
                resolved(request, decision)
            except Exception:  # noqa: BLE001 - a broken listener must not change the decision
                log.exception("approval resolved-listener failed")
        return decision

    def resolve(self, request_id: str, *, approved: bool, by: str, note: str = "") -> bool:
        """Answer a request; False when it is unknown or already answered/expired."""
        pending = self._pending.get(request_id)
        if pending is None or pending.future.done():
            return False
        pending.future.set_result(ApprovalDecision(approved=approved, by=by, note=note))
        log.info("approval %s %s by %s", request_id, "granted" if approved else "denied", by)
        return True

    def pending(self) -> list[ApprovalRequest]:
        return [item.request for item in self._pending.values()]

    def deny_all(self, by: str) -> int:
        """Deny every open request (used at shutdown)."""
        count = 0
        for request_id in list(self._pending):
            count += self.resolve(request_id, approved=False, by=by, note="shutting down")
        return count
