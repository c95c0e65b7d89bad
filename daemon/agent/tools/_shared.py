"""Tools that serve many callers at once (sub-agents fan out): shared samples and per-tool caps.

:class:`SharedSample` lets concurrent callers share one reading: callers within the freshness
window get the recent reading, callers during a reading await that one (single flight), and the
blocking read runs in a worker thread; no lock is held across callers. :class:`ToolGate` caps
how many calls of one tool that can hurt the host (disk walks, process listings, log scans,
commands) run at once; the rest wait their turn (the wait shows in the step's duration and in
the log), they never fail for it.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from daemon.agent.tools.base import ToolContext
    from daemon.core.abc import Clock

__all__ = ["TOOL_DEADLINE", "SharedSample", "ToolGate"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# The executor's timeout of the running tool call; a wait for a slot is not counted in it.
TOOL_DEADLINE: contextvars.ContextVar[asyncio.Timeout | None] = contextvars.ContextVar(
    "TOOL_DEADLINE", default=None
)


@dataclass(frozen=True, slots=True)
class _Taken(Generic[T]):
    value: T
    at: float  # the clock's monotonic time when the reading finished
    clock: Clock


class SharedSample(Generic[T]):
    """One blocking reading shared by every caller within ``fresh_seconds`` of it."""

    def __init__(self, read: Callable[[], T], *, fresh_seconds: float) -> None:
        self._read = read
        self.fresh_seconds = fresh_seconds
        self._last: _Taken[T] | None = None
        self._flights: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, asyncio.Task[_Taken[T]]
        ] = weakref.WeakKeyDictionary()
        self.readings = 0  # how many readings were taken (for status and benchmarks)

    def _fresh(self, clock: Clock) -> T | None:
        last = self._last
        if last is None or last.clock is not clock:
            return None
        age = clock.monotonic() - last.at
        return last.value if 0 <= age < self.fresh_seconds else None

    async def get(self, clock: Clock) -> T:
        """A reading at most ``fresh_seconds`` old by ``clock``: the recent one, the one being
        taken, or a new one. A caller cancelled while waiting leaves the reading to the rest."""
        fresh = self._fresh(clock)
        if fresh is not None:
            return fresh
        loop = asyncio.get_running_loop()
        flight = self._flights.get(loop)
        if flight is None or flight.done():
            flight = loop.create_task(self._take(clock))
            self._flights[loop] = flight
        return (await asyncio.shield(flight)).value

    async def _take(self, clock: Clock) -> _Taken[T]:
        try:
            self.readings += 1
            value = await asyncio.to_thread(self._read)
            taken = _Taken(value, clock.monotonic(), clock)
            self._last = taken
            return taken
        finally:
            self._flights.pop(asyncio.get_running_loop(), None)

    def forget(self) -> None:
        """Drop the recent reading (the next caller takes a new one)."""
        self._last = None


class ToolGate:
    """At most ``[agent] heavy_tool_concurrency`` calls of one tool at a time; others wait."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._sems: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[int, asyncio.Semaphore]
        ] = weakref.WeakKeyDictionary()
        self.running = 0
        self.waiting = 0
        self.peak = 0  # the most calls seen running at once (for tests and benchmarks)

    def _semaphore(self, limit: int) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        found = self._sems.get(loop)
        if found is None or found[0] != limit:  # a changed limit applies to new callers
            found = (limit, asyncio.Semaphore(limit))
            self._sems[loop] = found
        return found[1]

    @asynccontextmanager
    async def slot(self, ctx: ToolContext) -> AsyncIterator[None]:
        """Hold one of the tool's slots for the body; wait (logged) while all are taken."""
        limit = ctx.settings.agent.heavy_tool_concurrency
        sem = self._semaphore(limit)
        if sem.locked():
            started = ctx.clock.monotonic()
            self.waiting += 1
            deadline = TOOL_DEADLINE.get()
            left = _lift(deadline)
            try:
                await sem.acquire()
            finally:
                self.waiting -= 1
                if deadline is not None and left is not None:
                    deadline.reschedule(asyncio.get_running_loop().time() + left)
            log.info(
                "%s for %s waited %.2fs for one of its %d slots",
                self.name,
                ctx.actor,
                ctx.clock.monotonic() - started,
                limit,
            )
        else:
            await sem.acquire()
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            yield
        finally:
            self.running -= 1
            sem.release()


def _lift(deadline: asyncio.Timeout | None) -> float | None:
    """Suspend ``deadline``; return the seconds it had left (None: it had no deadline)."""
    when = deadline.when() if deadline is not None else None
    if deadline is None or when is None:
        return None
    deadline.reschedule(None)
    return max(0.0, when - asyncio.get_running_loop().time())
