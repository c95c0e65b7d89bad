"""Swarm step rows, batched: one transaction per loop tick for every worker's steps.

Every statement carries the worker's epoch and refuses a stale one (``WHERE epoch = ?``), so a
cancelled, replaced worker's late writes are counted as refused, never applied. A side-effecting
step's intent is flushed (:meth:`StepLog.durable`) before the step acts.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from daemon.core.clock import Clock
from daemon.core.redact import redact, redact_data
from memory._codec import dump_json, to_db_time
from memory.store import SqliteStore

__all__ = ["INSERT_STEP", "StepLog"]

log = logging.getLogger(__name__)

_FENCE = "EXISTS (SELECT 1 FROM swarm_tasks WHERE id = ? AND epoch = ?)"
INSERT_STEP = (
    "INSERT INTO swarm_steps (task_id, epoch, step_index, kind, name, state, input, output,"
    " error, tokens, duration_ms, created_at, finished_at, phase)"
    f" SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? WHERE {_FENCE}"
)
_FINISH_STEP = (
    "UPDATE swarm_steps SET state = ?, output = ?, error = ?, duration_ms = ?, finished_at = ?"
    f" WHERE task_id = ? AND epoch = ? AND step_index = ? AND {_FENCE}"
)
_PHASE = (
    "UPDATE swarm_steps SET phase = ? WHERE task_id = ? AND epoch = ? AND step_index = ?"
    f" AND state = 'intent' AND {_FENCE}"
)
_PROGRESS = (
    "UPDATE swarm_tasks SET tokens = tokens + ?, steps = steps + ?, progress_at = ?"
    " WHERE id = ? AND epoch = ?"
)
_RUN_PROGRESS = "UPDATE swarm_runs SET tokens = tokens + ?, steps = steps + ? WHERE id = ?"


class StepLog:
    """Batches step rows and progress counters into one transaction per loop tick.

    Writes queued in the same tick share a BEGIN/COMMIT and take one ``executemany`` hop per
    statement kind (new steps, then outcomes, then counters: an intent and its outcome may share
    a batch), whatever the number of workers. Writes at a stale epoch are refused by the
    statements and counted in :attr:`refused`. :meth:`durable` waits until everything queued so
    far is committed.
    """

    def __init__(self, store: SqliteStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._steps: list[tuple[Any, ...]] = []
        self._outcomes: list[tuple[Any, ...]] = []
        self._phases: list[tuple[Any, ...]] = []
        self._progress: dict[tuple[int, int], list[Any]] = {}  # (task, epoch) → tokens, steps, at
        self._runs: dict[int, list[int]] = {}  # run → tokens, steps
        self._flusher: asyncio.Task[None] | None = None
        self.refused = 0
        self.batches = 0
        self.statements = 0

    def _now(self) -> str:
        return to_db_time(self._clock.now())

    def step(
        self,
        task_id: int,
        epoch: int,
        index: int,
        *,
        run_id: int,
        kind: str,
        name: str | None,
        state: str = "done",
        input: Any = None,  # noqa: A002 - the column's name
        output: Any = None,
        error: str | None = None,
        tokens: int = 0,
        duration_ms: float = 0.0,
        phase: str | None = None,
    ) -> None:
        """Queue a step row (and the task's and run's counters when it is done)."""
        now = self._now()
        finished = None if state == "intent" else now
        self._steps.append(
            (task_id, epoch, index, kind, name, state,
             dump_json(redact_data(input), lenient=True),
             dump_json(redact_data(output), lenient=True),
             None if error is None else redact(error), tokens, duration_ms, now, finished,
             phase, task_id, epoch)
        )  # fmt: skip
        if state != "intent":
            self._count(task_id, epoch, run_id, tokens, now)
        self._wake()

    def phase(self, task_id: int, epoch: int, index: int, phase: str) -> None:
        """Queue an intent's new phase (``acting`` once it is let through to act)."""
        self._phases.append((phase, task_id, epoch, index, task_id, epoch))
        self._wake()

    def outcome(
        self,
        task_id: int,
        epoch: int,
        index: int,
        *,
        run_id: int,
        ok: bool,
        output: Any,
        error: str | None,
        duration_ms: float,
    ) -> None:
        """Queue the outcome of a step whose intent was recorded."""
        now = self._now()
        self._outcomes.append(
            ("done" if ok else "failed", dump_json(redact_data(output), lenient=True),
             None if error is None else redact(error), duration_ms, now,
             task_id, epoch, index, task_id, epoch)
        )  # fmt: skip
        self._count(task_id, epoch, run_id, 0, now)
        self._wake()

    def _count(self, task_id: int, epoch: int, run_id: int, tokens: int, now: str) -> None:
        task = self._progress.setdefault((task_id, epoch), [0, 0, now])
        task[0] += tokens
        task[1] += 1
        task[2] = now
        run = self._runs.setdefault(run_id, [0, 0])
        run[0] += tokens
        run[1] += 1

    def _wake(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # let the other workers of this tick queue theirs
        while self._steps or self._outcomes or self._phases or self._progress:
            steps, self._steps = self._steps, []
            phases, self._phases = self._phases, []
            outcomes, self._outcomes = self._outcomes, []
            progress, self._progress = self._progress, {}
            runs, self._runs = self._runs, {}
            try:
                async with self._store.write() as db:
                    if steps:
                        cur = await db.executemany(INSERT_STEP, steps)
                        self.refused += len(steps) - max(cur.rowcount, 0)
                    if phases:
                        await db.executemany(_PHASE, phases)
                    if outcomes:
                        cur = await db.executemany(_FINISH_STEP, outcomes)
                        self.refused += len(outcomes) - max(cur.rowcount, 0)
                    if progress:
                        await db.executemany(
                            _PROGRESS,
                            [(t, n, at, task, epoch) for (task, epoch), (t, n, at) in
                             progress.items()],
                        )  # fmt: skip
                    if runs:
                        await db.executemany(
                            _RUN_PROGRESS, [(t, n, run) for run, (t, n) in runs.items()]
                        )
                    self.statements += sum(map(bool, (steps, phases, outcomes, progress, runs)))
                self.batches += 1
            except Exception:  # a lost batch is logged; the run itself goes on
                log.exception("could not write %d swarm step rows", len(steps) + len(outcomes))

    async def durable(self) -> None:
        """Wait until every write queued so far is committed."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)
