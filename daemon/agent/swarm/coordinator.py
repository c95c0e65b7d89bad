"""The swarm: a ``delegate`` tool that fans subtasks out to sub-agents and reports truthfully.

Sub-agents run as tasks of this process under one global concurrency limit
(``agent.swarm.concurrency``, slots handed out by priority: see :mod:`.slots`), a spawn cap per
run and a depth limit. Each attempt claims its task row and gets a fresh epoch; the
:mod:`.watchdog` cancels an attempt that stalls or runs past its deadline. A stalled attempt
is cancelled and awaited, its epoch bumped (its late writes are refused), and the task
reassigned (keeping its slot) while attempts remain. The coordinator gets each child's status,
reason and result, and may retry or reassign with a changed brief (``retry_of``).

After a restart, :meth:`Swarm.resume` takes up every run left running: finished sub-agents are
kept, interrupted ones resume from their recorded steps (see :mod:`.child`: replies replayed at
no token cost, finished tool steps not repeated, unknown side effects verified or put to a
person), queued ones start. The coordinator's own turn is not resumed (its conversation was
mid-tool-call in a process that is gone): the run ends truthfully (done, or partial with what
finished and what not) and its owner is told through ``notify``, which also puts the report
in the coordinator's conversation, so its next turn there sees the results.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from daemon.agent.model import model_progress
from daemon.agent.swarm.child import Attempt, Outcome, RunBudget, run_attempt
from daemon.agent.swarm.report import summarise
from daemon.agent.swarm.shape import ShapeError, check_schema
from daemon.agent.swarm.slots import Key, PrioritySlots
from daemon.agent.swarm.watchdog import Watchdog, Worker
from daemon.agent.tools.base import Tier, Tool, ToolContext, Verdict, tool
from daemon.core.errors import FencedError, ToolError
from memory.swarm import FINAL, SwarmRepo, SwarmRun, SwarmStep, SwarmTask, TaskSpec
from memory.swarm_steps import StepLog

if TYPE_CHECKING:
    from daemon.agent.executor import ToolExecutor
    from daemon.agent.model import ChatModel
    from daemon.agent.settings import AgentConfig
    from daemon.core.clock import Clock
    from memory.store import SqliteStore

__all__ = ["DELEGATE", "Notify", "RunObserver", "Subtask", "Swarm"]

# notify(run, report): tell a resumed run's owner how it ended
Notify = Callable[[SwarmRun, dict[str, Any]], Awaitable[None]]

log = logging.getLogger(__name__)

DELEGATE = "delegate"
KEEP_RUNS = 64  # recent coordinator runs whose budgets are kept for retries
OBSERVER_WAIT = 2.0  # seconds a delegate call waits at its end for observers' final word
# Keys for a slot, lowest first: a parent back from waiting for its children, then an attempt
# resumed after a restart (late already), then new subtasks. A stalled attempt's retry keeps
# its slot.
PARENT: Key = (0.0, 0.0)
AGAIN: Key = (1.0, 0.0)
NEW: Key = (2.0, 0.0)  # then minus the seconds it is expected to take


RunObserver = Callable[[str, RunBudget, ToolContext], Awaitable[None] | None]
"""Told ``("start" | "end", the run's budget, the coordinator's context)`` around each delegate
call of a coordinator and around each run resumed after a restart (then ``budget.resumed`` is
set and the context carries the run's stored origin); it must not block or raise. At "end" it
may return an awaitable (its final word being shown): the call waits for it, at most
``OBSERVER_WAIT`` seconds, so that word comes before the coordinator's answer."""


class Subtask(BaseModel):
    """One subtask for a sub-agent."""

    goal: str = Field(description="What to find out or do, self-contained (no shared history).")
    role: str = Field(default="worker", description="A few words: who the sub-agent is.")
    tools: list[str] = Field(
        default_factory=list, description="Tool names it may use: a subset of yours."
    )
    result_shape: dict[str, Any] | None = Field(
        default=None,
        description="JSON schema (type, properties, required, items, enum) of the result.",
    )
    max_steps: int | None = Field(default=None, ge=1, description="Model turns it may take.")
    max_tokens: int | None = Field(default=None, ge=1, description="Tokens it may spend.")
    deadline_seconds: float | None = Field(default=None, gt=0, description="Time it may take.")
    retry_of: int | None = Field(
        default=None,
        description="Id of an earlier subtask of yours (this turn's, or an earlier one's) to "
        "run again with this goal; tools, result_shape and budgets you leave out are kept.",
    )
    expected_seconds: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="Roughly how long you expect it to take, if you know: longer subtasks "
        "start first, so the whole run ends sooner.",
    )


