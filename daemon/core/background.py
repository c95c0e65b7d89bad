"""The one owner of background tasks: spawn into a set, keep the reference, log failures, drain.

asyncio keeps only a weak reference to a task, so a task nobody holds can vanish mid-flight, and
an exception nobody retrieves surfaces only as "Task exception was never retrieved" at garbage
collection. A component that starts work it does not await spawns it here instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from functools import partial
from typing import Any, TypeVar

__all__ = ["SETTLE_SECONDS", "BackgroundTasks"]

log = logging.getLogger(__name__)
T = TypeVar("T")
SETTLE_SECONDS = 5.0  # after cancelling: time for the tasks' own cleanup (e.g. "interrupted")


class BackgroundTasks:
    """Tasks one component started and owns; ``len()`` is how many are running."""

    def __init__(self, owner: str) -> None:
        self._owner = owner
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def __bool__(self) -> bool:
        return bool(self._tasks)

    def spawn(
        self, work: Coroutine[Any, Any, T], name: str, *, awaited: bool = False
    ) -> asyncio.Task[T]:
        """Run ``work`` as a task named ``name``; its failure is logged with that name unless
        ``awaited`` (a caller awaits the task and handles what it raises)."""
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(partial(self._done, awaited=awaited))
        return task

    def _done(self, task: asyncio.Task[Any], *, awaited: bool) -> None:
        self._tasks.discard(task)
        if awaited or task.cancelled():
            return
        if (exc := task.exception()) is not None:
            log.error("%s: %s failed", self._owner, task.get_name(), exc_info=exc)

    async def wait_idle(self) -> None:
        """Wait until no task is running, including tasks spawned meanwhile."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def drain(self, timeout: float, settle: float = SETTLE_SECONDS) -> int:
        """Wait up to ``timeout`` for the tasks, cancel the rest and give them up to ``settle``
        seconds to finish their cleanup; returns how many were cancelled."""
        if not self._tasks:
            return 0
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=settle)
        return len(pending)

    async def cancel(self) -> None:
        """Cancel every task now and wait for them to finish (long-lived loops at stop)."""
        await self.drain(timeout=0, settle=SETTLE_SECONDS)
