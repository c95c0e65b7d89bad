"""Scheduler load: many tasks through the real TaskScheduler (APScheduler 3.11) and TaskRunner
on a real SQLite file, in this process, with the real clock.

Phase 1, spread: ``--tasks`` runtime tasks (``TaskScheduler.add``, what `nightshift tasks add`
does), ``interval_seconds = 60``. An interval's slots are ``anchor + k * 60`` and the anchor is
the task's creation time, so while task *i* is added the clock given to the repository and
scheduler is held at ``A + (i mod 60)`` s: the anchors spread over the minute, ``tasks / 60``
slots fall due each second from A on. A lies far enough ahead (from a timed 300-task
calibration) that registration, a restart and an idle window all pass before the first slot.
Printed: RSS/PSS of this process before and after arming, the time to arm (``add`` each task)
and to re-arm on a restart (a new ``TaskScheduler.start([])`` over the stored tasks), CPU
seconds per minute while idle with every task armed and while firing, and per fired slot the
lateness ``(moment − slot)`` over ``--seconds`` of firing, for three moments: the claim (the
run row's ``started_at``, written when the slot is claimed), the runner start
(``TaskRunner.run`` entered) and the end (``finished_at``). Slots due but never claimed are
counted as missing.

Phase 2, thundering herd: a fresh database and ``--tasks`` config tasks with
``cron = "* * * * *"`` through ``TaskScheduler.start(config_tasks)`` (the daemon's startup
path), then every task fires at the same :00; printed: time to start, and the lateness of that
slot's claims and runs (how long the herd takes to drain), the CPU it takes, and the event-loop
lag (how late a 10 ms sleep wakes) from half a second before the slot until the herd is drained.
``--profile FILE`` writes a cProfile of that window (``python -m pstats FILE``).

``--action builtin`` (default) runs the built-in job slot with a no-op that reports nothing to
do (a claim, the runner, two writes: no subprocess); ``--action command`` runs ``true`` (a real
subprocess per slot; CPU includes the children).

Usage: python -m bench.scheduler_load [--tasks 10000] [--seconds 120] [--idle 20]
       [--action builtin|command] [--no-herd | --herd-only] [--profile FILE]
       [--log-level INFO]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import logging
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._daemon import memory_kb
from daemon.core.schedule import parse_schedule, slots_between
from daemon.core.tasks import TaskSpec
from daemon.runtime.logs import setup_logging
from daemon.tasks.runner import TaskRunner
from daemon.tasks.scheduler import TaskScheduler
from memory._codec import from_db_time, to_db_time
from memory.conversations import ConversationRepo
from memory.outbox import OutboxRepo
from memory.store import SqliteStore
from memory.tasks import StoredTask, TaskRepo

CALIBRATION_TASKS = 300
TICK = 0.010  # the loop-lag probe's sleep


class CancelledWakeups(logging.Filter):
    """Counts (and keeps off stderr) APScheduler's "Job … raised an exception" records for
    wake-ups cancelled by ``TaskScheduler.stop()``; other errors pass through."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], asyncio.CancelledError):
            self.count += 1
            return False
        return True


CANCELLED = CancelledWakeups()


class AnchorClock:
    """The real clock, except while ``held`` is set: then it reads that time (task creation)."""

    def __init__(self) -> None:
        self.held: datetime | None = None

    def now(self) -> datetime:
        return self.held or datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