@dataclass(slots=True)
class _Frame:
    """Who is delegating: the run, the delegating task (None: the coordinator), its depth and
    tools, and how to give up its concurrency slot while it waits for its children."""

    budget: RunBudget
    task_id: int | None
    depth: int
    tools: frozenset[str]
    hold: _Hold | None = None  # its driver's slot (None: the coordinator holds none)


@dataclass(slots=True)
class _Hold:
    """Whether a driver holds its slot now: a sub-agent gives it up while it waits for its
    children, and may be stopped before it has it back (it must not release it twice)."""

    held: bool = False


_frame: ContextVar[_Frame | None] = ContextVar("swarm_frame", default=None)


class Swarm:
    """Runs sub-agents for the coordinator agent and for sub-agents allowed to delegate."""

    def __init__(
        self,
        *,
        settings: AgentConfig,
        llm: ChatModel,
        executor: ToolExecutor,
        store: SqliteStore,
        clock: Clock,
        services: Any = None,
    ) -> None:
        self.settings = settings
        self._services = services
        self._llm = llm
        self._executor = executor
        self._clock = clock
        self.repo = SwarmRepo(store, clock)
        self.steps = StepLog(store, clock)
        self._limit = settings.agent.swarm.concurrency
        self._slots = PrioritySlots(self._limit)
        self._runs: OrderedDict[int, RunBudget] = OrderedDict()
        self.watchdog = Watchdog(lambda: self.settings.agent.swarm.stall_seconds)
        self.observers: list[RunObserver] = []  # told as coordinator delegate calls start/end
        self.replayed = 0  # steps resumed attempts took from the record instead of redoing
        self.probes: list[str] = []  # how each unknown side effect was settled on resume
        self.suspended: str | None = None  # why every run is paused (the daemon is stopping)
        self._drivers: set[asyncio.Task[None]] = set()

    # -- the tool --------------------------------------------------------------------------

    def tool(self) -> Tool:
        """The ``delegate`` tool, bound to this swarm."""
        swarm = self

        async def delegate(ctx: ToolContext, tasks: list[Subtask]) -> dict[str, Any]:
            """Hand subtasks to sub-agents that work in parallel; waits for all of them and
            returns each one's id, status (done, failed, stalled, cancelled), reason and result.
            Give each a self-contained goal, the few tools it needs and the result shape you
            want. Retry or reassign a failed one with retry_of and a changed goal.

            Args:
                tasks: The subtasks.
            """
            return await swarm.delegate(ctx, tasks)

        timeout = self.settings.agent.swarm.delegate_timeout_seconds
        made = tool(tier=Tier.WRITE, name=DELEGATE, timeout_seconds=timeout)(delegate)
        return made.with_verify(self._verify_delegate)

    async def _verify_delegate(
        self, ctx: ToolContext, arguments: dict[str, Any], since: Any
    ) -> Verdict:
        """A sub-agent's interrupted delegate call: its children (resumed first) say what came
        of it; none queued means it never took effect."""
        frame = _frame.get()
        if frame is None or frame.task_id is None:
            return Verdict(None, "not a sub-agent's call")
        children = [
            t for t in await self.repo.tasks(frame.budget.run_id)
            if t.parent_task_id == frame.task_id
        ]  # fmt: skip
        if not children:
            return Verdict(False, "no subtask had been queued")
        if any(t.status not in FINAL for t in children):
            return Verdict(None, "its subtasks are not all finished")
        summary = await self._summary(frame.budget, [t.id for t in children])
        return Verdict(True, json.dumps(summary, ensure_ascii=False))

    async def delegate(self, ctx: ToolContext, tasks: list[Subtask]) -> dict[str, Any]:
        """Queue, run and wait for ``tasks``; the summary the delegating agent sees."""
        swarm = self.settings.agent.swarm
        if not tasks:
            raise ToolError("give at least one subtask")
        if self.suspended is not None:
            raise ToolError(f"{self.suspended}: no sub-agent starts now; delegate after a restart")
        frame = _frame.get() or await self._coordinator_frame(ctx)
        depth = frame.depth + 1
        if depth > swarm.max_depth:
            raise ToolError(
                f"sub-agents at depth {frame.depth} may not delegate "
                f"(agent.swarm.max_depth = {swarm.max_depth})"
            )
        fresh: list[Subtask] = []  # new tasks of this run (a retry of an earlier run's too)
        retries: list[tuple[Subtask, SwarmTask]] = []  # reassigned in this run
        for t in tasks:
            old = None if t.retry_of is None else await self._retried(t, frame, ctx)
            if old is not None and old.run_id == frame.budget.run_id:
                retries.append((t, old))
            else:
                fresh.append(t if old is None else _carried(t, old))
        specs = [self._spec(t, frame) for t in fresh]
        ids = await self.repo.add_tasks(frame.budget.run_id, frame.task_id, depth, specs)
        if specs and not ids:
            run = await self.repo.get_run(frame.budget.run_id)
            raise ToolError(
                f"spawn cap: this run may start {run.max_spawns} sub-agents and has started "
                f"{run.spawns}; {len(specs)} more would pass it (agent.swarm.max_spawns_per_run)"
            )
        for subtask, old in retries:  # only once nothing can refuse the call any more
            await self.watchdog.stop(old.id, "reassigned by its parent")
            await self.repo.reassign(
                old.id,
                reason="reassigned by its parent",
                goal=subtask.goal,
                deadline_at=self._clock.now() + self._allowance(subtask, old),
            )
        all_ids = [old.id for _, old in retries] + ids
        keys = [_new_key(t) for t, _ in retries] + [_new_key(t) for t in fresh]
        # Created in key order: the first ones take free slots before the rest queue by key.
        order = sorted(range(len(all_ids)), key=keys.__getitem__)
        drivers = [self._start(all_ids[i], ctx, frame.budget, key=keys[i]) for i in order]
        self._observe("start", frame.budget, ctx, frame.task_id)
        async with self._slot_released(frame):
            try:
                await asyncio.gather(*drivers)
            except BaseException:
                for driver in drivers:
                    driver.cancel()
                await asyncio.gather(*drivers, return_exceptions=True)
                if self._paused(frame.budget):
                    raise ToolError(await self._paused_note(frame.budget, all_ids)) from None
                raise
            finally:
                waits = self._observe("end", frame.budget, ctx, frame.task_id)
        await self._observed(waits)
        await self.steps.durable()
        return await self._report(frame.budget, all_ids)

    def _observe(
        self, event: str, budget: RunBudget, ctx: ToolContext, task_id: int | None = None
    ) -> list[Awaitable[None]]:
        waits: list[Awaitable[None]] = []
        if task_id is not None:  # a sub-agent's own delegation: part of the same run
            return waits
        for observer in self.observers:
            try:
                wait = observer(event, budget, ctx)
            except Exception:  # an observer's bug never breaks the run
                log.exception("swarm run %d: progress observer failed", budget.run_id)
            else:
                if wait is not None:
                    waits.append(wait)
        return waits

    async def _observed(self, waits: list[Awaitable[None]]) -> None:
        """Give the observers' final word a moment to land (never more, never an error)."""
        if not waits:
            return
        try:
            async with asyncio.timeout(OBSERVER_WAIT):
                await asyncio.gather(*waits)
        except Exception:  # noqa: BLE001 - a slow or broken observer never breaks the run
            log.info("swarm progress observers did not finish within %g s", OBSERVER_WAIT)

    def _start(
        self, task_id: int, parent: ToolContext, budget: RunBudget, **how: Any
    ) -> asyncio.Task[None]:
        """A driver for one task, known to :meth:`suspend`."""
        driver = asyncio.create_task(self._drive(task_id, parent, budget, **how))
        self._drivers.add(driver)
        driver.add_done_callback(self._drivers.discard)
        return driver

    # -- pausing for a shutdown ------------------------------------------------------------

    def suspend(self, why: str = "nightshift is stopping") -> int:
        """Pause every run at once (the daemon is stopping): running attempts are stopped
        without a final status and queued tasks stay queued, so the next start resumes them as
        after a crash (finished steps kept, recorded replies replayed); the delegate calls
        waiting on them return saying so. Returns how many attempts were running."""
        self.suspended = why
        running = len(self.watchdog.workers)
        for driver in list(self._drivers):
            driver.cancel()
        if self._drivers:
            log.warning("%s: %d sub-agent(s) paused (%d running); they resume at the next start",
                        why, len(self._drivers), running)  # fmt: skip
        return running

    def _paused(self, budget: RunBudget) -> bool:
        """Whether a cancelled run was paused by :meth:`suspend` (its caller still runs)."""
        task = asyncio.current_task()
        if self.suspended is None or (task is not None and task.cancelling()):
            return False
        budget.paused = self.suspended
        return True

    async def _paused_note(self, budget: RunBudget, ids: list[int]) -> str:
        tasks = [t for t in await self.repo.tasks(budget.run_id) if t.id in set(ids)]
        done = sum(t.status in FINAL for t in tasks)
        return (
            f"{self.suspended}: swarm run {budget.run_id} is paused with {done} of {len(tasks)} "
            "sub-agents finished; it resumes when nightshift starts again, and its report then "
            "comes to this conversation"
        )

    # -- frames and specs ------------------------------------------------------------------

    async def _coordinator_frame(self, ctx: ToolContext) -> _Frame:
        swarm = self.settings.agent.swarm
        key = ctx.run_id if ctx.run_id is not None else -id(ctx)
        budget = self._runs.get(key)
        if budget is None:
            run_id = await self.repo.start_run(
                actor=ctx.actor,
                goal=ctx.reason,
                agent_run_id=ctx.run_id,
                max_tokens=swarm.run_max_tokens,
                max_steps=swarm.run_max_steps,
                max_spawns=swarm.max_spawns_per_run,
                unattended=ctx.unattended,
                origin=ctx.origin,
            )
            budget = RunBudget(
                run_id=run_id,
                agent_run_id=ctx.run_id,
                max_tokens=swarm.run_max_tokens,
                max_steps=swarm.run_max_steps,
            )
            self._runs[key] = budget
            while len(self._runs) > KEEP_RUNS:
                self._runs.popitem(last=False)
        else:
            await self.repo.reopen_run(budget.run_id)
        self._runs.move_to_end(key)
        return _Frame(budget, None, 0, frozenset(self._executor.registry.names()))

    def _spec(self, task: Subtask, frame: _Frame) -> TaskSpec:
        swarm = self.settings.agent.swarm
        extra = sorted(set(task.tools) - frame.tools)
        if extra:
            raise ToolError(
                f"a sub-agent may only get tools its parent has; not available: {', '.join(extra)}"
            )
        if DELEGATE in task.tools and frame.depth + 1 >= swarm.max_depth:
            raise ToolError(
                f"a sub-agent at depth {frame.depth + 1} may not delegate "
                f"(agent.swarm.max_depth = {swarm.max_depth}); leave {DELEGATE} out"
            )
        if task.result_shape is not None:
            try:
                check_schema(task.result_shape)
            except ShapeError as exc:
                raise ToolError(f"result_shape: {exc}") from None
        seconds = min(task.deadline_seconds or swarm.child_deadline_seconds,
                      swarm.child_deadline_seconds)  # fmt: skip
        return TaskSpec(
            goal=task.goal,
            role=task.role,
            tools=tuple(dict.fromkeys(task.tools)),
            max_tokens=min(task.max_tokens or swarm.child_max_tokens, swarm.child_max_tokens),
            max_steps=min(task.max_steps or swarm.child_max_steps, swarm.child_max_steps),
            result_shape=task.result_shape,
            deadline_at=self._clock.now() + timedelta(seconds=seconds),
            expected_seconds=task.expected_seconds,
        )

    def _allowance(self, subtask: Subtask, old: SwarmTask) -> timedelta:
        """A retry's time: what it asks for (within the ceiling), else what the first had."""
        if subtask.deadline_seconds is None:
            return _allowance(old)
        ceiling = self.settings.agent.swarm.child_deadline_seconds
        return timedelta(seconds=min(subtask.deadline_seconds, ceiling))

    async def _retried(self, task: Subtask, frame: _Frame, ctx: ToolContext) -> SwarmTask:
        """The earlier subtask ``task`` retries, if the delegating agent may retry it: one of
        its own in this run, or (the coordinator, on a later turn or after a restart) a
        top-level subtask of an earlier run started by the same person."""
        assert task.retry_of is not None
        try:
            old = await self.repo.get_task(task.retry_of)
        except LookupError:
            raise ToolError(f"no subtask {task.retry_of} to retry") from None
        if old.run_id == frame.budget.run_id:
            mine = old.parent_task_id == frame.task_id
        else:
            earlier = await self.repo.get_run(old.run_id)
            mine = frame.task_id is None and old.parent_task_id is None
            mine = mine and earlier.actor == ctx.actor and earlier.status != "running"
        if not mine:
            raise ToolError(
                f"subtask {task.retry_of} is not one of yours to retry; give it as a new subtask "
                "(without retry_of)"
            )
        if old.status not in FINAL:
            raise ToolError(f"subtask {task.retry_of} is still {old.status}")
        return old

    # -- running one task ------------------------------------------------------------------

    async def _drive(
        self,
        task_id: int,
        parent: ToolContext,
        budget: RunBudget,
        *,
        key: Key = NEW,
        resume: bool = False,
    ) -> None:
        """Run a queued task to a final status, reassigning it after a stall; ``resume``: the
        task was left running by a dead process, and its attempt continues from its record.
        ``key`` orders its wait for a slot (see :mod:`daemon.agent.swarm.slots`)."""
        swarm = self.settings.agent.swarm
        await self._slots.acquire(key)
        hold = _Hold(held=True)
        try:
            while True:
                task = await self.repo.get_task(task_id)
                claim: Awaitable[int] | None = None
                replay: list[SwarmStep] = []
                if resume and task.status == "running":
                    resume = False
                    epoch, replay = await self.repo.resume_task(
                        task_id, self._clock.now() + _allowance(task)
                    )
                    task = await self.repo.get_task(task_id)
                    claim = _ready(epoch)
                elif budget.stopped is not None:
                    await self._cancel_queued(task, f"not started: {budget.stopped}")
                    return
                else:  # claimed while the first model request is on its way
                    claim = asyncio.ensure_future(self.repo.claim(task.id))
                epoch, outcome = await self._attempt(task, parent, budget, claim, replay, hold)
                again = outcome.status == "stalled" and task.attempt < swarm.max_attempts
                if not again:  # the next sub-agent starts while this one's record is written
                    hold.held = False
                    self._slots.release()
                await self.steps.durable()
                await self._finish(task.id, epoch, outcome)
                if not again:
                    return
                # It is late already: its retry keeps the slot instead of queueing again. (Not
                # torn from its stalled ending by a pause: a stalled task is final.)
                await asyncio.shield(
                    self.repo.reassign(
                        task_id,
                        reason=f"attempt {task.attempt} {outcome.reason}; reassigned",
                        deadline_at=self._clock.now() + _allowance(task),
                    )
                )
        finally:
            if hold.held:
                self._slots.release()

    async def _cancel_queued(self, task: SwarmTask, reason: str) -> None:
        epoch = await self.repo.claim(task.id)
        await self.repo.finish(task.id, epoch, "cancelled", reason=reason)

    async def _attempt(
        self,
        task: SwarmTask,
        parent: ToolContext,
        budget: RunBudget,
        claim: Awaitable[int],
        replay: list[SwarmStep],
        hold: _Hold,
    ) -> tuple[int, Outcome]:
        """One attempt, run until it ends; its epoch and outcome (not yet recorded)."""
        swarm = self.settings.agent.swarm
        loop = asyncio.get_running_loop()
        now = loop.time()
        left = swarm.child_deadline_seconds
        if task.deadline_at is not None:
            left = max((task.deadline_at - self._clock.now()).total_seconds(), 0.0)
        ctx = ToolContext(
            actor=parent.actor,
            reason=f"sub-agent {task.id}: {task.goal}"[:500],
            settings=parent.settings,
            clock=parent.clock,
            run_id=parent.run_id,
            unattended=parent.unattended,
            origin=parent.origin,
            services=parent.services,
        )
        attempt = Attempt(
            task=task, claim=claim, budget=budget, settings=self.settings, llm=self._llm,
            executor=self._executor, steps=self.steps, ctx=ctx, replay=list(replay),
        )  # fmt: skip
        frame = _Frame(budget, task.id, task.depth, frozenset(task.tools), hold)
        worker: Worker | None = None

        def progress(event: str) -> None:
            if worker is not None:
                worker.progress(event)

        job = asyncio.create_task(self._run_in_frame(attempt, frame, progress))
        worker = Worker(task_id=task.id, job=job, last=now, deadline=now + left)
        self.watchdog.watch(worker)
        try:
            outcome = await asyncio.shield(job)
        except asyncio.CancelledError:
            if worker.ended is None:  # cancelled from outside: paused, or the parent gave up
                job.cancel()
                with contextlib.suppress(BaseException):
                    await job
                epoch = await attempt.claimed()
                await self.steps.durable()
                if self.suspended is None:  # paused: left running, for the next start
                    why = "cancelled by its parent"
                    await self._finish(task.id, epoch, Outcome(status="cancelled", reason=why))
                raise
            outcome = Outcome(status=worker.ended, reason=worker.why)
        except Exception as exc:  # a bug in the attempt: the task says so, the run goes on
            log.exception("sub-agent %d crashed", task.id)
            outcome = Outcome(status="failed", reason=f"crashed: {type(exc).__name__}: {exc}")
        finally:
            self.watchdog.forget(task.id)
            self.replayed += attempt.replayed
            self.probes.extend(attempt.probes)
        if outcome.status == "deadline":
            outcome = Outcome(status="failed", reason=worker.why)
        return await attempt.claimed(), outcome

    async def _run_in_frame(
        self, attempt: Attempt, frame: _Frame, progress: Callable[[str], None]
    ) -> Outcome:
        _frame.set(frame)
        model_progress.set(progress)
        return await run_attempt(attempt)

    async def _finish(self, task_id: int, epoch: int, outcome: Outcome) -> None:
        try:
            await self.repo.finish(
                task_id, epoch, outcome.status, reason=outcome.reason, result=outcome.result
            )
        except FencedError:
            log.warning("sub-agent %d: stale attempt (epoch %d) not recorded", task_id, epoch)

    @contextlib.asynccontextmanager
    async def _slot_released(self, frame: _Frame) -> AsyncIterator[None]:
        """A sub-agent waiting for its own children gives up its slot meanwhile (else parents
        holding every slot would wait forever for children that cannot start)."""
        if frame.hold is None:
            yield
            return
        frame.hold.held = False
        self._slots.release()
        try:
            yield
        finally:
            await self._slots.acquire(PARENT)  # it was running: before anyone new
            frame.hold.held = True

    # -- the report ------------------------------------------------------------------------

    async def _report(
        self, budget: RunBudget, ids: list[int], note: str | None = None
    ) -> dict[str, Any]:
        """Finish the run truthfully (done, partial, cancelled; ``note`` says more) and return
        the summary the delegating agent sees."""
        tasks = await self.repo.tasks(budget.run_id)
        chosen = [t for t in tasks if t.id in set(ids)]
        done = all(t.status == "done" for t in chosen)
        status = "done" if done else ("cancelled" if budget.stopped else "partial")
        unfinished = sum(t.status != "done" for t in chosen)
        why = budget.stopped or (None if done else f"{unfinished} of {len(chosen)} not done")
        if note:
            why = f"{note}; {why}" if why else note
        await self.repo.finish_run(budget.run_id, status, why)
        return await self._summary(budget, ids)

    async def _summary(self, budget: RunBudget, ids: list[int]) -> dict[str, Any]:
        rows = {task.id: task for task in await self.repo.tasks(budget.run_id)}
        return summarise(budget, [rows[i] for i in ids], self.settings.agent.tool_output_chars)

    # -- resuming after a restart ----------------------------------------------------------

    async def resume(self, notify: Notify | None = None) -> list[dict[str, Any]]:
        """Take up every run a previous process left running; returns each one's report."""
        reports = []
        for run in await self.repo.unfinished_runs():
            if self.suspended is not None:  # stopping again before all were taken up
                break
            try:
                reports.append(await self._resume_run(run, notify))
            except Exception:  # one broken run must not keep the others from resuming
                log.exception("could not resume swarm run %d", run.id)
        return reports

    async def _resume_run(self, run: SwarmRun, notify: Notify | None) -> dict[str, Any]:
        budget = RunBudget(
            run_id=run.id, agent_run_id=run.agent_run_id, max_tokens=run.max_tokens,
            max_steps=run.max_steps, tokens=run.tokens, steps=run.steps, resumed=True,
        )  # fmt: skip
        parent = ToolContext(
            actor=run.actor, reason=run.goal, settings=self.settings, clock=self._clock,
            run_id=run.agent_run_id, unattended=run.unattended, origin=run.origin,
            services=self._services,
        )  # fmt: skip
        tasks = await self.repo.tasks(run.id)
        await self.repo.clear_reason(run.id)  # no longer paused
        unfinished = [t for t in tasks if t.status in ("queued", "running")]
        log.warning("resuming swarm run %d: %d of %d sub-agents unfinished", run.id,
                    len(unfinished), len(tasks))  # fmt: skip
        self._observe("start", budget, parent)  # a fresh progress message where it came from
        try:
            # deepest first: a parent's interrupted delegate call is settled by its children
            for depth in sorted({t.depth for t in unfinished}, reverse=True):
                keyed = sorted(
                    (AGAIN if t.status == "running" else _new_key(t), t.id)
                    for t in unfinished
                    if t.depth == depth
                )  # created in key order: the first ones take free slots before the rest queue
                drivers = [self._start(i, parent, budget, resume=True, key=k) for k, i in keyed]
                try:
                    await asyncio.gather(*drivers)
                except asyncio.CancelledError:
                    for driver in drivers:
                        driver.cancel()
                    await asyncio.gather(*drivers, return_exceptions=True)
                    if not self._paused(budget):
                        raise
                    return {"run": run.id, "paused": self.suspended}
        finally:
            waits = self._observe("end", budget, parent)
        await self._observed(waits)
        await self.steps.durable()
        top = [t.id for t in tasks if t.parent_task_id is None]
        report = await self._report(
            budget, top, note="resumed after a restart; the coordinator's turn was not"
        )
        report["resumed"] = [t.id for t in unfinished]
        if notify is not None:
            try:
                await notify(await self.repo.get_run(run.id), report)
            except Exception:
                log.exception("could not tell the owner of swarm run %d", run.id)
        return report

    def apply_settings(self) -> None:
        """After a reload: the concurrency limit follows ``agent.swarm.concurrency`` (running
        sub-agents are not stopped; a lower limit takes hold as they finish)."""
        self._limit = self.settings.agent.swarm.concurrency
        self._slots.resize(self._limit)

    def live(self) -> int:
        """Attempts running now."""
        return len(self.watchdog.workers)

    async def close(self) -> None:
        """Pause what still runs (see :meth:`suspend`) and stop the watchdog."""
        if self.suspended is None:
            self.suspend()
        if self._drivers:
            await asyncio.wait(set(self._drivers), timeout=OBSERVER_WAIT)
        await self.watchdog.close()
        await self.steps.durable()
        when = self._clock.now().strftime("%Y-%m-%d %H:%M:%S UTC")
        why = f"paused: {self.suspended} ({when}); resumes at the next start"
        with contextlib.suppress(Exception):  # the store may be gone already: only a note
            await self.repo.note_paused(why)


def _new_key(task: Subtask | SwarmTask) -> Key:
    """A new (or still queued) subtask's place in the queue for a slot: longest expected
    first."""
    return (NEW[0], -(task.expected_seconds or 0.0))


def _carried(task: Subtask, old: SwarmTask) -> Subtask:
    """A retry of an earlier run's subtask, as a new one: what it leaves out is carried over
    (its tools are checked against the delegating agent's again)."""
    return task.model_copy(
        update={
            "role": task.role if "role" in task.model_fields_set else old.role,
            "tools": task.tools or list(old.tools),
            "result_shape": task.result_shape or old.result_shape,
            "max_steps": task.max_steps or old.max_steps,
            "max_tokens": task.max_tokens or old.max_tokens,
            "expected_seconds": task.expected_seconds or old.expected_seconds,
            "retry_of": None,
        }
    )


def _ready(epoch: int) -> asyncio.Future[int]:
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    future.set_result(epoch)
    return future


def _allowance(task: SwarmTask) -> timedelta:
    """The time a task was given (from its creation to its first deadline): each new attempt
    gets as much again."""
    if task.deadline_at is None:
        return timedelta(seconds=600)
    return max(task.deadline_at - task.created_at, timedelta(seconds=1))
