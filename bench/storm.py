"""An alert storm through the real alerting path: rule engine → SQLite → incident manager.

100,000 alert events in a burst from ``--groups`` groups of ``--per-group`` alerts each (one
fingerprint per alert): each step picks a random alert and flips it, firing ↔ resolved, so every
step is exactly one event and about half the alerts are still firing at the end.

``--via rules`` (default): each step is an Observation (``port_latency_ms`` 250 or 5 against a
``> 100`` rule, no ``for``) given to ``AlertPipeline.emit``, ``--chunk`` observations per turn of
the event loop (default 256: what the log watcher hands over per turn); the pipeline's
``run`` commits the events and wakes the IncidentManager's ``run``. ``--via accept``: AlertEvents
handed to ``IncidentManager.accept`` ``--chunk`` at a time (what the Alertmanager webhook does).

The incident manager groups by the ``group`` label with group_wait 0 and ``--group-interval``
(real clock). Printed: time to take in (every event committed to ``alert_events``) and to
handle (none left with handled = 0); events generated vs stored vs unhandled; notifications
enqueued per group within any group_interval; event-loop lag (how late a 10 ms sleep wakes)
during the storm; RSS before and peak.

Usage: python -m bench.storm [--events 100000] [--groups 50] [--per-group 40] [--via rules]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from daemon.alerting.pipeline import AlertPipeline
from daemon.alerting.settings import RuleSettings
from daemon.core.alerts import AlertEvent, Observation, fingerprint
from daemon.core.clock import SystemClock
from daemon.incidents.manager import IncidentManager
from daemon.incidents.poster import IncidentPoster
from daemon.incidents.routing import Router
from daemon.incidents.runbooks import RunbookLibrary
from daemon.incidents.settings import IncidentSettings
from memory._codec import from_db_time
from memory.alerts import AlertRepo
from memory.incidents import IncidentRepo, SilenceRepo
from memory.outbox import OutboxRepo
from memory.store import SqliteStore

RULE = RuleSettings(
    name="SlowTarget", metric="port_latency_ms", op=">", threshold=100, summary="{target} slow"
)
TICK = 0.01


def memory_mb() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process, MB."""
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


async def ticker(overshoots: list[float]) -> None:
    """How late each 10 ms sleep wakes: the event loop's lag."""
    while True:
        started = time.perf_counter()
        await asyncio.sleep(TICK)
        overshoots.append(time.perf_counter() - started - TICK)


class Storm:
    """The flips to make, and what they should produce."""

    def __init__(self, events: int, groups: int, per_group: int) -> None:
        rng = random.Random(42)
        self.labels = [
            {"group": f"g{g:02d}", "target": f"svc{g:02d}-{i:03d}"}
            for g in range(groups)
            for i in range(per_group)
        ]
        self.steps = [rng.randrange(len(self.labels)) for _ in range(events)]
        firing = [False] * len(self.labels)
        self.fired = 0
        for index in self.steps:
            firing[index] = not firing[index]
            self.fired += firing[index]
        self.resolved = events - self.fired
        self.still_firing = sum(firing)


async def feed_rules(storm: Storm, pipeline: AlertPipeline, clock: SystemClock, chunk: int) -> None:
    firing = [False] * len(storm.labels)
    for start in range(0, len(storm.steps), chunk):
        at = clock.now()
        for index in storm.steps[start : start + chunk]:
            firing[index] = not firing[index]
            pipeline.emit(
                Observation(
                    source="port",
                    metric="port_latency_ms",
                    at=at,
                    value=250.0 if firing[index] else 5.0,
                    labels=storm.labels[index],
                )
            )
        await asyncio.sleep(0)