class TimedRunner(TaskRunner):
    """The real runner, noting the wall-clock moment each run starts."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.started: dict[int, float] = {}

    async def run(self, task: StoredTask, run_id: int, slot: str) -> str:
        self.started[run_id] = time.time()
        return await super().run(task, run_id, slot)


class Rig:
    """Store, repository, runner and scheduler on one SQLite file."""

    def __init__(self, path: Path, clock: AnchorClock) -> None:
        self.path, self.clock = path, clock

    async def open(self) -> None:
        self.store = await SqliteStore.open(self.path)
        self.repo = TaskRepo(self.store, self.clock)

        async def nothing(now: datetime) -> str:  # the built-in slot: nothing to report
            return ""

        self.runner = TimedRunner(
            repo=self.repo,
            outbox=OutboxRepo(self.store, self.clock),
            conversations=ConversationRepo(self.store, self.clock),
            agent=None,
            clock=self.clock,
            builtins={"digest": nothing},
        )
        self.scheduler = self.new_scheduler()

    def new_scheduler(self) -> TaskScheduler:
        return TaskScheduler(repo=self.repo, runner=self.runner, clock=self.clock,
                             timezone=lambda: "UTC", freeze_gc=True)  # as the daemon  # fmt: skip

    async def runs(self) -> list[tuple[int, str, str, str, str | None]]:
        async with self.store.read() as db:
            rows = await db.execute_fetchall(
                "SELECT id, slot, status, started_at, finished_at FROM task_runs"
                " WHERE slot NOT LIKE 'manual:%'"
            )
        return [tuple(row) for row in rows]  # type: ignore[misc]

    async def close(self) -> int:
        """Stop; returns how many slots were claimed after ``TaskScheduler.stop()`` returned."""
        await self.scheduler.stop()
        stopped = to_db_time(datetime.now(UTC))
        # stop() neither waits for nor cancels wake-ups APScheduler has already started; give
        # them time to finish before the store closes (else they hang on it until exit)
        await asyncio.sleep(1.0)
        await self.scheduler.wait_idle()
        async with self.store.read() as db:
            rows = list(await db.execute_fetchall(
                "SELECT count(*) FROM task_runs WHERE started_at > ?", (stopped,)
            ))  # fmt: skip
        await self.store.close()
        return int(rows[0][0])


def spec(name: str, action: str, **schedule: object) -> TaskSpec:
    work: dict[str, object] = (
        {"builtin": "digest"} if action == "builtin" else {"command": ["true"]}
    )
    return TaskSpec(name=name, **schedule, **work, retries=0, catch_up="skip")  # type: ignore[arg-type]


def mem() -> str:
    gc.collect()
    m = memory_kb(os.getpid())
    return f"RSS {m['rss_kb'] / 1024:.1f} MB, PSS {m['pss_kb'] / 1024:.1f} MB"


def rss_kb() -> int:
    gc.collect()
    return memory_kb(os.getpid())["rss_kb"]


def cpu() -> tuple[float, float]:
    """(this process, its reaped children) CPU seconds."""
    t = os.times()
    return t.user + t.system, t.children_user + t.children_system


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def spread(label: str, values: Sequence[float]) -> str:
    if not values:
        return f"  {label:<13} (none)"
    return (f"  {label:<13} p50 {pct(values, 50):7.3f} s   p99 {pct(values, 99):7.3f} s   "
            f"max {max(values):7.3f} s   (n={len(values)})")  # fmt: skip


def per_minute(cpu0: tuple[float, float], cpu1: tuple[float, float], seconds: float) -> str:
    own, kids = (b - a for a, b in zip(cpu0, cpu1, strict=True))
    text = f"{own / seconds * 60:.2f} CPU-s/min (process)"
    return text + (f" + {kids / seconds * 60:.2f} CPU-s/min (children)" if kids else "")


async def add_spread(rig: Rig, n: int, base: datetime, action: str, prefix: str) -> float:
    """Add ``n`` minutely tasks anchored at base + (i mod 60) s; returns the seconds taken."""
    started = time.perf_counter()
    for i in range(n):
        rig.clock.held = base + timedelta(seconds=i % 60)
        await rig.scheduler.add(spec(f"{prefix}{i:05d}", action, interval_seconds=60), "bench")
    rig.clock.held = base + timedelta(seconds=59)
    await rig.scheduler.wait_idle()  # the catch-up scans started by each add
    rig.clock.held = None
    return time.perf_counter() - started


async def calibrate(tmp: Path, action: str) -> float:
    """Seconds per task to add a few hundred (to place the anchors of the real run)."""
    rig = Rig(tmp / "calibration.db", AnchorClock())
    await rig.open()
    await rig.scheduler.start([])
    far = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    seconds = await add_spread(rig, CALIBRATION_TASKS, far, action, "c")
    await rig.close()
    return seconds / CALIBRATION_TASKS


async def ticker(overshoots: list[float]) -> None:
    """How late each 10 ms sleep wakes: the event loop's lag."""
    while True:
        started = time.perf_counter()
        await asyncio.sleep(TICK)
        overshoots.append(time.perf_counter() - started - TICK)


async def wait_until(when: datetime) -> None:
    await asyncio.sleep(max(0.0, (when - datetime.now(UTC)).total_seconds()))


