"""Collects what a watcher emits and waits (polling, with a timeout) for what a test expects;
drives a watcher's pauses by hand (`SteppedSleep`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from daemon.core.alerts import Observation
from daemon.watchers.base import Watcher


class Recorder:
    """An ``emit`` callback that keeps every observation in order."""

    def __init__(self) -> None:
        self.seen: list[Observation] = []

    def __call__(self, observation: Observation) -> None:
        self.seen.append(observation)

    def of(self, metric: str, **labels: str) -> list[Observation]:
        """Observations of ``metric`` whose labels include ``labels``."""
        return [
            o
            for o in self.seen
            if o.metric == metric and all(o.labels.get(k) == v for k, v in labels.items())
        ]

    async def wait_for(
        self,
        metric: str,
        check: Callable[[Observation], bool] = lambda o: True,
        *,
        after: int = 0,
        timeout: float = 20.0,
        **labels: str,
    ) -> Observation:
        """The first observation at index >= ``after`` that matches; fail after ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for observation in self.seen[after:]:
                if (
                    observation.metric == metric
                    and all(observation.labels.get(k) == v for k, v in labels.items())
                    and check(observation)
                ):
                    return observation
            if loop.time() > deadline:
                recent = [(o.metric, o.value, o.text, dict(o.labels)) for o in self.seen[-15:]]
                raise AssertionError(f"no matching {metric} {labels} in {timeout}s; last: {recent}")
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running(watcher: Watcher, recorder: Recorder) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``watcher`` in a task for the duration of the block, then cancel it."""
    task = asyncio.create_task(watcher.run(recorder))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(condition: Callable[[], bool], what: str, *, timeout: float = 20.0) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if condition():
            return
        if loop.time() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.01)


class SteppedSleep:
    """An injected sleep: records each pause asked for and ends it only when told to."""

    def __init__(self) -> None:
        self.asked: list[float] = []
        self._pending: asyncio.Future[None] | None = None
        self._changed = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        self.asked.append(seconds)
        self._pending = asyncio.get_running_loop().create_future()
        self._changed.set()
        try:
            await self._pending
        finally:
            self._pending = None

    async def paused(self, count: int = 1, *, timeout: float = 20.0) -> None:
        """Wait until the watcher has asked for ``count`` pauses in all."""
        async with asyncio.timeout(timeout):
            while len(self.asked) < count:
                self._changed.clear()
                await self._changed.wait()

    async def step(self, *, timeout: float = 20.0) -> None:
        """End the pause under way (waiting for one to begin): the next poll runs now."""
        async with asyncio.timeout(timeout):
            while self._pending is None or self._pending.done():  # done: cut short by a wake
                self._changed.clear()
                await self._changed.wait()
        self._pending.set_result(None)
