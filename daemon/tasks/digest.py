"""The daily digest: what happened in the last day, composed from memory without the LLM.

Nothing happened (no incident opened, resolved or still open, no task failed, no component
restarted) → no digest at all: the run is recorded as "nothing to do".
"""

from __future__ import annotations

from datetime import datetime, timedelta

from daemon.core.tasks import TaskSpec
from memory.components import ComponentEventRepo
from memory.incidents import IncidentRepo
from memory.tasks import TaskRepo
from memory.usage import UsageRepo

DIGEST_TASK = "digest"


def digest_task(time: str, deliver_to: str, timezone: str) -> TaskSpec:
    hours, minutes = (int(part) for part in time.split(":"))
    return TaskSpec(
        name=DIGEST_TASK,
        cron=f"{minutes} {hours} * * *",
        timezone=timezone,
        builtin="digest",
        deliver_to=deliver_to,
        catch_up="once",
        retries=0,
    )


async def compose(
    now: datetime,
    *,
    incidents: IncidentRepo,
    tasks: TaskRepo,
    usage: UsageRepo,
    events: ComponentEventRepo,
) -> str:
    """The digest text, or "" when there is nothing to tell."""
    since = now - timedelta(days=1)
    recent = [i for i in await incidents.listing(limit=500) if i.opened_at >= since
              or (i.resolved_at and i.resolved_at >= since) or i.state == "open"]  # fmt: skip
    task_runs = await tasks.runs_since(since)
    digest_ids = {t.id for t in await tasks.all() if t.name == DIGEST_TASK}
    task_runs = [r for r in task_runs if r.task_id not in digest_ids]
    failed = [r for r in task_runs if r.status in ("failed", "timeout")]
    restarts = [e for e in await events.recent(limit=200) if e.created_at >= since]
    if not recent and not failed and not restarts:
        return ""
    lines = [f"Daily digest — the last 24 hours up to {now:%Y-%m-%d %H:%M} UTC"]
    opened = [i for i in recent if i.opened_at >= since]
    still_open = [i for i in recent if i.state == "open"]
    lines.append(
        f"Incidents: {len(opened)} opened, "
        f"{sum(1 for i in recent if i.resolved_at and i.resolved_at >= since)} resolved, "
        f"{len(still_open)} still open."
    )
    for item in still_open[:10]:
        since_text = f"{item.opened_at:%m-%d %H:%M}"
        lines.append(f"• open: #{item.id} {item.title} ({item.severity}) since {since_text}")
    done = sum(1 for r in task_runs if r.status == "ok")
    quiet = sum(1 for r in task_runs if r.status == "nothing_to_do")
    lines.append(f"Tasks: {done} ran, {quiet} had nothing to do, {len(failed)} failed.")
    names = {t.id: t.name for t in await tasks.all()}
    for run in failed[:10]:
        lines.append(f"• failed: {names.get(run.task_id, run.task_id)} — {(run.error or '')[:120]}")
    tokens = await usage.tokens_since(since)
    lines.append(f"LLM: {tokens:,} tokens in 24 hours.")
    if restarts:
        first = restarts[0]
        lines.append(f"Components: {len(restarts)} event(s), e.g. {first.component} {first.event}.")
    return "\n".join(lines)
