"""Samples host metrics (psutil) on an interval and keeps a short history in memory."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from daemon.agent.tools.host import HostSample, sample_host
from daemon.config import HostWatcherSettings

log = logging.getLogger(__name__)


class HostMetricsWatcher:
    """The default watcher: cheap psutil readings every ``interval_seconds``."""

    name = "watcher.host"

    def __init__(self, settings: HostWatcherSettings) -> None:
        self._settings = settings
        self.history: deque[HostSample] = deque(maxlen=settings.history)

    @property
    def latest(self) -> HostSample | None:
        return self.history[-1] if self.history else None

    async def run(self) -> None:
        """Sample forever; blocking psutil calls run in a worker thread."""
        while True:
            sample = await asyncio.to_thread(sample_host)
            self.history.append(sample)
            _export(sample)
            await asyncio.sleep(self._settings.interval_seconds)

    def summary(self) -> dict[str, Any]:
        sample = self.latest
        if sample is None:
            return {"samples": 0}
        return {
            "samples": len(self.history),
            "cpu_percent": sample.cpu_percent,
            "memory_percent": sample.memory_percent,
            "load1": sample.load1,
        }


def _export(sample: HostSample) -> None:
    from daemon import metrics

    metrics.HOST_CPU.set(sample.cpu_percent)
    metrics.HOST_MEMORY.set(sample.memory_percent)
    metrics.HOST_LOAD1.set(sample.load1)
