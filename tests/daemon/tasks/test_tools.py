"""schedule_task / list_tasks / cancel_task through the real executor: roles, audit, validation
errors the model can act on, and tasks landing in a real scheduler on a real SQLite file."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from daemon.agent.executor import ToolExecutor, ToolOutcome
from daemon.agent.services import ToolServices
from daemon.agent.tools.base import ToolContext, ToolRegistry
from daemon.agent.tools.registry import default_registry
from daemon.chat.access import AccessControl, actor_roles
from daemon.config import Settings
from daemon.core.clock import ManualClock
from daemon.core.tasks import TaskSpec
from daemon.tasks.commands import TaskService
from daemon.tasks.runner import TaskRunner
from daemon.tasks.scheduler import TaskScheduler
from daemon.tasks.tools import TOOLS
from memory.audit import AuditRepo
from memory.conversations import ConversationRepo
from memory.facts import FactRepo
from memory.outbox import OutboxRepo
from memory.store import SqliteStore
from memory.tasks import TaskRepo


@dataclass
class Rig:
    executor: ToolExecutor
    audit: AuditRepo
    repo: TaskRepo
    scheduler: TaskScheduler
    ctx: ToolContext

    async def call(self, tool: str, actor: str, **arguments: Any) -> ToolOutcome:
        ctx = replace(self.ctx, actor=actor)
        return await self.executor.execute(tool, json.dumps(arguments), ctx)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
    store = await SqliteStore.open(tmp_path / "t.db")
    repo, outbox, audit = TaskRepo(store, clock), OutboxRepo(store, clock), AuditRepo(store, clock)
    runner = TaskRunner(
        repo=repo,
        outbox=outbox,
        conversations=ConversationRepo(store, clock),
        agent=None,
        clock=clock,
    )
    scheduler = TaskScheduler(repo=repo, runner=runner, clock=clock, timezone=lambda: "UTC")
    await scheduler.start([TaskSpec(name="backup", cron="0 3 * * *", command=["true"])])
    access = AccessControl({"slack": {"VIEW": "viewer", "OPS": "operator", "BOSS": "admin"}})
    services = ToolServices(
        facts=FactRepo(store, clock),
        outbox=outbox,
        tasks=TaskService(scheduler=scheduler, repo=repo, clock=clock),
        role_of=actor_roles(access),
    )
    ctx = ToolContext(
        actor="slack:BOSS",
        reason="asked in chat",
        settings=Settings(),
        clock=clock,
        origin="slack|C0OPS|1700000000.1",
        services=services,
    )
    executor = ToolExecutor(ToolRegistry(TOOLS), audit=audit, approvals=None)
    yield Rig(executor, audit, repo, scheduler, ctx)
    await scheduler.stop()
    await store.close()


async def test_only_admins_schedule_tasks_and_every_refusal_is_audited(rig: Rig) -> None:
    for actor, role in (("slack:VIEW", "viewer"), ("slack:OPS", "operator"), ("slack:EVE", None)):
        outcome = await rig.call("schedule_task", actor, name="disk", prompt="check", every="1h")
        assert not outcome.ok
        assert outcome.text.startswith(
            f"ERROR: only an admin may schedule tasks; {actor} is {role or 'without a role'}."
        )
    assert [t.name for t in await rig.repo.all()] == ["backup"]
    refusals = [a for a in await rig.audit.recent() if a.tool == "schedule_task"]
    assert [(a.actor, a.ok, a.tier) for a in refusals] == [
        ("slack:EVE", False, "write"),
        ("slack:OPS", False, "write"),
        ("slack:VIEW", False, "write"),
    ]
    assert "only an admin may schedule tasks" in refusals[0].result
    assert refusals[0].arguments["name"] == "disk"

    outcome = await rig.call("cancel_task", "slack:OPS", name="backup")
    assert not outcome.ok and "only an admin may cancel tasks" in outcome.text


async def test_an_admins_task_is_scheduled_and_delivers_to_where_it_was_asked(rig: Rig) -> None:
    outcome = await rig.call(
        "schedule_task", "slack:BOSS", name="disk-report", prompt="Report volumes above 80%",
        cron="0 9 * * mon-fri", timezone="Europe/Berlin",
    )  # fmt: skip
    assert outcome.ok, outcome.text
    result = json.loads(outcome.text)
    assert result["scheduled"] == "disk-report" and result["deliver_to"] == "slack:C0OPS"
    assert result["schedule"] == "cron '0 9 * * mon-fri' (Europe/Berlin)"
    assert result["next_run"] is not None
    task = await rig.repo.get("disk-report")
    assert (task.spec.deliver_to, task.spec.thread) == ("slack:C0OPS", "1700000000.1")
    assert task.owner == "slack:BOSS" and task.source == "runtime"
    assert rig.scheduler.next_run("disk-report") is not None
    [audited] = [a for a in await rig.audit.recent() if a.tool == "schedule_task"]
    assert audited.ok and audited.actor == "slack:BOSS"

    outcome = await rig.call("schedule_task", "console:root", name="poll", prompt="x",
                             every="0.25h", deliver_to="telegram:42")  # fmt: skip
    assert outcome.ok and (await rig.repo.get("poll")).spec.interval_seconds == 900  # 15m

    listed = json.loads((await rig.call("list_tasks", "slack:VIEW")).text)
    assert [t["name"] for t in listed] == ["backup", "disk-report", "poll"]
    assert listed[1]["state"] == "active" and listed[1]["last_run"] is None
    assert listed[2]["deliver_to"] == "telegram:42" and listed[2]["schedule"] == "every 15m"


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"name": "Disk Report", "every": "1h"}, "name: task name 'Disk Report': use 1-64"),
        ({"name": "x", "every": "1h", "cron": "@daily"}, "give exactly one schedule"),
        ({"name": "x"}, "give exactly one schedule"),
        ({"name": "x", "every": "often"}, "every: interval 'often' is not understood"),
        ({"name": "x", "cron": "0 9 * *"}, "has 4 fields, expected 5"),
        ({"name": "x", "at": "2020-01-01T09:00Z"}, "one-shot time 2020-01-01 09:00 UTC is in the"),
        ({"name": "x", "every": "1h", "timezone": "Mars/Base"}, "unknown time zone 'Mars/Base'"),
        ({"name": "x", "every": "1h", "deliver_to": "pager"}, "unknown delivery target 'pager'"),
        ({"name": "backup", "every": "1h"}, "task 'backup' is defined in the config file"),
    ],
)
async def test_bad_calls_come_back_as_errors_the_model_can_fix(
    rig: Rig, arguments: dict[str, Any], expected: str
) -> None:
    outcome = await rig.call("schedule_task", "slack:BOSS", prompt="check", **arguments)
    assert not outcome.ok and outcome.text.startswith("ERROR: the task was not scheduled: ")
    assert expected in outcome.text
    assert [t.name for t in await rig.repo.all()] == ["backup"]


async def test_unattended_runs_may_not_create_or_cancel_tasks(rig: Rig) -> None:
    rig.ctx = replace(rig.ctx, unattended=True)
    outcome = await rig.call("schedule_task", "slack:BOSS", name="spawn", prompt="x", every="1m")
    assert not outcome.ok and "unattended runs may not schedule tasks" in outcome.text
    outcome = await rig.call("cancel_task", "slack:BOSS", name="backup")
    assert not outcome.ok and "unattended runs may not cancel tasks" in outcome.text
    assert [t.name for t in await rig.repo.all()] == ["backup"]


async def test_cancel_removes_runtime_tasks_only(rig: Rig) -> None:
    await rig.call("schedule_task", "slack:BOSS", name="temp", prompt="x", every="1h")
    outcome = await rig.call("cancel_task", "slack:BOSS", name="temp")
    assert outcome.ok and outcome.text == "task 'temp' removed; it will not run again"
    assert rig.scheduler.next_run("temp") is None
    outcome = await rig.call("cancel_task", "slack:BOSS", name="temp")
    assert outcome.text == "ERROR: no task named 'temp'; list_tasks shows the tasks there are"
    outcome = await rig.call("cancel_task", "slack:BOSS", name="backup")
    assert "comes from the config file" in outcome.text


async def test_without_the_scheduler_the_tools_say_so(rig: Rig) -> None:
    rig.ctx = replace(rig.ctx, services=replace(rig.ctx.services, tasks=None))
    outcome = await rig.call("list_tasks", "slack:VIEW")
    assert outcome.text.startswith("ERROR: the scheduler is off")
    outcome = await rig.call("schedule_task", "slack:BOSS", name="x", prompt="x", every="1h")
    assert outcome.text.startswith("ERROR: the scheduler is off")


def test_the_task_tools_are_offered_by_default() -> None:
    assert {"schedule_task", "list_tasks", "cancel_task"} <= set(default_registry(TOOLS).names())