async def spread_phase(tmp: Path, n: int, seconds: float, idle: float, action: str) -> None:
    per_task = await calibrate(tmp, action)
    rig = Rig(tmp / "spread.db", AnchorClock())
    await rig.open()
    await rig.scheduler.start([])
    before_kb = rss_kb()
    print(f"memory before tasks (store open, scheduler started): {mem()}")
    lead = per_task * n * 2.5 + idle + 10  # arm + re-arm on restart (~1/3 of arm) + idle
    base = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=round(lead))
    print(f"calibration: {per_task * 1000:.2f} ms per add; first slot A in {lead:.0f} s")
    armed = await add_spread(rig, n, base, action, "t")
    print(f"arm {n} tasks (TaskScheduler.add each, incl. catch-up scans): {armed:.2f} s "
          f"({armed / n * 1000:.2f} ms per task)")  # fmt: skip
    after_kb = rss_kb()
    print(
        f"memory after arming {n} tasks: {mem()}  "
        f"(+{(after_kb - before_kb) / 1024:.1f} MB RSS, {(after_kb - before_kb) / n:.2f} kB/task)"
    )
    await rig.scheduler.stop()
    rig.scheduler = rig.new_scheduler()
    started = time.perf_counter()
    await rig.scheduler.start([])
    restarted = time.perf_counter() - started
    await rig.scheduler.wait_idle()
    scanned = time.perf_counter() - started
    print(f"restart: new TaskScheduler.start([]) re-arms {n} stored tasks in {restarted:.2f} s; "
          f"catch-up scans done after {scanned:.2f} s")  # fmt: skip
    print(f"memory after restart: {mem()}")
    window = min(idle, (base - datetime.now(UTC)).total_seconds() - 2)
    if window < idle:
        print(f"WARNING: registration ran late; idle window only {window:.1f} s")
    if window > 0:
        c0, t0 = cpu(), time.monotonic()
        await asyncio.sleep(window)
        c1, t1 = cpu(), time.monotonic()
        print(f"idle with {n} tasks armed, {t1 - t0:.0f} s: {per_minute(c0, c1, t1 - t0)}")
    await wait_until(base)
    c0, t0 = cpu(), time.monotonic()
    await wait_until(base + timedelta(seconds=seconds))
    c1, t1 = cpu(), time.monotonic()
    end = base + timedelta(seconds=seconds - 2)  # slots due by now have had 2 s to be claimed
    due = 0
    for i in range(n):
        schedule = parse_schedule(interval_seconds=60, anchor=base + timedelta(seconds=i % 60))
        due += len(slots_between(schedule, base - timedelta(seconds=1), end, 10_000))
    rows = [r for r in await rig.runs() if base <= from_db_time(r[1]) <= end]
    late_claims = await rig.close()
    statuses: dict[str, int] = {}
    for row in rows:
        statuses[row[2]] = statuses.get(row[2], 0) + 1
    print(f"spread firing: {n} tasks every 60 s (~{n / 60:.0f} slots/s) for {t1 - t0:.0f} s, "
          f"action {action}")  # fmt: skip
    print(f"  CPU while firing: {per_minute(c0, c1, t1 - t0)}")
    print(f"  slots due {due}, claimed {len(rows)} {statuses}, missing {due - len(rows)}")
    report_lateness(rows, rig.runner.started)
    print(f"  memory after firing: {mem()}; database {db_size(rig.path) / 1e6:.1f} MB")
    print(f"  at stop: wake-ups cancelled in flight {CANCELLED.count}, "
          f"slots claimed after TaskScheduler.stop() returned {late_claims}")  # fmt: skip


def report_lateness(rows: list[tuple[int, str, str, str, str | None]],
                    started: dict[int, float]) -> None:  # fmt: skip
    ran = [r for r in rows if r[2] != "skipped"]
    claim = [(from_db_time(r[3]) - from_db_time(r[1])).total_seconds() for r in ran]
    start = [started[r[0]] - from_db_time(r[1]).timestamp() for r in ran if r[0] in started]
    done = [(from_db_time(r[4]) - from_db_time(r[1])).total_seconds() for r in ran if r[4]]
    print("  lateness (moment − scheduled slot):")
    print(spread("claimed", claim))
    print(spread("runner start", start))
    print(spread("finished", done))


def db_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


