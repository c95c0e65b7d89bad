"""Concurrency slots that are handed out by priority, not arrival.

Which sub-agent starts next decides how long a run takes: with 300 subtasks over 50 slots, a
long subtask that starts last keeps the whole run waiting after every other slot is idle. The
swarm asks for a slot with a key (lower goes first, ties in arrival order): a parent taking its
slot back after its children, then a stalled subtask's retry or a resumed one, then new
subtasks, longest expected first.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import AsyncIterator

__all__ = ["PrioritySlots"]

Key = tuple[float, ...]


class PrioritySlots:
    """A counting semaphore whose waiters are let in lowest key first, then first come.

    The limit can change at any time (:meth:`resize`): a higher one lets waiters in at once, a
    lower one takes hold as holders release (nobody is stopped).
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"a slot pool needs at least one slot, not {limit}")
        self._limit = limit
        self._free = limit
        self._waiters: list[tuple[Key, int, asyncio.Future[None]]] = []
        self._arrivals = itertools.count()

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def waiting(self) -> int:
        """Callers waiting for a slot now."""
        return sum(not future.done() for _, _, future in self._waiters)

    @property
    def held(self) -> int:
        """Slots taken now."""
        return self._limit - self._free

    async def acquire(self, key: Key = ()) -> None:
        """Wait for a slot; callers with a lower ``key`` are let in first."""
        if self._free > 0:  # free slots and live waiters never coexist (see _wake)
            self._free -= 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (key, next(self._arrivals), future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():  # granted as it was cancelled
                self.release()
            raise

    def release(self) -> None:
        """Give a slot back; the first waiter by key takes it."""
        self._free += 1
        self._wake()

    def resize(self, limit: int) -> None:
        """A new limit: more slots are handed out now, fewer take hold as holders release."""
        if limit < 1:
            raise ValueError(f"a slot pool needs at least one slot, not {limit}")
        self._free += limit - self._limit
        self._limit = limit
        self._wake()

    @contextlib.asynccontextmanager
    async def slot(self, key: Key = ()) -> AsyncIterator[None]:
        """Hold a slot for the block."""
        await self.acquire(key)
        try:
            yield
        finally:
            self.release()

    def _wake(self) -> None:
        while self._free > 0 and self._waiters:
            _, _, future = heapq.heappop(self._waiters)
            if future.done():  # its caller was cancelled while waiting
                continue
            self._free -= 1
            future.set_result(None)
