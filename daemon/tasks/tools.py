"""Tools that schedule, list and cancel recurring tasks on a person's behalf.

Creating or cancelling a task is an admin's right, checked here against the person the request
came from (``ctx.actor``), and never allowed in an unattended run: a scheduled task must not
spawn more tasks. The executor audits every call, refusals included.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from daemon.agent.tools.base import Tier, Tool, ToolContext, tool
from daemon.core.errors import ToolError
from daemon.core.tasks import TaskSpec
from daemon.tasks.commands import TaskService


@tool(tier=Tier.WRITE)
async def schedule_task(
    ctx: ToolContext,
    name: str,
    prompt: str,
    cron: str | None = None,
    every: str | None = None,
    at: str | None = None,
    timezone: str | None = None,
    deliver_to: str | None = None,
) -> dict[str, Any]:
    """Schedule a task you will run unattended later (once or repeatedly); admins only.

    Give exactly one of cron, every or at. Each run's answer is delivered to chat; an answer of
    exactly NO_NEWS is not delivered.

    Args:
        name: Short unique name: lowercase letters, digits, '-', '_' or '.', e.g. "disk-report".
        prompt: What to do at each run, as an instruction, e.g. "Report volumes above 80% full".
        cron: Crontab line, e.g. "0 9 * * mon-fri" (weekday 0 and 7 = Sunday).
        every: Interval, e.g. "15m", "1.5h", "1d" or "1h30m".
        at: One time, ISO 8601, e.g. "2026-12-01T09:00" (in timezone) or "2026-12-01T08:00Z".
        timezone: IANA time zone for cron and at, e.g. "Europe/Berlin"; default the daemon's.
        deliver_to: Where results go, e.g. "slack:C0OPS"; default: this conversation.
    """
    from daemon.core.errors import ScheduleError, TaskRejected
    from daemon.core.schedule import parse_plain_interval
    from daemon.tasks.commands import delivery_from
    from daemon.tasks.text import added, explain

    service = _service(ctx, "schedule tasks")
    fields: dict[str, Any] = {"name": name, "prompt": prompt, "cron": cron, "at": at}
    if every is not None:
        try:
            fields["interval_seconds"] = parse_plain_interval(every)
        except ScheduleError as exc:
            raise ToolError(f"the task was not scheduled: every: {exc}") from None
    if timezone is not None:
        fields["timezone"] = timezone
    fields.update({"deliver_to": deliver_to} if deliver_to else delivery_from(ctx.origin))
    try:
        spec = TaskSpec.model_validate(fields)
    except ValidationError as exc:
        raise ToolError(f"the task was not scheduled: {explain(exc)}") from None
    try:
        task = await service.add(spec, owner=ctx.actor)
    except TaskRejected as exc:
        raise ToolError(f"the task was not scheduled: {exc}") from None
    view = await service.view(task)
    return {
        "scheduled": task.name,
        "schedule": view.schedule,
        "next_run": view.next_run.isoformat() if view.next_run else None,
        "deliver_to": spec.deliver_to,
        "summary": added(view, ctx.clock.now()),
    }


@tool(tier=Tier.READ_ONLY)
async def list_tasks(ctx: ToolContext) -> list[dict[str, Any]]:
    """Every scheduled task: schedule, state, next run, and how its last run went."""
    from daemon.tasks.text import action_of, delivery_of

    service = _task_service(ctx)
    if service is None:
        raise ToolError("the scheduler is off ([scheduler] enabled = false): there are no tasks")
    out = []
    for view in await service.views():
        task, last = view.task, view.last
        out.append(
            {
                "name": task.name,
                "schedule": view.schedule,
                "state": view.state,
                "next_run": view.next_run.isoformat() if view.next_run else None,
                "action": action_of(task),
                "deliver_to": task.spec.deliver_to,
                "owner": task.owner,
                "last_run": None
                if last is None
                else {
                    "slot": last.slot,
                    "status": last.status,
                    "delivery": delivery_of(last, task),
                    "error": last.error,
                },
            }
        )
    return out


@tool(tier=Tier.WRITE)
async def cancel_task(ctx: ToolContext, name: str) -> str:
    """Remove a scheduled task and its run history for good; admins only.

    Args:
        name: The task's name, as list_tasks shows it.
    """
    from daemon.core.errors import TaskRejected, UnknownTask

    service = _service(ctx, "cancel tasks")
    try:
        await service.remove(name)
    except UnknownTask:
        raise ToolError(f"no task named {name!r}; list_tasks shows the tasks there are") from None
    except TaskRejected as exc:
        raise ToolError(str(exc)) from None
    return f"task {name!r} removed; it will not run again"


def _service(ctx: ToolContext, doing: str) -> Any:
    """The task service, once the caller may change tasks; otherwise a ToolError saying why."""
    if ctx.unattended:
        raise ToolError(
            f"scheduled and other unattended runs may not {doing}; tell a person instead"
        )
    service = _task_service(ctx)
    if service is None:
        raise ToolError("the scheduler is off ([scheduler] enabled = false): no tasks can change")
    role = role_of(ctx)
    if role != "admin":
        raise ToolError(
            f"only an admin may {doing}; {ctx.actor} is {role or 'without a role'}. Ask an admin "
            "to do it (chat: `tasks add NAME every 1h prompt …`, host: `nightshift tasks add`)"
        )
    return service


def role_of(ctx: ToolContext) -> str | None:
    """The caller's role; without a lookup only the local console counts as admin."""
    lookup = getattr(ctx.services, "role_of", None)
    if lookup is not None:
        return lookup(ctx.actor)  # type: ignore[no-any-return]
    return "admin" if ctx.actor.startswith("console:") else None


TOOLS: list[Tool] = [schedule_task, list_tasks, cancel_task]


def _task_service(ctx: ToolContext) -> TaskService | None:
    """The task service the runtime handed the tools (None: the scheduler is off)."""
    service = getattr(ctx.services, "tasks", None)
    return service if isinstance(service, TaskService) else None