async def herd_phase(tmp: Path, n: int, action: str, profile: str | None) -> None:
    rig = Rig(tmp / "herd.db", AnchorClock())
    await rig.open()
    tasks = [spec(f"h{i:05d}", action, cron="* * * * *") for i in range(n)]
    before_kb = rss_kb()
    started = time.perf_counter()
    await rig.scheduler.start(tasks)
    took = time.perf_counter() - started
    await rig.scheduler.wait_idle()
    print(f"herd: TaskScheduler.start() with {n} config tasks (cron '* * * * *') on an empty "
          f"database: {took:.2f} s; catch-up scans done after "
          f"{time.perf_counter() - started:.2f} s")  # fmt: skip
    print(f"  memory: {mem()} (+{(rss_kb() - before_kb) / 1024:.1f} MB RSS)")
    now = datetime.now(UTC)
    slot = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    if (slot - now).total_seconds() < 1:
        slot += timedelta(minutes=1)
    print(f"  waiting {(slot - now).total_seconds():.0f} s for the herd at {slot:%H:%M:%S}")
    await wait_until(slot - timedelta(seconds=0.5))
    overshoots: list[float] = []
    probe = asyncio.ensure_future(ticker(overshoots))
    profiler = cProfile.Profile() if profile else None
    if profiler is not None:
        profiler.enable()
    await wait_until(slot)
    c0, t0 = cpu(), time.monotonic()
    key = to_db_time(slot)
    while time.monotonic() - t0 < 55:  # until every run of the slot has finished
        async with rig.store.read() as db:
            counts = list(await db.execute_fetchall(
                "SELECT count(finished_at) FROM task_runs WHERE slot = ?", (key,)
            ))  # fmt: skip
        if counts[0][0] >= n:
            break
        await asyncio.sleep(0.05)
    drained = time.monotonic() - t0
    c1 = cpu()
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(str(profile))
    probe.cancel()
    rows = [r for r in await rig.runs() if r[1] == key]
    own, kids = (b - a for a, b in zip(c0, c1, strict=True))
    print(f"  herd at :00: {len(rows)} of {n} slots claimed, {sum(1 for r in rows if r[4])} "
          f"finished (every finish committed {drained:.2f} s after the slot); "
          f"CPU {own:.2f} s (process) + {kids:.2f} s (children)")  # fmt: skip
    report_lateness(rows, rig.runner.started)
    lag = sorted(overshoots)
    print(f"  event-loop lag from slot − 0.5 s until drained ({len(lag)} ticks of "
          f"{TICK * 1000:.0f} ms): p50 {pct(lag, 50) * 1000:.1f} ms, p99 {pct(lag, 99) * 1000:.1f} "
          f"ms, max {lag[-1] * 1000:.1f} ms")  # fmt: skip
    before = CANCELLED.count
    late_claims = await rig.close()
    print(f"  at stop: wake-ups cancelled in flight {CANCELLED.count - before}, "
          f"slots claimed after TaskScheduler.stop() returned {late_claims}")  # fmt: skip


async def main(
    n: int,
    seconds: float,
    idle: float,
    action: str,
    spread: bool,
    herd: bool,
    profile: str | None,
) -> None:
    began = time.perf_counter()
    logging.getLogger("apscheduler.executors.default").addFilter(CANCELLED)
    print(f"scheduler load: {n} tasks, action {action}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        if spread:
            await spread_phase(Path(tmp), n, seconds, idle, action)
        if herd:
            await herd_phase(Path(tmp), n, action, profile)
    print(f"total bench time: {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=120.0, help="firing window")
    parser.add_argument("--idle", type=float, default=20.0, help="idle window before firing")
    parser.add_argument("--action", choices=("builtin", "command"), default="builtin")
    phases = parser.add_mutually_exclusive_group()
    phases.add_argument("--no-herd", action="store_true", help="skip the :00 herd phase")
    phases.add_argument("--herd-only", action="store_true", help="only the :00 herd phase")
    parser.add_argument("--profile", metavar="FILE", help="cProfile the herd into FILE")
    parser.add_argument("--log-level", default="INFO", help="the daemon's (default INFO)")
    args = parser.parse_args()
    with tempfile.TemporaryFile("w") as log:
        setup_logging(args.log_level, log)  # as the daemon logs (a line per run), to a file
        asyncio.run(main(args.tasks, args.seconds, args.idle, args.action, not args.herd_only,
                         not args.no_herd, args.profile))  # fmt: skip
