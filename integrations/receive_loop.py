"""The background receive loop of a polling channel (Telegram getUpdates, Matrix /sync) and
the health it implies: started with a bounded wait, "up" only while polls keep succeeding; polls
retried with a doubling backoff (de-duplication and per-item retry: :mod:`integrations.inbound`)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Literal, TypeVar

from integrations.base import ChannelHealth

State = Literal["up", "down", "starting", "stopped"]
T = TypeVar("T")


class ReceiveLoop:
    """Owns the loop task, its state and detail, and the time of the last successful poll."""

    def __init__(self, what: str, silence_limit: float, *, call: str | None = None) -> None:
        self._what = what  # the loop, e.g. "sync" or "poll", as named in health details
        self._call = call or what  # the request it repeats, e.g. "getUpdates"
        self._silence_limit = silence_limit
        self.state: State = "stopped"
        self.detail = ""
        self._last_ok: float | None = None
        self._settled = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None

    @property
    def up(self) -> bool:
        return self.state == "up"

    def set(self, state: State, detail: str) -> None:
        self.state, self.detail = state, detail

    def succeeded(self, detail: str) -> None:
        """A poll worked: the channel is up, and start() may return."""
        self._last_ok = time.monotonic()
        self.set("up", detail)
        self._settled.set()

    def failed(self, detail: str) -> None:
        """A poll failed: the channel is down (the loop retries), and start() may return."""
        self.set("down", detail)
        self._settled.set()

    async def launch(
        self, loop: Coroutine[Any, Any, None], *, name: str, detail: str, start_timeout: float
    ) -> None:
        """Start the loop; return at its first success or failure, or after ``start_timeout``."""
        self._settled.clear()
        self.set("starting", detail)
        self._task = asyncio.create_task(loop, name=name)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._settled.wait(), start_timeout)

    @staticmethod
    async def poll_forever(
        poll: Callable[[], Awaitable[T]],
        handle: Callable[[T], Awaitable[bool]],
        failed: Callable[[Exception, float], float],
        *,
        backoff: tuple[float, float],
    ) -> None:
        """Poll and handle until cancelled; every failure is retried.

        A poll that raises waits ``failed(exc, backoff)`` seconds (``failed`` records why and
        may wait longer, e.g. a rate limit), the backoff doubling up to its maximum; a batch
        ``handle`` could not finish (False: the platform hands it over again) waits the initial
        backoff. A successful poll resets the backoff.
        """
        initial, maximum = backoff
        delay = initial
        while True:
            try:
                batch = await poll()
            except Exception as exc:  # the loop must survive everything
                wait = failed(exc, delay)
                delay = min(delay * 2, maximum)
                await asyncio.sleep(wait)
                continue
            delay = initial
            if not await handle(batch):
                await asyncio.sleep(delay)

    async def cancel(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])

    def health(self) -> ChannelHealth:
        """Down when the loop died or has not succeeded for longer than the silence limit."""
        task = self._task
        if task is not None and task.done():
            reason = "cancelled" if task.cancelled() else repr(task.exception())
            return ChannelHealth(state="down", detail=f"{self._what} loop stopped: {reason}")
        if self.state == "up" and self._last_ok is not None:
            silent = time.monotonic() - self._last_ok
            if silent > self._silence_limit:
                detail = f"no successful {self._call} for {silent:.0f} s"
                return ChannelHealth(state="down", detail=detail)
        return ChannelHealth(state=self.state, detail=self.detail)
