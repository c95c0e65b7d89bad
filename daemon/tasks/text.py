"""The words of task listings, details and replies (no LLM needed for any)."""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import ValidationError

from memory.tasks import StoredTask, TaskRun

MAX_ERROR_CHARS = 160
_MANUAL = re.compile(r"manual:([^Z]+Z)(?::\w+)?")


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskView:
    """A task as a person sees it: its definition plus what the scheduler knows now."""

    task: StoredTask
    schedule: str  # describe(): "every 15m", "cron '0 9 * * mon-fri' (Europe/Berlin)" …
    next_run: datetime | None
    state: str  # active | paused: REASON | disabled | done
    last: TaskRun | None


def state_of(task: StoredTask, next_run: datetime | None) -> str:
    if not task.enabled or not task.spec.enabled:
        return "disabled"
    if task.paused_reason is not None:
        return f"paused: {task.paused_reason}"
    if next_run is None and task.spec.at is not None:
        return "done"  # a one-shot whose time has passed
    return "active"


def delivery_of(run: TaskRun, task: StoredTask) -> str:
    """pending | delivered | failed (outbox) · suppressed (no news) · - (nothing to deliver)."""
    if run.delivery is not None:
        return run.delivery
    if run.status == "ok" and (run.output or "").strip() == task.spec.no_news_token:
        return "suppressed (no news)"
    return "-"


def when(value: datetime | None, now: datetime) -> str:
    """``2026-03-02 09:00 UTC (in 59m)``; ``-`` for None."""
    if value is None:
        return "-"
    value = value.astimezone(UTC)
    seconds = (value - now).total_seconds()
    relative = f"in {duration(seconds)}" if seconds >= 0 else f"{duration(-seconds)} ago"
    return f"{value:%Y-%m-%d %H:%M} UTC ({relative})"


def duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        hours, minutes = divmod(seconds // 60, 60)
        return f"{hours}h{minutes:02d}m" if minutes else f"{hours}h"
    days, hours = divmod(seconds // 3600, 24)
    return f"{days}d{hours}h" if hours else f"{days}d"


def action_of(task: StoredTask) -> str:
    spec = task.spec
    if spec.command is not None:
        return "command: " + shlex.join(spec.command)
    if spec.builtin is not None:
        return f"built-in: {spec.builtin}"
    return f"prompt: {spec.prompt}"


def listing(views: Sequence[TaskView], now: datetime) -> str:
    if not views:
        return (
            "No tasks. An admin can add one, e.g. "
            "`tasks add disk-report every 1h prompt Check disk usage`."
        )
    lines = [f"{len(views)} task(s):"]
    for view in views:
        last = "never ran"
        if view.last is not None:
            last = f"last {view.last.status}, delivery {delivery_of(view.last, view.task)}"
        nxt = f"next {when(view.next_run, now)}" if view.next_run else "no next run"
        lines.append(f"• {view.task.name} — {view.schedule}; {view.state}; {nxt}; {last}")
    return "\n".join(lines)


def details(view: TaskView, runs: Sequence[TaskRun], now: datetime) -> str:
    task, spec = view.task, view.task.spec
    origin = "config file" if task.source == "config" else f"added by {task.owner}"
    target = spec.deliver_to + (f" (thread {spec.thread})" if spec.thread else "")
    policy = (
        f"catch-up {spec.catch_up}, retries {spec.retries}, timeout {spec.timeout_seconds:g}s, "
        f"at most {spec.max_concurrency} at a time" + (", critical" if spec.critical else "")
    )
    lines = [
        f"Task {task.name} ({origin}, since {task.created_at:%Y-%m-%d %H:%M} UTC)",
        f"  schedule:   {view.schedule}",
        f"  state:      {view.state}",
        f"  next run:   {when(view.next_run, now)}",
        f"  {action_of(task)}",
    ]
    if spec.precheck:
        lines.append(f"  precheck:   {shlex.join(spec.precheck)}")
    lines += [f"  deliver to: {target}", f"  policy:     {policy}"]
    if task.consecutive_failures:
        lines.append(f"  failures:   {task.consecutive_failures} in a row")
    if not runs:
        lines.append("No runs yet.")
        return "\n".join(lines)
    lines.append(f"Last {len(runs)} run(s), newest first (slot · attempt · status · tokens · "
                 "delivery):")  # fmt: skip
    for run in runs:
        lines.append("  " + run_line(run, task))
    return "\n".join(lines)


def run_line(run: TaskRun, task: StoredTask) -> str:
    manual = _MANUAL.fullmatch(run.slot)  # manual:TIME or manual:TIME:NONCE
    slot = f"manual {_short(manual.group(1))}" if manual else _short(run.slot)
    line = (
        f"#{run.id} {slot} · attempt {run.attempt} · {run.status} · {run.tokens} tokens · "
        f"{delivery_of(run, task)}"
    )
    if run.error:
        error = " ".join(run.error.split())
        cut = error[:MAX_ERROR_CHARS] + ("…" if len(error) > MAX_ERROR_CHARS else "")
        line += f" · error: {cut}"
    return line


def _short(db_time: str) -> str:
    try:
        value = datetime.fromisoformat(db_time).astimezone(UTC)
    except ValueError:
        return db_time
    return f"{value:%Y-%m-%d %H:%M}" + (f":{value:%S}" if value.second else "") + " UTC"


def added(view: TaskView, now: datetime) -> str:
    name = view.task.name
    return (
        f"Added task {name}: {view.schedule}, next run {when(view.next_run, now)}; results go "
        f"to {view.task.spec.deliver_to}. `tasks show {name}` shows its runs, "
        f"`tasks remove {name}` deletes it."
    )


def explain(exc: ValidationError) -> str:
    """Pydantic errors as one readable line each: ``field: what is wrong``."""
    lines = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field (check the spelling)"
        lines.append(f"{where}: {message}" if where else message)
    return "; ".join(lines)