async def feed_accept(
    storm: Storm, manager: IncidentManager, clock: SystemClock, chunk: int
) -> None:
    firing = [False] * len(storm.labels)
    since = [clock.now()] * len(storm.labels)
    full = [{"alertname": "SlowTarget", "severity": "warning", **x} for x in storm.labels]
    prints = [fingerprint(labels) for labels in full]

    def build(start: int, at: datetime) -> list[AlertEvent]:
        """One chunk's events, built off the loop as the webhook parses a big payload."""
        batch = []
        for index in storm.steps[start : start + chunk]:
            firing[index] = not firing[index]
            if firing[index]:
                since[index] = at
            batch.append(
                AlertEvent(
                    fingerprint=prints[index],
                    status="firing" if firing[index] else "resolved",
                    labels=full[index],
                    annotations={"summary": f"{full[index]['target']} slow"},
                    starts_at=since[index],
                    ends_at=None if firing[index] else at,
                    at=at,
                    source="alertmanager",
                )
            )
        return batch

    for start in range(0, len(storm.steps), chunk):
        await manager.accept(await asyncio.to_thread(build, start, clock.now()))


async def scalar(store: SqliteStore, sql: str) -> int:
    async with store.read() as db:
        rows = list(await db.execute_fetchall(sql))
    return int(rows[0][0])


async def notifications_by_group(store: SqliteStore) -> dict[str, list[float]]:
    """Seconds (wall clock) of every notification enqueued, by incident group."""
    async with store.read() as db:
        rows = await db.execute_fetchall(
            "SELECT i.group_key, e.at FROM incident_events e JOIN incidents i"
            " ON i.id = e.incident_id WHERE e.kind IN ('notified', 'reminder', 'resolved')"
            " AND e.detail LIKE 'to %'"
        )
    found: dict[str, list[float]] = defaultdict(list)
    for key, at in rows:
        found[key].append(from_db_time(at).timestamp())
    return found


def most_in_a_window(times: list[float], window: float) -> int:
    """The most notifications within any span shorter than ``window``."""
    ordered = sorted(times)
    best, first = 0, 0
    for last, at in enumerate(ordered):
        while at - ordered[first] >= window:
            first += 1
        best = max(best, last - first + 1)
    return best


