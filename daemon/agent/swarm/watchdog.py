"""The swarm's watchdog: it cancels an attempt whose model request makes no progress (no streamed
chunk, no reply) for ``stall_seconds``, or that runs past its deadline.

The stall clock runs only while a model request is in flight: waits of our own (the store, the
retry backoff) are not the model stalling, and tools have their own timeout (approvals their
own TTL). One loop watches every running attempt, and only while there is one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from daemon.agent.swarm.child import Outcome

__all__ = ["Watchdog", "Worker"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Worker:
    """One running attempt, as the watchdog sees it."""

    task_id: int
    job: asyncio.Task[Outcome]
    last: float
    deadline: float
    in_model: bool = False  # a model request is in flight: the stall clock runs
    ended: str | None = None  # "stalled", "deadline" or "cancelled" once stopped from outside
    why: str = ""

    def progress(self, event: str) -> None:
        """A model request started, streamed a chunk ("chunk") or ended ("end")."""
        self.last = asyncio.get_running_loop().time()
        self.in_model = event != "end"


class Watchdog:
    """Watches running attempts; counts the stalls it caught and how late after the last
    progress it caught them."""

    def __init__(self, stall_seconds: Callable[[], float]) -> None:
        self._stall_seconds = stall_seconds
        self.workers: dict[int, Worker] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self.stalls = 0  # attempts stopped for lack of progress
        self.stall_latency: list[float] = []  # seconds from last progress to the cancel

    def watch(self, worker: Worker) -> None:
        self.workers[worker.task_id] = worker
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.create_task(self._watch())

    def forget(self, task_id: int) -> None:
        self.workers.pop(task_id, None)

    async def stop(self, task_id: int, why: str) -> None:
        """Cancel a task's running attempt and wait until it has stopped."""
        worker = self.workers.get(task_id)
        if worker is None:
            return
        worker.ended, worker.why = "cancelled", why
        worker.job.cancel()
        with contextlib.suppress(BaseException):
            await worker.job

    async def close(self) -> None:
        """Cancel the attempts still running and stop watching."""
        for worker in list(self.workers.values()):
            worker.job.cancel()
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task

    async def _watch(self) -> None:
        limit = self._stall_seconds()
        tick = min(max(limit / 4, 0.01), 1.0)
        loop = asyncio.get_running_loop()
        while self.workers:
            await asyncio.sleep(tick)
            now = loop.time()
            for worker in list(self.workers.values()):
                if worker.ended is not None or worker.job.done():
                    continue
                if now >= worker.deadline:
                    worker.ended = "deadline"
                    worker.why = "deadline passed before a result"
                elif worker.in_model and now - worker.last > limit:
                    worker.ended = "stalled"
                    worker.why = f"stalled: no progress for {now - worker.last:.1f} s"
                    self.stalls += 1
                    self.stall_latency.append(now - worker.last)
                else:
                    continue
                log.warning("sub-agent %d %s; cancelling it", worker.task_id, worker.why)
                worker.job.cancel()
