"""Bounded growth, run by the runtime: hourly, sample the database size and report how full the
state disk and the ``[memory] max_db_mb`` cap are (the built-in NightshiftStorageFull alert);
daily (first ten minutes after start), prune past the retention windows and give the freed
pages back to the file system."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from daemon.core.alerts import Observation
from daemon.core.clock import Clock
from memory.retention import RetentionRepo, disk_usage
from memory.settings import MemorySettings

log = logging.getLogger(__name__)

FIRST_PRUNE_SECONDS = 600.0  # after start: let the daemon settle first
PRUNE_EVERY_SECONDS = 86_400.0
SAMPLE_EVERY_SECONDS = 3_600.0


class Housekeeping:
    """Owns the daily prune and the hourly size sample; ``run`` is supervised."""

    name = "housekeeping"

    def __init__(
        self,
        repo: RetentionRepo,
        settings: Callable[[], MemorySettings],
        *,
        state_dir: Path,
        clock: Clock,
        emit: Callable[[Observation], None],
    ) -> None:
        self.repo = repo
        self._settings = settings
        self._state_dir = state_dir
        self._clock = clock
        self._emit = emit
        self.last_prune: dict[str, int] = {}
        self.last_prune_at: str | None = None

    async def run(self) -> None:
        """Sample and check hourly, prune daily, until cancelled."""
        prune_in = FIRST_PRUNE_SECONDS
        while True:
            await self.sample()
            wait = min(prune_in, SAMPLE_EVERY_SECONDS)
            await asyncio.sleep(wait)
            prune_in -= wait
            if prune_in <= 0:
                await self.prune()
                prune_in = PRUNE_EVERY_SECONDS

    async def prune(self) -> dict[str, int]:
        """Delete what has outlived its window, then vacuum; returns rows deleted per kind."""
        settings = self._settings()
        started = self._clock.monotonic()
        removed = await self.repo.prune(settings.windows(), batch=settings.prune_batch)
        freed = await self.repo.vacuum()
        self.last_prune, self.last_prune_at = removed, self._clock.now().isoformat()
        if removed or freed:
            log.info(
                "retention: deleted %s; %.1f MB given back to the file system (%.1fs)",
                ", ".join(f"{n} {kind}" for kind, n in removed.items()) or "nothing",
                freed / 1e6,
                self._clock.monotonic() - started,
            )
        return removed

    async def sample(self) -> None:
        """Record the size and report how full the disk and the cap are."""
        await self.repo.sample()
        size = await self.repo.size()
        now, total_db = self._clock.now(), size.file_bytes + size.wal_bytes
        used, total = await asyncio.to_thread(disk_usage, self._state_dir)
        disk = f"{used / 1e9:.1f} of {total / 1e9:.1f} GB used on {self._state_dir}"
        readings = [("state disk", 100.0 * used / total if total else 0.0, disk)]
        cap = self._settings().max_db_mb
        if cap:
            text = f"the database is {total_db / 1e6:.0f} MB of max_db_mb {cap:g}"
            readings.append(("database cap", 100.0 * total_db / (cap * 1e6), text))
        for what, percent, text in readings:
            self._emit(
                Observation(
                    source="housekeeping",
                    metric="storage_percent",
                    at=now,
                    value=round(percent, 2),
                    text=text,
                    labels={"what": what},
                )
            )
