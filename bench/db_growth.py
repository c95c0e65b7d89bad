"""Database size over a simulated month at a busy event rate, with retention on.

A real SQLite file and the real repositories on a ManualClock: each simulated day writes the
busy workload (``tests/memory/workload.py``: alert events at ``--events-per-minute``, incidents
with timelines and postmortems, notifications, agent runs, audit, model calls, conversations),
then runs the daily prune and incremental vacuum exactly as the daemon's housekeeping does.
Printed per day: file size, rows of raw alert events, MB written that day and the prune's time;
then the growth per day before and after the retention window (target: flat after it).

The real busy config grew +371 KB/min (~0.5 GB/day) of mostly raw alert events; the default
rate here is a tenth of that (``--events-per-minute 60``) so the month takes minutes, and the
size scales with it.

Usage: python -m bench.db_growth [--days 30] [--events-per-minute 60] [--alert-events-days 14]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from daemon.core.clock import ManualClock
from memory.retention import RetentionRepo
from memory.settings import MemorySettings
from memory.store import SqliteStore
from tests.memory.workload import Rates, Workload


async def main(days: int, events_per_minute: float, alert_events_days: float) -> None:
    settings = MemorySettings(alert_events_days=alert_events_days)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "nightshift.db"
        store = await SqliteStore.open(path)
        clock = ManualClock()
        workload = Workload(store, clock, Rates(events_per_minute=events_per_minute))
        retention = RetentionRepo(store, clock)
        sizes: list[float] = []
        windows = settings.windows()
        print(f"{days} days at {events_per_minute:g} alert events/min; windows {windows}")
        print(f"{'day':>4} {'file MB':>9} {'alert_events':>13} {'written s':>10} {'prune s':>8}")
        for day in range(1, days + 1):
            started = time.perf_counter()
            await workload.hour(24)
            written = time.perf_counter() - started
            started = time.perf_counter()
            await retention.prune(settings.windows(), batch=settings.prune_batch)
            await retention.vacuum()
            pruned = time.perf_counter() - started
            await retention.sample()
            size = await retention.size()
            counts = await retention.counts()
            sizes.append(size.file_bytes / 1e6)
            print(
                f"{day:>4} {sizes[-1]:>9.1f} {counts['alert_events']:>13,} "
                f"{written:>10.1f} {pruned:>8.2f}"
            )
        await store.close()
    window = int(alert_events_days)
    before = [b - a for a, b in zip(sizes, sizes[1:window], strict=False)]
    after = [b - a for a, b in zip(sizes[window:], sizes[window + 1 :], strict=False)]
    if before:
        print(f"growth in the first {window} days: {sum(before) / len(before):.1f} MB/day")
    if after:
        print(
            f"growth after the {window}-day window: {sum(after) / len(after):+.2f} MB/day "
            f"(size {min(sizes[window:]):.1f}–{max(sizes[window:]):.1f} MB)"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--events-per-minute", type=float, default=60.0)
    parser.add_argument("--alert-events-days", type=float, default=14.0)
    args = parser.parse_args()
    asyncio.run(main(args.days, args.events_per_minute, args.alert_events_days))
