"""Detection latency through the real alerting path (real watchers, real SQLite file).

1. log line → alert event: a LogFileWatcher tails a temp file and feeds an AlertPipeline with
   one regex rule (no ``for``). A line matching it is appended and flushed every ~50 ms, between
   non-matching lines. Each sample line carries its own number, captured into a label
   (``capture_labels``), and the rule has ``keep_firing_for_seconds = 0``: every sample is a new
   alert that fires and then resolves, so no sample rides on an alert already firing. Measured:
   the flush of the line → the AlertPipeline's ``on_events`` callback, which runs right after
   the transaction holding the firing AlertEvent in ``alert_events`` committed.
2. metric rule → notification after ``for``: a ProcessWatcher (real /proc scans) watches a
   real child process; rule ``process_up < 1`` with ``for_seconds``; an IncidentManager with
   group_wait 0 writes the notification to the outbox. The child is killed at a random phase of
   the watcher's interval. Measured: the kill → the manager's outbox wake-up after the
   committed ``[FIRING`` outbox row, minus ``for``; split into kill → first ``process_up = 0``
   observation (the watcher's sampling delay) and the rest (rules, incidents, SQLite).

Usage: python -m bench.detection [--samples 300] [--repeats 10] [--interval 1.0] [--for 2.0]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from daemon.alerting.pipeline import AlertPipeline
from daemon.alerting.settings import RuleSettings
from daemon.core.alerts import Observation
from daemon.core.clock import SystemClock
from daemon.incidents.manager import IncidentManager
from daemon.incidents.poster import IncidentPoster
from daemon.incidents.routing import Router
from daemon.incidents.runbooks import RunbookLibrary
from daemon.incidents.settings import IncidentSettings
from daemon.watchers.logs import LogFileWatcher, LogWatchSettings
from daemon.watchers.process import ProcessWatcher, ProcessWatchSettings
from memory.alerts import AlertRepo
from memory.incidents import IncidentRepo, SilenceRepo
from memory.outbox import OutboxRepo
from memory.store import SqliteStore

NOISE = (
    'Nov 22 10:00:00 web1 nginx: 10.0.0.7 - - "GET /api/items/42 HTTP/1.1" 200 512 "-" "curl"',
    "Nov 22 10:00:00 web1 app[7]: INFO request 42 handled in 12 ms",
    "Nov 22 10:00:00 web1 sshd[9]: Accepted publickey for deploy from 10.0.0.9",
)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def figures(values: list[float]) -> str:
    """p50 / p99 / max of seconds, in milliseconds."""
    return (
        f"p50 {statistics.median(values) * 1000:.1f} ms, p99 {percentile(values, 0.99) * 1000:.1f}"
        f" ms, max {max(values) * 1000:.1f} ms"
    )


async def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.perf_counter() + timeout
    while not check():
        if time.perf_counter() > deadline:
            raise SystemExit(f"bench: {what} did not happen within {timeout:g} s")
        await asyncio.sleep(0.001)


def events_reach(pipeline: AlertPipeline, count: int) -> Callable[[], bool]:
    return lambda: pipeline.events >= count


def grows(items: list[tuple[float, int]], length: int) -> Callable[[], bool]:
    return lambda: len(items) > length


def seen_up(ups: list[tuple[float, float]], since: float) -> Callable[[], bool]:
    return lambda: any(at > since and up == 1.0 for at, up in ups)


# -- 1. log line → alert event ---------------------------------------------------------------


async def log_to_event(work: Path, samples: int) -> None:
    clock = SystemClock()
    store = await SqliteStore.open(work / "log.db")
    path = work / "app.log"
    path.write_bytes(b"")
    rule = RuleSettings(
        name="AppError",
        metric="log_line",
        where={"log": "app"},
        match=r"ERROR bench sample (?P<sample>\d+)",
        capture_labels=["sample"],
        keep_firing_for_seconds=0,
        summary="sample {sample}",
    )
    committed: list[tuple[float, int]] = []  # (when on_events ran, events announced so far)
    pipeline: AlertPipeline

    def on_events() -> None:
        committed.append((time.perf_counter(), pipeline.events))

    pipeline = AlertPipeline([rule], AlertRepo(store), clock, on_events=on_events)
    watcher = LogFileWatcher(LogWatchSettings(name="app", path=str(path)), clock)
    tasks = [asyncio.create_task(pipeline.run()), asyncio.create_task(watcher.run(pipeline.emit))]
    await watcher.ready.wait()
    rng = random.Random(5)
    delays: list[float] = []
    try:
        with path.open("a") as handle:
            for n in range(samples):
                # the previous sample fired and resolved: the next callback is this sample's
                await wait_until(events_reach(pipeline, 2 * n), 10, f"sample {n - 1}")
                gap = rng.uniform(0.04, 0.06)
                for _ in range(rng.randrange(4)):  # 0-3 lines no rule matches, then the sample
                    await asyncio.sleep(gap / 4)
                    handle.write(rng.choice(NOISE) + "\n")
                    handle.flush()
                await asyncio.sleep(gap / 4)
                seen = len(committed)
                handle.write(f"Nov 22 10:00:00 web1 app[7]: ERROR bench sample {n}\n")
                handle.flush()
                written = time.perf_counter()
                await wait_until(grows(committed, seen), 10, f"alert of sample {n}")
                delays.append(committed[seen][0] - written)
        async with store.read() as db:
            rows = list(
                await db.execute_fetchall(
                    "SELECT status, count(*) FROM alert_events GROUP BY status ORDER BY status"
                )
            )
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await store.close()
    stored = {row[0]: row[1] for row in rows}
    print(
        f"log line → AlertEvent committed ({samples} samples, one new alert each, ~50 ms apart, "
        f"0-3 non-matching lines between): {figures(delays)}"
    )
    print(
        f"  alert_events stored: {stored.get('firing', 0)} firing, "
        f"{stored.get('resolved', 0)} resolved; observations judged: {pipeline.observations}"
    )


# -- 2. metric rule → notification after `for` -----------------------------------------------


def start_child(marker: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)", f"{marker}-web"],
        start_new_session=True,
    )


async def metric_to_notification(
    work: Path, repeats: int, interval: float, for_seconds: float
) -> None:
    clock = SystemClock()
    store = await SqliteStore.open(work / "metric.db")
    marker = f"nightshift-bench-{uuid.uuid4().hex[:10]}"
    outbox = OutboxRepo(store, clock)
    incidents = IncidentRepo(store, clock)
    woken: list[float] = []
    wake = asyncio.Event()

    def wake_outbox() -> None:  # after the manager's transaction committed
        woken.append(time.perf_counter())
        wake.set()

    manager = IncidentManager(
        IncidentSettings(
            group_wait_seconds=0, group_interval_seconds=interval, repeat_interval_seconds=3600
        ),
        store=store, alerts=AlertRepo(store), incidents=incidents,
        silences=SilenceRepo(store, clock),
        poster=IncidentPoster(
            store=store, incidents=incidents, outbox=outbox, router=Router([], ["console"]),
            clock=clock, wake_outbox=wake_outbox,
        ),
        runbooks=RunbookLibrary(work / "runbooks"), clock=clock,
    )  # fmt: skip
    rule = RuleSettings(
        name="WebDown",
        metric="process_up",
        where={"process": "web"},
        op="<",
        threshold=1,
        for_seconds=for_seconds,
        severity="critical",
    )
    pipeline = AlertPipeline([rule], AlertRepo(store), clock, on_events=manager.wake)
    ups: list[tuple[float, float]] = []  # (when emitted, process_up)

    def emit(observation: Observation) -> None:
        if observation.metric == "process_up":
            ups.append((time.perf_counter(), observation.value or 0.0))
        pipeline.emit(observation)

    settings = ProcessWatchSettings(name="web", cmdline=f"{marker}-web", interval_seconds=interval)
    watcher = ProcessWatcher(settings, clock)
    child = start_child(marker)
    tasks = [
        asyncio.create_task(pipeline.run()),
        asyncio.create_task(manager.run()),
        asyncio.create_task(watcher.run(emit)),
    ]
    rng = random.Random(11)
    totals: list[float] = []
    sampling: list[float] = []
    handling: list[float] = []
    last_row = 0
    try:
        for _ in range(repeats):
            started = time.perf_counter()
            await wait_until(seen_up(ups, started), 30, "web seen up after its start")
            await wait_until_resolved(incidents)  # the next kill opens a new incident
            await asyncio.sleep(rng.uniform(0, interval))  # a random phase of the scan interval
            child.kill()
            killed = time.perf_counter()
            await asyncio.to_thread(child.wait)
            while True:
                wake.clear()
                await asyncio.wait_for(wake.wait(), for_seconds + 10 * interval + 10)
                notified = woken[-1]
                rows = await new_rows(store, last_row)
                if rows:
                    last_row = rows[-1][0]
                if any(text.startswith("[FIRING") for _, text in rows):
                    break
            first_down = next(t for t, up in ups if t > killed and up == 0.0)
            totals.append(notified - killed - for_seconds)
            sampling.append(first_down - killed)
            handling.append(notified - first_down - for_seconds)
            child = start_child(marker)  # a person restarts it; the alert resolves
    finally:
        child.kill()
        child.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await store.close()
    within = sum(1 for value in totals if value <= interval + 0.05)
    print(
        f"process killed → [FIRING outbox row, minus for = {for_seconds:g} s "
        f"({repeats} kills at random phases, watcher interval {interval:g} s):"
    )
    print(f"  excess over for:                     {figures(totals)}")
    print(f"    kill → first process_up=0 reading: {figures(sampling)}")
    print(f"    that reading → outbox row − for:   {figures(handling)}")
    print(f"  within one interval + 50 ms: {within} of {repeats}")


async def wait_until_resolved(incidents: IncidentRepo) -> None:
    deadline = time.perf_counter() + 60
    while await incidents.listing(state="open"):
        if time.perf_counter() > deadline:
            raise SystemExit("bench: the incident never resolved after the restart")
        await asyncio.sleep(0.05)


async def new_rows(store: SqliteStore, after: int) -> list[tuple[int, str]]:
    async with store.read() as db:
        rows = await db.execute_fetchall(
            "SELECT id, text FROM outbox WHERE id > ? ORDER BY id", (after,)
        )
    return [(int(row[0]), str(row[1])) for row in rows]


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.part in ("log", "both"):
            started = time.perf_counter()
            await log_to_event(work, args.samples)
            print(f"  ({time.perf_counter() - started:.1f} s)")
        if args.part in ("metric", "both"):
            started = time.perf_counter()
            await metric_to_notification(work, args.repeats, args.interval, args.for_seconds)
            print(f"  ({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("log", "metric", "both"), default="both")
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--interval", type=float, default=1.0, help="process watcher interval")
    parser.add_argument("--for", dest="for_seconds", type=float, default=2.0)
    asyncio.run(main(parser.parse_args()))
