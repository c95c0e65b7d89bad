"""The watcher contract: a long-running coroutine that emits Observations.

A watcher never dies silently: when it fails to read its target it emits a ``watcher_error``
observation (value 1, the reason as text) and keeps going; value 0 once it works again. The
built-in WatcherFailing rule turns that into a meta-alert.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from daemon.core.alerts import Observation
from daemon.core.clock import Clock

Emit = Callable[[Observation], None]


class Watcher(Protocol):
    """Runs until cancelled, handing each reading to ``emit`` (non-blocking, never raises)."""

    name: str

    async def run(self, emit: Emit) -> None: ...


class ErrorReporter:
    """Emits watcher_error only when the failing/ok state changes (no storm of repeats)."""

    def __init__(self, watcher: str, clock: Clock, emit: Emit) -> None:
        self._watcher = watcher
        self._clock = clock
        self._emit = emit
        self.failing: dict[str, str] = {}  # target ("" = the watcher itself) -> reason

    def failed(self, reason: str, *, target: str = "") -> None:
        if self.failing.get(target) == reason:
            return
        self.failing[target] = reason
        self._emit(self._observation(1.0, f"{target}: {reason}" if target else reason, target))

    def ok(self, *, target: str = "") -> None:
        if self.failing.pop(target, None) is None:
            return
        self._emit(self._observation(0.0, "", target))

    def _observation(self, value: float, text: str, target: str) -> Observation:
        labels = {"watcher": self._watcher}
        if target:
            labels["target"] = target
        return Observation(
            source=self._watcher,
            metric="watcher_error",
            at=self._clock.now(),
            value=value,
            text=text,
            labels=labels,
        )
