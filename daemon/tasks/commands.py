"""Task commands that need no LLM, shared by every chat channel, the CLI and the agent's tools.

tasks                         every task: schedule, state, next run, last run and its delivery
tasks show NAME               the definition and the last 20 runs
tasks add NAME every 15m|cron "0 9 * * mon-fri"|at 2026-12-01T09:00Z [in ZONE] [to TARGET]
          prompt TEXT…  |  command /path/prog args                           (admins)
tasks pause NAME [why] · tasks resume NAME · tasks remove NAME · tasks run NAME  (admins)
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from daemon.core.access import Action
from daemon.core.clock import Clock
from daemon.core.errors import CommandError, TaskConflict, TaskRejected, UnknownTask
from daemon.core.tasks import CHANNELS, TaskSpec
from daemon.tasks import text as task_text
from daemon.tasks.text import TaskView
from memory.tasks import StoredTask, TaskRepo

if TYPE_CHECKING:
    from daemon.tasks.scheduler import TaskScheduler

__all__ = [
    "SCHEDULER_OFF",
    "TASK_WORDS",
    "Reply",
    "TaskCommands",
    "TaskConflict",
    "TaskRejected",
    "TaskService",
    "UnknownTask",
    "delivery_from",
    "parse_add",
]

TASK_WORDS = ("tasks",)
SCHEDULER_OFF = (
    "The scheduler is off ([scheduler] enabled = false in the config), so there are no tasks. "
    "Turn it on and reload to use them."
)
WRITE_VERBS = ("add", "pause", "resume", "remove", "run")
RUNS_SHOWN = 20
USAGE = (
    'Usage: tasks · tasks show NAME · tasks add NAME every 15m|cron "0 9 * * mon-fri"|'
    "at 2026-12-01T09:00Z [in Europe/Berlin] [to slack:C0OPS] prompt TEXT… "
    "(or: … command /path/prog args) · tasks pause NAME [why] · tasks resume NAME · "
    "tasks remove NAME · tasks run NAME"
)
_KEYWORDS = ("every", "cron", "at", "in", "to")
_ACTION = re.compile(r"\s(prompt|command)(?:\s+|$)")
_QUOTES = str.maketrans({"“": '"', "”": '"', "„": '"', "‘": "'", "’": "'"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    text: str
    ok: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskService:
    """The task operations every front end shares (chat and CLI commands, API, agent tools)."""

    scheduler: TaskScheduler
    repo: TaskRepo
    clock: Clock
    channels: frozenset[str] | None = None  # the enabled channels; None: any known channel

    async def get(self, name: str) -> StoredTask:
        try:
            return await self.repo.get(name)
        except LookupError:
            raise UnknownTask(name) from None

    async def add(self, spec: TaskSpec, owner: str) -> StoredTask:
        """Add a run-time task; refuses built-ins, name clashes and one-shots in the past."""
        from daemon.core.errors import ScheduleError
        from daemon.core.schedule import parse_schedule

        if spec.builtin is not None:
            raise TaskRejected("built-in jobs cannot be added as tasks; give a prompt or command")
        channel = spec.deliver_to.split(":", 1)[0]
        if self.channels is not None and channel not in self.channels:
            raise TaskRejected(
                f"deliver_to {spec.deliver_to!r}: channel {channel!r} is not enabled on this "
                f"daemon; deliver to {' or '.join(sorted(self.channels)) or 'an enabled channel'}"
                f", or set [channels.{channel}] enabled = true in the config and restart"
            )
        try:
            existing = await self.repo.get(spec.name)
        except LookupError:
            existing = None
        if existing is not None and existing.source != "runtime":
            raise TaskConflict(
                f"task {spec.name!r} is defined in the config file; change it there and reload"
            )
        if existing is not None:
            raise TaskConflict(
                f"a task named {spec.name!r} exists already (see `tasks show {spec.name}`); "
                f"pick another name, or `tasks remove {spec.name}` first to replace it"
            )
        now = self.clock.now()
        try:
            schedule = self.scheduler.schedule_of(spec, now)
            if schedule.at is not None:  # a one-shot must still be ahead of us
                parse_schedule(at=schedule.at, timezone=schedule.timezone, now=now)
        except ScheduleError as exc:
            raise TaskRejected(str(exc)) from None
        return await self.scheduler.add(spec, owner)

    async def remove(self, name: str) -> StoredTask:
        task = await self.get(name)
        if task.source != "runtime":
            raise TaskRejected(
                f"task {name!r} comes from the config file; delete it there and reload "
                f"(or `tasks pause {name}` to stop it for now)"
            )
        await self.scheduler.remove(name)
        return task

    async def view(self, task: StoredTask) -> TaskView:
        from daemon.core.errors import ScheduleError
        from daemon.core.schedule import describe

        try:
            schedule = describe(self.scheduler.schedule_of(task.spec, task.created_at))
        except ScheduleError as exc:
            schedule = f"invalid schedule: {exc}"
        next_run = self.scheduler.next_run(task.name)
        runs = await self.repo.runs(task.id, limit=1)
        return TaskView(
            task=task,
            schedule=schedule,
            next_run=next_run,
            state=task_text.state_of(task, next_run),
            last=runs[0] if runs else None,
        )

    async def views(self) -> list[TaskView]:
        return [await self.view(task) for task in await self.repo.all()]


class TaskCommands:
    """Answers the commands above with plain text; the caller checks roles with ``required``."""

    def __init__(
        self,
        scheduler: TaskScheduler,
        repo: TaskRepo,
        clock: Clock,
        channels: frozenset[str] | None = None,
    ) -> None:
        self.service = TaskService(scheduler=scheduler, repo=repo, clock=clock, channels=channels)
        self._clock = clock

    @staticmethod
    def required(word: str, rest: str = "") -> Action | None:
        """The permission a command needs (listing: viewers; changes: admins), or None."""
        if word not in TASK_WORDS:
            return None
        verb = rest.split(maxsplit=1)[0].lower() if rest.strip() else ""
        return "admin" if verb in WRITE_VERBS else "ask"

    async def run(self, word: str, rest: str, actor: str, origin: str | None = None) -> str:
        """Run one command; ``origin`` ("channel|room|thread") is where `tasks add` delivers."""
        return (await self.reply(word, rest, actor, origin)).text

    async def reply(self, word: str, rest: str, actor: str, origin: str | None = None) -> Reply:
        """Like run, also saying whether it worked (the CLI's exit status)."""
        try:
            return Reply(text=await self._dispatch(rest.strip(), actor, origin))
        except CommandError as exc:
            return Reply(text=f"{exc}\n{USAGE}", ok=False)
        except UnknownTask as exc:
            return Reply(text=f"{exc} (see `tasks`)", ok=False)
        except TaskRejected as exc:
            return Reply(text=str(exc), ok=False)

    async def _dispatch(self, rest: str, actor: str, origin: str | None) -> str:
        verb, _, args = rest.partition(" ")
        verb, args = verb.lower(), args.strip()
        now = self._clock.now()
        if verb in ("", "list"):
            return task_text.listing(await self.service.views(), now)
        if verb == "help":
            return USAGE
        if verb == "add":
            return await self._add(args, actor, origin)
        if verb not in ("show", *WRITE_VERBS):
            raise CommandError(f"unknown tasks command {verb!r}")
        name, _, why = args.partition(" ")
        if not name:
            raise CommandError(f"say which task: tasks {verb} NAME")
        task = await self.service.get(name)
        if verb == "show":
            runs = await self.service.repo.runs(task.id, limit=RUNS_SHOWN)
            return task_text.details(await self.service.view(task), runs, now)
        if verb == "remove":
            await self.service.remove(name)
            return f"Removed task {name} and its run history."
        if verb == "run":
            return await self._run_now(task)
        if verb == "pause":
            if task.paused_reason is not None:
                return f"Task {name} is already paused ({task.paused_reason})."
            reason = f"paused by {actor}" + (f": {why.strip()}" if why.strip() else "")
            await self.service.scheduler.pause(name, reason)
            return f"Paused task {name}; it will not run until `tasks resume {name}`."
        if task.paused_reason is None:
            return f"Task {name} is not paused (see `tasks show {name}`)."
        resumed = await self.service.scheduler.resume(name)
        view = await self.service.view(resumed)
        hint = "" if view.state == "active" else f" (it is {view.state})"
        return f"Resumed task {name}{hint}; next run {task_text.when(view.next_run, now)}."

    async def _run_now(self, task: StoredTask) -> str:
        run_id = await self.service.scheduler.run_now(task.name)
        if run_id is not None:
            return (
                f"Started task {task.name} (run #{run_id}); `tasks show {task.name}` shows how "
                "it went."
            )
        runs = await self.service.repo.runs(task.id, limit=1)
        why = runs[0].error if runs and runs[0].status == "skipped" and runs[0].error else ""
        return f"Task {task.name} did not start: {why or 'a run is still going'}."

    async def _add(self, args: str, actor: str, origin: str | None) -> str:
        fields = parse_add(args, origin)
        try:
            spec = TaskSpec.model_validate(fields)
        except ValidationError as exc:
            raise CommandError(task_text.explain(exc)) from None
        task = await self.service.add(spec, owner=actor)
        return task_text.added(await self.service.view(task), self._clock.now())


def parse_add(text: str, origin: str | None = None) -> dict[str, Any]:
    """``NAME every 15m [in ZONE] [to TARGET] prompt TEXT…`` → TaskSpec fields (unvalidated)."""
    from datetime import datetime

    from daemon.core.errors import ScheduleError
    from daemon.core.schedule import parse_plain_interval

    found = _ACTION.search(" " + text)
    if found is None:
        raise CommandError("say what to do: … prompt TEXT (asks the agent) or … command PROG ARGS")
    head, action, body = text[: found.start()], found.group(1), text[found.end() - 1 :].strip()
    if not body:
        what = "ask the agent" if action == "prompt" else "run"
        raise CommandError(f"{action} is empty: write what to {what}")
    try:
        tokens = shlex.split(head.translate(_QUOTES))
    except ValueError as exc:
        raise CommandError(f"cannot read {head.strip()!r}: {exc} (close the quotes)") from None
    if not tokens or tokens[0] in _KEYWORDS:
        raise CommandError("give the task a name first: tasks add NAME every 15m prompt …")
    fields: dict[str, Any] = {"name": tokens[0], action: body}
    given: dict[str, list[str]] = {}
    current: list[str] | None = None
    for token in tokens[1:]:
        if token.lower() in _KEYWORDS:
            if token.lower() in given:
                raise CommandError(f"{token.lower()!r} is given twice")
            current = given[token.lower()] = []
        elif current is None:
            raise CommandError(
                f"unexpected {token!r} after the name: write every/cron/at, then optionally "
                "in ZONE and to TARGET"
            )
        else:
            current.append(token)
    for key, values in given.items():
        if not values:
            raise CommandError(f"{key!r} needs a value")
        if key in ("in", "to") and len(values) > 1:
            raise CommandError(f"{key!r} takes one word, got {' '.join(values)!r}")
    schedules = [key for key in ("every", "cron", "at") if key in given]
    if len(schedules) != 1:
        raise CommandError(
            'give exactly one schedule: every 15m, cron "0 9 * * mon-fri" or at 2026-12-01T09:00Z'
        )
    try:
        if "every" in given:
            fields["interval_seconds"] = parse_plain_interval("".join(given["every"]))
        elif "cron" in given:
            fields["cron"] = " ".join(given["cron"])
        else:
            fields["at"] = datetime.fromisoformat(" ".join(given["at"]))
    except ScheduleError as exc:
        raise CommandError(str(exc)) from None
    except ValueError:
        raise CommandError(
            f"at {' '.join(given['at'])!r} is not an ISO 8601 time: write e.g. "
            "2026-12-01T09:00Z, or 2026-12-01 09:00 with `in Europe/Berlin`"
        ) from None
    if "in" in given:
        fields["timezone"] = given["in"][0]
    fields.update(delivery_from(origin) if "to" not in given else {"deliver_to": given["to"][0]})
    return fields


def delivery_from(origin: str | None) -> dict[str, str]:
    """Where a request came from ("channel|room|thread") as TaskSpec delivery fields."""
    if not origin or origin.count("|") != 2:
        return {}
    channel, room, thread = origin.split("|")
    if channel not in CHANNELS:
        return {}
    out = {"deliver_to": f"{channel}:{room}" if room else channel}
    if thread:
        out["thread"] = thread
    return out
