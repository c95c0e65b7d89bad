"""Runs long-lived components, restarting a crashed one with exponential backoff."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

from daemon.core.clock import Clock

log = logging.getLogger(__name__)

State = Literal["starting", "running", "backoff", "stopped", "failed", "off"]
STABLE_AFTER_SECONDS = 60.0


class EventSink(Protocol):
    """Where crash and restart records go (memory.components.ComponentEventRepo)."""

    async def record(self, component: str, event: str, detail: str = "") -> int: ...


@dataclass(slots=True)
class ComponentHealth:
    """What `nightshift status` shows for one component."""

    name: str
    state: State = "starting"
    restarts: int = 0
    last_error: str | None = None
    last_error_at: datetime | None = None
    since: datetime | None = None
    detail: str = ""
    _backoff: float = field(default=0.0, repr=False)

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "state": self.state,
            "restarts": self.restarts,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at.isoformat() if self.last_error_at else None,
            "since": self.since.isoformat() if self.since else None,
            "detail": self.detail,
        }


Runner = Callable[[], Awaitable[None]]


class Supervisor:
    """Owns the long-lived tasks of the process; a crash in one never stops the others."""

    def __init__(
        self,
        clock: Clock,
        *,
        events: EventSink | None = None,
        initial_backoff: float = 1.0,
        max_backoff: float = 300.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._clock = clock
        self._events = events
        self._initial = initial_backoff
        self._max = max_backoff
        self._sleep = sleep
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.health: dict[str, ComponentHealth] = {}

    def start(self, name: str, runner: Runner, *, detail: str = "") -> None:
        """Run ``runner`` as component ``name`` until stop(); restart it if it raises."""
        if name in self._tasks:
            raise ValueError(f"component {name!r} already started")
        self.health[name] = ComponentHealth(name=name, detail=detail, since=self._clock.now())
        self._tasks[name] = asyncio.create_task(self._keep_running(name, runner), name=name)

    def mark(self, name: str, state: State, detail: str | None = None) -> None:
        """Record a state for a component that is not a task (e.g. the agent being off)."""
        health = self.health.setdefault(name, ComponentHealth(name=name))
        health.state = state
        health.since = self._clock.now()
        if detail is not None:
            health.detail = detail

    async def _keep_running(self, name: str, runner: Runner) -> None:
        health = self.health[name]
        while True:
            started = self._clock.monotonic()
            health.state = "running"
            health.since = self._clock.now()
            try:
                await runner()
            except asyncio.CancelledError:
                health.state = "stopped"
                raise
            except Exception as exc:  # noqa: BLE001 - a component crash must not end the process
                reason = f"{type(exc).__name__}: {exc}"
                log.error("component %s crashed: %s", name, reason, exc_info=exc)
                await self._record(name, "crashed", reason)
                health.last_error = reason
                health.last_error_at = self._clock.now()
            else:
                log.warning("component %s returned; restarting it", name)
                await self._record(name, "exited", "returned without error")
            if self._clock.monotonic() - started >= STABLE_AFTER_SECONDS:
                health._backoff = 0.0
            health._backoff = min(self._max, health._backoff * 2 or self._initial)
            health.state = "backoff"
            health.restarts += 1
            await self._sleep(health._backoff)
            await self._record(name, "restarted", f"after {health._backoff:.1f}s backoff")

    async def _record(self, name: str, event: str, detail: str) -> None:
        if self._events is None:
            return
        try:
            await self._events.record(name, event, detail)
        except Exception:  # noqa: BLE001 - recording must never take the supervisor down
            log.exception("could not record %s event for %s", event, name)

    async def stop(self, timeout: float = 5.0) -> None:
        """Cancel every component and wait for them to finish (up to ``timeout``)."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*tasks, return_exceptions=True), timeout=timeout
                )
        for health in self.health.values():
            if health.state not in ("failed", "off"):
                health.state = "stopped"
        self._tasks.clear()

    def snapshot(self) -> list[dict[str, object]]:
        return [health.as_dict() for health in self.health.values()]
