"""The one polling loop every watcher runs on: poll, report a failure, pause; until cancelled.

A subclass says what one poll does (`PollingWatcher.poll`), how long to pause (``interval``) and
whether that interval counts from the poll's start (``from_start``: a steady rate, for host,
process and command checks) or from its end (a fixed pause: port and HTTP checks, the rechecks
of file and log watchers). The pause goes through an injected ``sleep`` (``asyncio.sleep`` by
default), so tests drive the loop without waiting real time; `PollingWatcher.wake` cuts the
pause short (file and log watchers wake on inotify events and poll as their fallback).

An exception out of ``poll`` never ends the loop: it becomes a ``watcher_error`` observation
through the run's `ErrorReporter` (``expected_errors`` by their own words, anything else as
``check failed: <exception>``, logged with its traceback once per new reason), and the next poll
comes after the usual pause. Cancelling ``run`` ends it after `PollingWatcher.close`.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import ClassVar

from daemon.core.alerts import Observation
from daemon.core.clock import Clock, SystemClock
from daemon.watchers.base import Emit, ErrorReporter

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


def _discard(observation: Observation) -> None:
    """The default emit: nobody is listening."""


class PollingWatcher(ABC):
    """A watcher whose `run` polls every ``interval`` seconds; see the module docstring."""

    name: str  # the supervisor's name for the task
    source: str  # the source of every observation, the ``watcher`` label of watcher_error
    from_start: ClassVar[bool] = False  # interval from the poll's start (True) or its end
    expected_errors: ClassVar[tuple[type[Exception], ...]] = ()  # reported as `reason` says
    error_target = ""  # the watcher_error ``target`` of a failed poll ("" = the watcher)

    def __init__(self, interval: float, clock: Clock | None, sleep: Sleep | None) -> None:
        self.interval = interval  # seconds between polls
        self._clock: Clock = clock or SystemClock()
        self._sleep: Sleep = sleep or asyncio.sleep
        self._woken = False
        self._pausing: asyncio.Future[None] | None = None

    @abstractmethod
    async def poll(self, emit: Emit, errors: ErrorReporter) -> None:
        """One look at the target, its readings handed to ``emit``."""

    async def open(self, emit: Emit, errors: ErrorReporter) -> None:
        """Set up what one run needs (before its first poll)."""
        return None

    async def close(self) -> None:
        """Release what the run held; called once as `run` ends, on cancel too."""
        return None

    def reason(self, exc: Exception) -> str:
        """The watcher_error text for one of ``expected_errors``."""
        return str(exc)

    def wake(self) -> None:
        """Poll now: end the current pause, or skip the next one if a poll is under way."""
        self._woken = True
        if self._pausing is not None:
            self._pausing.cancel()

    async def run(self, emit: Emit | None = None) -> None:
        """Poll, report, pause; until cancelled."""
        emit = emit or _discard
        errors = ErrorReporter(self.source, self._clock, emit)
        self._woken = False
        try:
            await self.open(emit, errors)
            while True:
                started = self._clock.monotonic()
                await self._poll(emit, errors)
                pause = self.interval
                if self.from_start:
                    pause = max(0.0, pause - (self._clock.monotonic() - started))
                await self._pause(pause)
        finally:
            await self.close()

    async def _poll(self, emit: Emit, errors: ErrorReporter) -> None:
        try:
            await self.poll(emit, errors)
        except Exception as exc:  # a watcher never dies silently
            expected = isinstance(exc, self.expected_errors)
            reason = self.reason(exc) if expected else f"check failed: {exc!r}"
            if errors.failing.get(self.error_target) != reason:
                if expected:
                    log.warning("%s: %s", self.name, reason)
                else:
                    log.error("%s: %s", self.name, reason, exc_info=exc)
            errors.failed(reason, target=self.error_target)

    async def _pause(self, seconds: float) -> None:
        if not self._woken:
            self._pausing = pausing = asyncio.ensure_future(self._sleep(seconds))
            try:
                await asyncio.wait([pausing])
            finally:
                pausing.cancel()
                self._pausing = None
            if not pausing.cancelled():
                pausing.result()  # a failing sleep is the caller's bug: let it be seen
        self._woken = False
