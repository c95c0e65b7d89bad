"""Task definitions → next slots → claimed slots → runs.

Each armed task's next slot (the scheduled time itself, deterministic from the schedule, see
``daemon.schedules``) waits in one in-memory heap, and one loop timer wakes us at the earliest:
every task due at that instant is woken together (a herd of 10,000 at :00 is one wake-up, not
10,000 APScheduler jobs; APScheduler 3.11 runs only the daily prune). The slots are claimed in
SQLite with UNIQUE (task, slot) before anything runs, so no slot runs twice — across restarts,
kill -9 and SIGHUP. A wake-up that comes late runs only the latest slot due (coalesced) if it
is within the misfire grace.

Slots missed while the daemon was down are found from the last claimed slot and handled by the
task's catch-up policy: skip, run once (the latest), or each (the latest N).

Every slot is accounted for: run, skipped (one row with the reason and how many), caught up, or
interrupted. A task's catch-up is decided and recorded (the skipped row, and a claim on each slot
to run) *before* its wake-up is armed, so a wake-up that claims the current slot first cannot
hide the slots missed before it — not even when the process is killed before the catch-up runs.
A run cut by a crash (or a caught-up slot claimed but not started) is marked interrupted at the
next start, and its owner is told once (or it is retried once, per the task's ``on_interrupt``).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import secrets
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from daemon.core.background import BackgroundTasks
from daemon.core.clock import Clock
from daemon.core.schedule import (
    Schedule,
    next_slot,
    parse_schedule,
    slots_between,
)
from daemon.core.tasks import TaskSpec
from daemon.tasks.runner import TaskRunner
from daemon.tasks.wake_heap import Armed, WakeHeap
from memory.tasks import StoredTask, TaskRepo, slot_key

log = logging.getLogger(__name__)

CATCH_UP_SCAN_LIMIT = 100_000  # slots examined after downtime (a minutely task: ~70 days)
CATCH_UP_PARALLEL = 4  # tasks catching up at once after a start
# A wake-up claims the latest slot at most this far ahead of the clock (APScheduler may wake a
# little early); below a second, so a 1-second interval never claims the next slot.
WAKE_TOLERANCE = timedelta(milliseconds=500)
RETRY_PREFIX = "retry:"  # the slot of an interrupted run's one retry
RECENT = timedelta(seconds=2)  # where a wake-up looks for its slot first
PRUNE_JOB = "nightshift:prune-task-runs"
MAX_SLEEP = 60.0  # the timer re-reads the clock at least this often (wall-clock jumps, suspend)
START_BATCH = 250  # runs started per loop turn (a herd must not stall the loop)
NEXT_BATCH = 250  # next slots computed per loop turn (a cron's next slot costs ~20 µs)
SLOT_GAP = timedelta(seconds=1)  # consecutive slots are whole seconds apart, at least one


class TaskScheduler:
    """Owns the APScheduler instance and every task's in-flight runs."""

    name = "scheduler"

    def __init__(
        self,
        *,
        repo: TaskRepo,
        runner: TaskRunner | None,
        clock: Clock,
        timezone: Callable[[], str],
        misfire_grace_seconds: float = 300.0,
        keep_runs_days: Callable[[], float] = lambda: 30.0,
        drain_timeout: Callable[[], float] = lambda: 5.0,
        freeze_gc: bool = False,
    ) -> None:
        """``freeze_gc`` (the daemon sets it): once started, what the process holds then (the
        armed tasks, the modules) is moved out of the cyclic collector's scans (``gc.freeze``),
        so a full collection during a herd scans only the runs in flight (10,000 armed tasks:
        a 90 ms pause becomes 50 ms)."""
        self._repo = repo
        self.runner = runner
        self._clock = clock
        self._timezone = timezone
        self._grace = misfire_grace_seconds
        self._keep_days = keep_runs_days
        self._drain_timeout = drain_timeout
        self._freeze_gc = freeze_gc
        self._aps: Any = None
        self._jobs = BackgroundTasks("scheduler")  # every run, claim and prune we started
        self._armed = WakeHeap()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: datetime | None = None
        self._ticking = False
        self._running: dict[str, set[asyncio.Task[None]]] = {}  # runs per task name (concurrency)
        # (task name, the caught-up slots claimed when it was armed: run id, slot)
        self._catch_up_queue: deque[tuple[str, list[tuple[int, str]]]] = deque()
        self._catch_up_workers = 0
        self._caught_up: dict[str, asyncio.Event] = {}  # set when a task's catch-up is over
        self._due: list[str] = []  # wake-ups not claimed yet (a herd is claimed in one go)
        self._claiming = False
        self.fired = 0
        self.skipped = 0

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self, config_tasks: Sequence[TaskSpec]) -> None:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        # APScheduler logs every wake-up at INFO; our own log says what ran and how it went.
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
        interrupted = await self._repo.mark_interrupted()
        if interrupted:
            log.warning("%d task run(s) were interrupted by the last shutdown", interrupted)
        self._aps = AsyncIOScheduler(
            timezone=ZoneInfo("UTC"),
            job_defaults={
                "misfire_grace_time": int(self._grace),
                "coalesce": True,
                "max_instances": 100,  # our own per-task limit applies (max_concurrency)
            },
        )
        self._aps.start()
        first_prune = self._clock.now() + timedelta(minutes=10)
        self._aps.add_job(
            self._fire_prune, "interval", hours=24, id=PRUNE_JOB, next_run_time=first_prune
        )
        await self.reconcile(config_tasks)
        for task in await self._repo.all():
            if task.source == "runtime":
                await self._arm(task)
        await self._settle_interrupted()
        if self._freeze_gc:
            gc.collect()  # today's garbage first: frozen objects are never collected
            gc.freeze()

    async def run(self, config_tasks: Callable[[], Sequence[TaskSpec]]) -> None:
        """For the supervisor: start, then keep the scheduler until cancelled."""
        await self.start(config_tasks())
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    async def stop(self, timeout: float | None = None) -> None:
        """Stop waking; wait for in-flight runs up to ``timeout`` (default: the drain timeout),
        then cancel the rest (they are recorded as interrupted)."""
        if timeout is None:
            timeout = self._drain_timeout()
        if self._aps is not None:
            self._aps.shutdown(wait=False)
            self._aps = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_at = None
        self._armed.clear()
        await self._jobs.drain(timeout)

    async def reconcile(self, config_tasks: Sequence[TaskSpec]) -> dict[str, list[str]]:
        """Make config-declared tasks match ``config_tasks``: add, change, remove."""
        report: dict[str, list[str]] = {"added": [], "changed": [], "removed": []}
        wanted = {spec.name for spec in config_tasks}
        existing = {t.name: t for t in await self._repo.all()}
        for spec in config_tasks:
            before = existing.get(spec.name)
            task, changed = await self._repo.upsert(spec, source="config", owner="config")
            if before is None:
                report["added"].append(spec.name)
            elif changed:
                report["changed"].append(spec.name)
            if before is None or changed or spec.name not in self._armed:
                await self._arm(task)
        for name, task in existing.items():
            if task.source == "config" and name not in wanted:
                self._disarm(name)
                await self._repo.remove(name)
                report["removed"].append(name)
        if any(report.values()):
            log.info("tasks reconciled: %s", report)
        return report

    # -- definitions at run time ----------------------------------------------------------------

    async def add(self, spec: TaskSpec, owner: str) -> StoredTask:
        task, _ = await self._repo.upsert(spec, source="runtime", owner=owner)
        await self._arm(task)
        return task

    async def remove(self, name: str) -> bool:
        self._disarm(name)
        return await self._repo.remove(name)

    async def pause(self, name: str, reason: str) -> None:
        await self._repo.set_paused(name, reason)
        self._disarm(name)

    async def resume(self, name: str) -> StoredTask:
        """Resume from now: slots that passed while paused are marked skipped, not caught up."""
        await self._repo.set_paused(name, None)
        task = await self._repo.get(name)
        schedule = self.schedule_of(task.spec, task.created_at)
        last = await self._repo.last_slot(task.id) or task.created_at
        passed = slots_between(schedule, last, self._clock.now(), CATCH_UP_SCAN_LIMIT)
        if passed:
            run_id = await self._repo.claim(task.id, slot_key(passed[-1]), status="skipped")
            if run_id is not None:
                await self._repo.finish(
                    run_id, "skipped", error=f"{len(passed)} slot(s) passed while paused"
                )
        await self._arm(task, catch_up=False)
        return task

    async def run_now(self, name: str) -> int | None:
        task = await self._repo.get(name)
        slot = f"manual:{slot_key(self._clock.now())}:{secrets.token_hex(3)}"
        return await self._claim_and_run(task, slot)

    def next_run(self, name: str) -> datetime | None:
        armed = self._armed.get(name)
        return armed.slot if armed is not None else None

    # -- firing ---------------------------------------------------------------------------------

    def schedule_of(self, spec: TaskSpec, created: datetime | None = None) -> Schedule:
        return parse_schedule(
            cron=spec.cron,
            interval_seconds=spec.interval_seconds,
            at=spec.at,
            timezone=spec.timezone or self._timezone(),
            anchor=created,
        )

    async def _arm(self, task: StoredTask, *, catch_up: bool = True) -> None:
        self._disarm(task.name)
        if not task.active or self._aps is None:
            return
        schedule = self.schedule_of(task.spec, task.created_at)
        now = self._clock.now()
        if catch_up:
            # Decided and recorded before the wake-up is armed: once it claims a slot, the gap
            # is out of sight (even if this process is killed before the catch-up runs).
            last = await self._repo.last_slot(task.id)
            if self._aps is None:
                return  # stopped meanwhile
            now = self._clock.now()
            runs = await self._decide_catch_up(task, last, now)
            if runs:  # run in the background: a catch-up run may take long (an LLM task)
                self._caught_up[task.name] = asyncio.Event()
                self._catch_up_queue.append((task.name, runs))
                while self._catch_up_workers < CATCH_UP_PARALLEL:
                    self._catch_up_workers += 1
                    self._spawn(self._catch_up_worker(), "catch up missed slots")
            if self._aps is None:
                return
        # catch-up covers the slots up to ``now``; the wake-ups take the ones after it
        self._disarm(task.name)  # armed meanwhile (a concurrent _arm): this one wins
        self._armed.push(task.name, schedule, next_slot(schedule, now))
        self._set_timer()

    def _disarm(self, name: str) -> None:
        self._armed.disarm(name)

    def _set_timer(self) -> None:
        """Point the one timer at the earliest armed slot."""
        earliest = self._armed.earliest()
        if self._ticking:
            return  # the wake-up in progress sets it when done
        when = earliest if self._aps is not None else None
        if when == self._timer_at and self._timer is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_at = None
        if when is None:
            return
        delay = (when - self._clock.now()).total_seconds()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(min(max(delay, 0.0), MAX_SLEEP), self._on_timer)
        self._timer_at = when

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        if not self._ticking and self._aps is not None:
            self._ticking = True
            self._spawn(self._tick(), "wake due tasks")

    async def _fire_prune(self) -> None:
        async def prune() -> None:
            await self.prune()

        self._spawn(prune(), "prune task runs")

    async def prune(self) -> int:
        """Forget task runs older than keep_runs_days (each task's latest slot stays)."""
        before = self._clock.now() - timedelta(days=self._keep_days())
        removed = await self._repo.prune(before)
        if removed:
            log.info("forgot %d task run(s) older than %s", removed, before.date())
        return removed

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Background work we own: APScheduler's shutdown cannot cancel it; stop() waits."""
        self._jobs.spawn(work, name)

    async def _fire(self, name: str) -> None:
        """A wake-up for one task by name: queued, and returns at once. One claimer takes every
        wake-up queued meanwhile, so wake-ups of the same moment are claimed in one transaction
        (the timer's wake-ups go through ``_tick``, which knows their slots)."""
        self._due.append(name)
        if not self._claiming:
            self._claiming = True
            self._spawn(self._claim_due(), "claim due tasks")

    async def _claim_due(self) -> None:
        try:
            while self._due:
                await asyncio.sleep(0)  # the other wake-ups of this moment queue up first
                names, self._due = self._due, []
                await self._wake_many(names)
        finally:
            self._claiming = False

    async def _tick(self) -> None:
        """The timer's wake-up: every armed slot that is due, claimed and run; then re-armed."""
        try:
            while self._aps is not None:
                now = self._clock.now()
                due = self._armed.pop_due(now + WAKE_TOLERANCE)
                if not due:
                    break
                await self._wake_due(due, now)
        finally:
            self._ticking = False
            if self._aps is not None:
                self._set_timer()

    async def _wake_due(self, due: Sequence[Armed], now: datetime) -> None:
        """Claim and run the slot of each armed task that came up, then arm its next slot."""
        slots: dict[str, str] = {}
        latest: list[datetime] = []
        missed: dict[str, tuple[datetime, int, str]] = {}  # last missed slot, how many, why
        grace = timedelta(seconds=self._grace)
        just_before = timedelta(microseconds=1)
        for armed in due:
            slot = self._latest_due(armed, now)
            latest.append(slot)
            late = (now - slot).total_seconds()
            if slot < now - grace:
                log.warning("task %s: slot %s missed by %.0f s (misfire grace %g s); not run",
                            armed.name, slot.isoformat(), late, self._grace)  # fmt: skip
                passed = slots_between(
                    armed.schedule, armed.slot - just_before, slot, CATCH_UP_SCAN_LIMIT
                )
                why = f"the wake-up came {late:.0f} s late, past the misfire grace"
                missed[armed.name] = (slot, max(len(passed), 1), why)
            else:
                slots[armed.name] = slot_key(slot)
                if slot > armed.slot:  # a late wake-up runs only the latest slot (coalesce)
                    passed = slots_between(
                        armed.schedule, armed.slot - just_before, slot - just_before,
                        CATCH_UP_SCAN_LIMIT,
                    )  # fmt: skip
                    if passed:
                        why = "the wake-up came late: only the latest slot ran"
                        missed[armed.name] = (passed[-1], len(passed), why)
        try:
            tasks = await self._repo.get_many(list(slots))
            await self._claim_and_start([(task, slots[task.name]) for task in tasks])
        except Exception:  # the store failed: these slots are lost, the tasks stay armed
            log.exception("could not claim the slots of %d task(s) due at %s", len(slots),
                          now.isoformat())  # fmt: skip
        finally:
            if missed:
                await self._record_missed(missed)
            for i, (armed, slot) in enumerate(zip(due, latest, strict=True)):  # next slots
                if i and i % NEXT_BATCH == 0:
                    await asyncio.sleep(0)
                if self._armed.is_current(armed):  # not re-armed nor disarmed meanwhile
                    after = max(slot, now)  # (a one-shot that is over is disarmed)
                    self._armed.push(armed.name, armed.schedule, next_slot(armed.schedule, after))

    async def _record_missed(self, missed: dict[str, tuple[datetime, int, str]]) -> None:
        """Slots a late wake-up did not run are skipped with the reason, never silently."""
        try:
            for task in await self._repo.get_many(list(missed)):
                last, count, why = missed[task.name]
                run_id = await self._repo.claim(task.id, slot_key(last), status="skipped")
                if run_id is not None:
                    await self._repo.finish(
                        run_id, "skipped", error=f"{count} slot(s) missed: {why}"
                    )
                    self.skipped += count
        except Exception:  # noqa: BLE001 - the store failed; the warning above still stands
            log.exception("could not record %d missed slot(s)", len(missed))

    def _latest_due(self, armed: Armed, now: datetime) -> datetime:
        """The latest slot due at ``now`` from the armed one on: later ones are due only when
        the wake-up came a second or more late (APScheduler's coalesce)."""
        if armed.slot + SLOT_GAP > now + WAKE_TOLERANCE:
            return armed.slot
        later = slots_between(
            armed.schedule,
            max(armed.slot, now - timedelta(seconds=self._grace + 1)),
            now + WAKE_TOLERANCE,
            CATCH_UP_SCAN_LIMIT,
        )
        return later[-1] if later else armed.slot

    async def _wake(self, name: str) -> None:
        """Find the slot that is due and run it (once)."""
        await self._wake_many([name])

    async def _wake_many(self, names: Sequence[str]) -> None:
        """For each task named: the slot due now, claimed (all in one transaction) and run."""
        now = self._clock.now()
        claims: list[tuple[StoredTask, str]] = []
        for task in await self._repo.get_many(names):
            if not task.active:
                continue
            schedule = self.schedule_of(task.spec, task.created_at)
            # the slot is nearly always the last second or two: look there before the whole
            # grace window (a minutely cron has five more slots in it to step through)
            due = slots_between(schedule, now - RECENT, now + WAKE_TOLERANCE, 1_000) or (
                slots_between(
                    schedule,
                    now - timedelta(seconds=self._grace + 1),
                    now + WAKE_TOLERANCE,
                    CATCH_UP_SCAN_LIMIT,
                )
            )
            if not due:
                log.warning("task %s woke with no slot due at %s", task.name, now.isoformat())
                continue
            claims.append((task, slot_key(due[-1])))
        await self._claim_and_start(claims)

    async def _claim_and_start(self, slots: Sequence[tuple[StoredTask, str]]) -> None:
        """Claim each active task's slot (all in one transaction), then start the runs a batch
        per loop turn."""
        claims: list[tuple[StoredTask, str]] = []
        for task, slot in slots:
            if not task.active:
                continue
            self.fired += 1
            if len(self._running.get(task.name, ())) >= task.spec.max_concurrency:
                await self._claim_and_run(task, slot)  # recorded as skipped, with the reason
            else:
                claims.append((task, slot))
        ids = await self._repo.claim_many([(task.id, slot) for task, slot in claims])
        started = 0
        for (task, slot), run_id in zip(claims, ids, strict=True):
            if run_id is None:
                log.info("task %s slot %s was already claimed; not running it again", task.name,
                         slot)  # fmt: skip
                continue
            if started and started % START_BATCH == 0:
                await asyncio.sleep(0)  # the runs started so far take their first step
            self._start(task, run_id, slot)
            started += 1

    async def _catch_up_worker(self) -> None:
        """Work through queued catch-ups (thousands at a start: a few workers, names only)."""
        try:
            while self._catch_up_queue:
                name, runs = self._catch_up_queue.popleft()
                try:
                    await self._run_caught_up(await self._repo.get(name), runs)
                except LookupError:
                    pass  # removed, with its runs
                finally:
                    self._caught_up.pop(name, asyncio.Event()).set()
        finally:
            self._catch_up_workers -= 1

    async def _decide_catch_up(
        self, task: StoredTask, last: datetime | None, now: datetime
    ) -> list[tuple[int, str]]:
        """Slots missed after ``last`` (the last claimed) up to ``now``, by the task's policy:
        the skipped ones marked and the ones to run claimed, in one transaction."""
        schedule = self.schedule_of(task.spec, task.created_at)
        missed = slots_between(schedule, last or task.created_at, now, CATCH_UP_SCAN_LIMIT)
        if not missed:
            return []
        policy = task.spec.catch_up
        keep = min(len(missed), {"skip": 0, "once": 1, "each": task.spec.catch_up_max}[policy])
        cut = len(missed) - keep
        run, skipped = missed[cut:], missed[:cut]
        mark = None
        if skipped:  # one row marks how far the skip went: the next catch-up starts after it
            self.skipped += len(skipped)
            reason = f"{len(skipped)} slot(s) missed while down ({policy})"
            mark = (slot_key(skipped[-1]), reason)
        log.info(
            "task %s: %d missed slot(s); catch-up %s runs %d",
            task.name,
            len(missed),
            policy,
            len(run),
        )
        return await self._repo.claim_catch_up(task.id, mark, [slot_key(s) for s in run])

    async def _run_caught_up(self, task: StoredTask, runs: list[tuple[int, str]]) -> None:
        """Run the claimed caught-up slots one after the other, oldest first."""
        for run_id, slot in runs:
            if not task.active:
                await self._repo.finish(run_id, "skipped", error="the task was paused")
            elif len(self._running.get(task.name, ())) >= task.spec.max_concurrency:
                await self._repo.finish(run_id, "skipped", error="the previous run is still going")
            else:
                await self._repo.start_claimed(run_id)
                self._start(task, run_id, slot)
                await self._wait_for(task.name)

    async def _settle_interrupted(self) -> None:
        """Tell each interrupted run's owner once, or retry it once (``on_interrupt``)."""
        for run in await self._repo.interrupted_unsettled():
            try:
                task = await self._repo.get_by_id(run.task_id)
            except LookupError:
                await self._repo.settle(run.id, None)
                continue
            retry = task.spec.on_interrupt == "retry" and not run.slot.startswith(RETRY_PREFIX)
            if retry and task.active:
                self._spawn(
                    self._retry(task, run.id, run.slot), f"retry interrupted run of {task.name}"
                )
                continue
            assert self.runner is not None, "TaskScheduler.runner is set before start()"
            outbox_id = await self.runner.tell_interrupted(task, run.id, run.slot)
            await self._repo.settle(run.id, outbox_id)

    async def _retry(self, task: StoredTask, run_id: int, slot: str) -> None:
        """An interrupted run's one retry, once the task's runs in flight (its catch-up) are
        over; settled after the claim, so a crash before it retries at the next start."""
        if (caught_up := self._caught_up.get(task.name)) is not None:
            await caught_up.wait()
        await self._wait_for(task.name)
        log.info("task %s: retrying the interrupted run of slot %s", task.name, slot)
        await self._claim_and_run(task, RETRY_PREFIX + slot)
        await self._repo.settle(run_id, None)

    async def _claim_and_run(self, task: StoredTask, slot: str) -> int | None:
        running = self._running.setdefault(task.name, set())
        if len(running) >= task.spec.max_concurrency:
            run_id = await self._repo.claim(task.id, slot, status="skipped")
            if run_id is not None:
                await self._repo.finish(run_id, "skipped", error="the previous run is still going")
            return None
        run_id = await self._repo.claim(task.id, slot)
        if run_id is None:
            log.info("task %s slot %s was already claimed; not running it again", task.name, slot)
            return None
        self._start(task, run_id, slot)
        return run_id

    def _start(self, task: StoredTask, run_id: int, slot: str) -> None:
        """Run a claimed slot in a task of its own (counted against max_concurrency)."""
        running = self._running.setdefault(task.name, set())
        job = self._jobs.spawn(self._run(task, run_id, slot), f"task {task.name} slot {slot}")
        running.add(job)
        job.add_done_callback(running.discard)

    async def _run(self, task: StoredTask, run_id: int, slot: str) -> None:
        try:
            async with asyncio.timeout(task.spec.timeout_seconds):
                assert self.runner is not None, "TaskScheduler.runner is set before start()"
                status = await self.runner.run(task, run_id, slot)
            log.info("task %s (slot %s): %s", task.name, slot, status)
            if status == "failed" and not (await self._repo.get(task.name)).active:
                self._disarm(task.name)  # the failure policy paused it
        except TimeoutError:
            log.warning(
                "task %s ran past %gs and was cancelled", task.name, task.spec.timeout_seconds
            )
            await self._repo.finish(
                run_id, "timeout", error=f"ran past {task.spec.timeout_seconds:g}s"
            )
            await self._repo.record_outcome(task.id, failed=True)
        except asyncio.CancelledError:
            await asyncio.shield(
                self._repo.finish(run_id, "interrupted", error="cancelled at shutdown")
            )
            raise
        except Exception as exc:  # a runner bug must not kill the scheduler
            log.exception("task %s crashed", task.name)
            await self._repo.finish(run_id, "failed", error=repr(exc)[:500])

    async def _wait_for(self, name: str) -> None:
        while running := set(self._running.get(name, ())):
            await asyncio.wait(running)

    async def wait_idle(self) -> None:
        """Wait for every in-flight run and catch-up (tests and drain)."""
        await self._jobs.wait_idle()