async def main(args: argparse.Namespace) -> None:
    storm = Storm(args.events, args.groups, args.per_group)
    clock = SystemClock()
    interval = args.group_interval
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        store = await SqliteStore.open(work / "storm.db")
        alerts = AlertRepo(store)
        manager = IncidentManager(
            IncidentSettings(
                group_by=["group"], group_wait_seconds=0, group_interval_seconds=interval,
                repeat_interval_seconds=3600,
            ),
            store=store, alerts=alerts, incidents=IncidentRepo(store, clock),
            silences=SilenceRepo(store, clock),
            poster=IncidentPoster(
                store=store, incidents=IncidentRepo(store, clock),
                outbox=OutboxRepo(store, clock), router=Router([], ["console"]), clock=clock,
            ),
            runbooks=RunbookLibrary(work / "runbooks"), clock=clock,
        )  # fmt: skip
        commits: list[int] = []  # events per pipeline commit (one transaction each)
        pipeline: AlertPipeline

        def on_events() -> None:
            commits.append(pipeline.events - sum(commits))
            manager.wake()

        pipeline = AlertPipeline([RULE], alerts, clock, on_events=on_events)
        overshoots: list[float] = []
        rss_before, _ = memory_mb()
        tasks = [
            asyncio.create_task(pipeline.run()),
            asyncio.create_task(manager.run()),
            asyncio.create_task(ticker(overshoots)),
        ]
        try:
            started = time.perf_counter()
            wall_start = time.time()
            if args.via == "rules":
                await feed_rules(storm, pipeline, clock, args.chunk)
            else:
                await feed_accept(storm, manager, clock, args.chunk)
            fed = time.perf_counter()
            while (
                await scalar(store, "SELECT coalesce(max(id), 0) FROM alert_events") < args.events
            ):
                await asyncio.sleep(0.01)
            taken_in = time.perf_counter()
            while await scalar(store, "SELECT count(*) FROM alert_events WHERE handled = 0"):
                await asyncio.sleep(0.01)
            handled = time.perf_counter()
            storm_lag = list(overshoots)
            # let the updates held back by group_interval go out, then count
            await asyncio.sleep(interval + 1.0)
            stored = await scalar(store, "SELECT count(*) FROM alert_events")
            unhandled = await scalar(store, "SELECT count(*) FROM alert_events WHERE handled = 0")
            fired = await scalar(store, "SELECT count(*) FROM alert_events WHERE status='firing'")
            incidents = await scalar(store, "SELECT count(*) FROM incidents")
            outbox = await scalar(store, "SELECT count(*) FROM outbox")
            sent = await notifications_by_group(store)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await store.close()
        _, rss_peak = memory_mb()

    via = (
        f"AlertPipeline.emit, {args.chunk} observations per loop turn"
        if args.via == "rules"
        else f"IncidentManager.accept, {args.chunk} events per call"
    )
    print(
        f"storm: {args.events:,} alert events ({storm.fired:,} firing, {storm.resolved:,} "
        f"resolved; {storm.still_firing} of {len(storm.labels)} alerts firing at the end) "
        f"from {args.groups} groups × {args.per_group} alerts, via {via}"
    )
    print(f"  fed in {fed - started:.2f} s")
    print(
        f"  taken in (all committed to alert_events): {taken_in - started:.2f} s "
        f"({args.events / (taken_in - started):,.0f} events/s)"
    )
    print(
        f"  handled by the incident manager:          {handled - started:.2f} s "
        f"({args.events / (handled - started):,.0f} events/s)"
    )
    if commits:
        print(
            f"  AlertPipeline commits: {len(commits)} transactions, largest {max(commits):,} "
            f"events, median {statistics.median(commits):,.0f}"
        )
    lost = args.events - stored
    print(
        f"  events: {args.events:,} generated, {stored:,} stored ({fired:,} firing), "
        f"{unhandled} unhandled after draining → {lost + unhandled} lost"
    )
    worst = {key: most_in_a_window(times, interval) for key, times in sent.items()}
    over = sorted(key for key, count in worst.items() if count > 1)
    per_group = [len(times) for times in sent.values()]
    firsts = sorted(min(times) - wall_start for times in sent.values())
    print(
        f"  notifications: {sum(per_group)} enqueued ({outbox} outbox rows) for {incidents} "
        f"incidents in {len(sent)} groups; per group {min(per_group)}-{max(per_group)} over "
        f"{handled - started + interval + 1:.0f} s"
    )
    print(
        f"  most notifications per group within one group_interval ({interval:g} s): "
        f"{max(worst.values())}; groups above 1: {len(over)}"
        + (f" ({', '.join(k.split('=')[-1] for k in over[:10])})" if over else "")
    )
    print(
        f"  first notification of each group after the storm began: {firsts[0]:.2f} s "
        f"(first group) … {firsts[-1]:.2f} s (last group)"
    )
    print(
        f"  event-loop lag during the storm ({len(storm_lag)} ticks of {TICK * 1000:.0f} ms): "
        f"p50 {statistics.median(storm_lag) * 1000:.1f} ms, "
        f"p99 {sorted(storm_lag)[int(len(storm_lag) * 0.99)] * 1000:.1f} ms, "
        f"max {max(storm_lag) * 1000:.1f} ms"
    )
    print(f"  RSS: {rss_before:.0f} MB before, peak {rss_peak:.0f} MB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=50)
    parser.add_argument("--per-group", type=int, default=40)
    parser.add_argument("--via", choices=("rules", "accept"), default="rules")
    parser.add_argument(
        "--chunk",
        type=int,
        default=256,
        help="observations (or events) handed over per turn of the event loop; default 256, "
        "what the log watcher hands over per turn (EMIT_SLICE)",
    )
    parser.add_argument("--group-interval", type=float, default=5.0)
    asyncio.run(main(parser.parse_args()))
