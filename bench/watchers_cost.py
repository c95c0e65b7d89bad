"""CPU cost of the host watcher (default 30 s interval) and of 20 process watchers (10 s).

Runs the real watchers in this process and reads the process's CPU time (all threads). By
default it samples fast (host every 0.25 s, process watchers every 0.25 s) and scales the cost
per cycle to the default intervals; ``--real`` instead runs one real minute at the default
intervals. Usage: python bench/watchers_cost.py [--seconds 10] [--real]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil

from daemon.core.alerts import Observation
from daemon.watchers.host import HostMetricsWatcher
from daemon.watchers.process import ProcessWatcher, ProcessWatchSettings
from daemon.watchers.settings import HostWatcherSettings

HOST_INTERVAL = 30.0
PROCESS_INTERVAL = 10.0
PROCESS_WATCHERS = 20


async def measure(
    runners: list[Callable[[Callable[[Observation], None]], Coroutine[Any, Any, None]]],
    cycle_metric: str,
    seconds: float,
) -> tuple[float, int]:
    """CPU seconds used and cycles completed while ``runners`` run for ``seconds``."""
    cycles = 0

    def emit(observation: Observation) -> None:
        nonlocal cycles
        cycles += observation.metric == cycle_metric

    cpu0 = time.process_time()
    tasks = [asyncio.create_task(run(emit)) for run in runners]
    await asyncio.sleep(seconds)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return time.process_time() - cpu0, cycles


async def main(seconds: float, real: bool) -> None:
    host_interval = HOST_INTERVAL if real else 0.25
    process_interval = PROCESS_INTERVAL if real else 0.25
    seconds = 60.0 if real else seconds
    print(f"host: {psutil.cpu_count()} CPUs, {len(psutil.pids())} processes")
    print(f"mode: {'one real minute at default intervals' if real else 'fast, scaled'}")

    idle_cpu, _ = await measure([], "", min(seconds, 5.0))
    print(f"idle loop: {idle_cpu:.4f} CPU s over {min(seconds, 5.0):.0f} s (not subtracted)")

    settings = HostWatcherSettings.model_construct(
        **{**HostWatcherSettings().model_dump(), "interval_seconds": host_interval}
    )
    host = HostMetricsWatcher(settings)
    cpu, cycles = await measure([host.run], "cpu_percent", seconds)
    per_cycle = cpu / max(cycles, 1)
    print(f"host watcher: {cycles} samples, {per_cycle * 1000:.2f} ms CPU per sample")
    if real:
        print(f"host watcher @ {HOST_INTERVAL:g} s: {cpu / seconds * 60:.4f} CPU s per minute")
    else:
        scaled = per_cycle * 60 / HOST_INTERVAL
        print(f"host watcher @ {HOST_INTERVAL:g} s: {scaled:.4f} CPU s per minute (scaled)")

    watchers = [
        ProcessWatcher(
            ProcessWatchSettings(
                name=f"p{i}",
                cmdline=f"no-such-process-{uuid.uuid4().hex}",
                interval_seconds=process_interval,
            )
        )
        for i in range(PROCESS_WATCHERS)
    ]
    cpu, scans = await measure([w.run for w in watchers], "process_up", seconds)
    per_scan = cpu / max(scans, 1)
    print(
        f"{PROCESS_WATCHERS} process watchers (cmdline regex): {scans} scans, "
        f"{per_scan * 1000:.2f} ms CPU per scan"
    )
    per_minute = cpu / seconds * 60 if real else per_scan * PROCESS_WATCHERS * 60 / PROCESS_INTERVAL
    label = "" if real else " (scaled)"
    print(
        f"{PROCESS_WATCHERS} process watchers @ {PROCESS_INTERVAL:g} s: "
        f"{per_minute:.4f} CPU s per minute{label}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each fast run")
    parser.add_argument("--real", action="store_true", help="one real minute per watcher kind")
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.real))
