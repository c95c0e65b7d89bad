"""`tasks …` commands on a real SQLite store and a real scheduler and runner (command tasks, no
LLM): what chat users and the CLI see, who may change what, and the CLI → API path."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aiohttp import web

from daemon.chat.hub import ChannelHub
from daemon.cli.main import main
from daemon.config import load_settings
from daemon.core.clock import ManualClock
from daemon.core.schedule import next_slot, parse_schedule
from daemon.core.tasks import TaskSpec
from daemon.runtime.api import build_local_app
from daemon.tasks.commands import SCHEDULER_OFF, TaskCommands
from daemon.tasks.runner import TaskRunner
from daemon.tasks.scheduler import TaskScheduler
from integrations.base import InboundMessage
from integrations.outbox import OutboxWorker
from memory.audit import AuditRepo
from memory.conversations import ConversationRepo
from memory.outbox import OutboxRepo
from memory.store import SqliteStore
from memory.tasks import TaskRepo
from tests.daemon.chat.hub_rig import RecordingChannel, build_hub


@dataclass
class Rig:
    store: SqliteStore
    clock: ManualClock
    repo: TaskRepo
    outbox: OutboxRepo
    scheduler: TaskScheduler
    commands: TaskCommands

    async def say(self, text: str, actor: str = "slack:ann", origin: str | None = None) -> str:
        word, _, rest = text.partition(" ")
        return await self.commands.run(word, rest, actor, origin)

    async def run(self, name: str) -> str:
        reply = await self.say(f"tasks run {name}")
        await self.scheduler.wait_idle()
        return reply


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    # near the real time: APScheduler computes next run times from the real clock
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
    store = await SqliteStore.open(tmp_path / "tasks.db")
    repo, outbox = TaskRepo(store, clock), OutboxRepo(store, clock)
    runner = TaskRunner(
        repo=repo,
        outbox=outbox,
        conversations=ConversationRepo(store, clock),
        agent=None,
        clock=clock,
    )
    scheduler = TaskScheduler(repo=repo, runner=runner, clock=clock, timezone=lambda: "UTC")
    await scheduler.start([TaskSpec(name="from-config", cron="0 3 * * *", command=["true"])])
    yield Rig(store, clock, repo, outbox, scheduler, TaskCommands(scheduler, repo, clock))
    await scheduler.stop()
    await store.close()


def hourly(name: str, *command: str, **fields: Any) -> TaskSpec:
    return TaskSpec(name=name, interval_seconds=3600, command=list(command), **fields)


async def test_the_listing_shows_schedule_state_next_run_and_how_the_last_run_went(
    rig: Rig,
) -> None:
    service = rig.commands.service
    await service.add(hourly("report", "echo", "disk ok"), owner="slack:ann")
    await service.add(hourly("quiet", "echo", "NO_NEWS"), owner="slack:ann")
    await service.add(hourly("broken", "false", retries=0), owner="slack:ann")
    assert "Started task report (run #" in await rig.run("report")
    await rig.run("quiet")
    await rig.run("broken")
    await rig.say("tasks pause broken too noisy")

    lines = (await rig.say("tasks", actor="slack:viewer")).splitlines()
    assert lines[0] == "4 task(s):"
    by_name = {line.split()[1]: line for line in lines[1:]}
    in_an_hour = f"{rig.clock.now() + timedelta(hours=1):%Y-%m-%d %H:%M} UTC (in 1h)"
    assert by_name["report"] == (
        f"• report — every 1h; active; next {in_an_hour}; last ok, delivery pending"
    )
    assert by_name["quiet"].endswith("last ok, delivery suppressed (no news)")
    assert (
        "paused: paused by slack:ann: too noisy; no next run; last failed, delivery -"
        in (by_name["broken"])
    )
    nightly = next_slot(parse_schedule(cron="0 3 * * *"), datetime.now(UTC))
    assert nightly is not None
    assert by_name["from-config"] == (
        f"• from-config — cron '0 3 * * *' (UTC); active; next {nightly:%Y-%m-%d %H:%M} UTC "
        f"(in {_ahead(nightly, rig.clock.now())}); never ran"
    )

    [row] = [m for m in await rig.outbox.due("console", limit=10) if "disk ok" in m.text]
    await rig.outbox.mark_delivered(row.id, "p1")
    assert (await rig.say("tasks")).count("delivery delivered") == 1


def _ahead(when: datetime, now: datetime) -> str:
    from daemon.tasks.text import duration

    return duration((when - now).total_seconds())


async def test_show_gives_the_definition_and_the_last_twenty_runs(rig: Rig) -> None:
    spec = hourly("flaky", "sh", "-c", "exit 3", retries=0, deliver_to="slack:C0OPS")
    await rig.commands.service.add(spec, owner="slack:ann")
    for _ in range(22):
        await rig.run("flaky")
    text = await rig.say("tasks show flaky", actor="slack:viewer")
    lines = text.splitlines()
    assert lines[0].startswith("Task flaky (added by slack:ann, since ")
    assert "  schedule:   every 1h" in lines
    assert "  state:      paused: 22 consecutive failures: sh exited 3: " in lines  # by policy
    assert "  command: sh -c 'exit 3'" in lines
    assert "  deliver to: slack:C0OPS" in lines
    assert "  failures:   22 in a row" in lines
    assert (
        lines[-21] == "Last 20 run(s), newest first (slot · attempt · status · tokens · delivery):"
    )
    runs = lines[-20:]
    assert runs[0].startswith("  #22 manual ") and runs[-1].startswith("  #3 manual ")
    assert " · attempt 1 · failed · 0 tokens · - · error: sh exited 3" in runs[0]


async def test_add_from_chat_parses_schedules_zones_targets_and_actions(rig: Rig) -> None:
    reply = await rig.say(
        'tasks add morning cron “0 9 * * mon-fri” in Europe/Berlin prompt What\'s new? Say "hi".',
        origin="slack|C0OPS|T42",
    )
    assert reply.startswith(
        "Added task morning: cron '0 9 * * mon-fri' (Europe/Berlin), next run 20"
    )
    assert reply.endswith(
        "results go to slack:C0OPS. `tasks show morning` shows its runs, `tasks remove morning` "
        "deletes it."
    )
    task = await rig.repo.get("morning")
    assert task.spec.prompt == 'What\'s new? Say "hi".'  # the prompt text is taken verbatim
    assert (task.spec.deliver_to, task.spec.thread, task.owner) == (
        "slack:C0OPS",
        "T42",
        "slack:ann",
    )

    await rig.say("tasks add backup every 1h30m to telegram:123 command /usr/bin/env ls '/var/x y'")
    await rig.say("tasks add sweep every 1h 30m prompt Sweep")  # "1h 30m" and "1.5h" alike
    await rig.say("tasks add sweep2 every 1.5h prompt Sweep")  # the spelling silences took
    assert {(await rig.repo.get(n)).spec.interval_seconds for n in ("sweep", "sweep2")} == {5400}
    backup = await rig.repo.get("backup")
    assert backup.spec.interval_seconds == 5400 and backup.spec.deliver_to == "telegram:123"
    assert backup.spec.command == ["/usr/bin/env", "ls", "/var/x y"]

    later = rig.clock.now() + timedelta(days=2)
    reply = await rig.say(f"tasks add once at {later:%Y-%m-%dT%H:%M}Z prompt Renew the cert")
    assert f"once at {later:%Y-%m-%d %H:%M} UTC, next run {later:%Y-%m-%d %H:%M} UTC" in reply
    assert (await rig.repo.get("once")).spec.deliver_to == "console"  # no origin: the console


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tasks add x prompt hi", "give exactly one schedule: every 15m"),
        ("tasks add x every 1h cron @daily prompt hi", "give exactly one schedule"),
        ("tasks add x every 15 prompt hi", "interval '15' has no unit"),
        ("tasks add x cron '0 25 * * *' prompt hi", "hour field '25' is out of range 0-23"),
        ("tasks add x every 1h in Europe/Berln prompt hi", "did you mean 'Europe/Berlin'?"),
        ("tasks add x at tomorrow prompt hi", "'tomorrow' is not an ISO 8601 time"),
        ("tasks add x at 2020-01-01T09:00Z prompt hi", "one-shot time 2020-01-01 09:00 UTC is in"),
        ("tasks add Disk_Report every 1h prompt hi", "name: task name 'Disk_Report': use 1-64"),
        ("tasks add x every 1h to pager:7 prompt hi", "deliver_to: unknown delivery target 'pager"),
        ("tasks add x every 1h", "say what to do: … prompt TEXT"),
        ("tasks add x every 1h prompt", "prompt is empty"),
        ("tasks add x every 1h every 2h prompt hi", "'every' is given twice"),
        ("tasks add x soon every 1h prompt hi", "unexpected 'soon' after the name"),
        ("tasks add x cron '0 9 * * * prompt hi", "close the quotes"),
        ("tasks add from-config every 1h prompt hi", "is defined in the config file"),
        ("tasks frobnicate", "unknown tasks command 'frobnicate'"),
    ],
)
async def test_bad_task_definitions_are_refused_with_what_to_fix(
    rig: Rig, text: str, expected: str
) -> None:
    reply = await rig.say(text)
    assert expected in reply
    assert [t.name for t in await rig.repo.all()] == ["from-config"]  # nothing was added


async def test_a_name_can_be_used_once(rig: Rig) -> None:
    await rig.say("tasks add x every 1h prompt hi")
    reply = await rig.say("tasks add x every 2h prompt hello")
    assert reply.startswith("a task named 'x' exists already (see `tasks show x`)")
    assert (await rig.repo.get("x")).spec.interval_seconds == 3600


async def test_pause_resume_remove_and_unknown_names(rig: Rig) -> None:
    await rig.say("tasks add nightly cron '30 2 * * *' command true")
    assert rig.scheduler.next_run("nightly") is not None
    assert await rig.say("tasks pause nightly") == (
        "Paused task nightly; it will not run until `tasks resume nightly`."
    )
    assert rig.scheduler.next_run("nightly") is None
    assert (await rig.say("tasks pause nightly")).startswith("Task nightly is already paused")
    resumed = await rig.say("tasks resume nightly")
    assert resumed.startswith("Resumed task nightly; next run 20")
    assert rig.scheduler.next_run("nightly") is not None
    assert await rig.say("tasks resume nightly") == (
        "Task nightly is not paused (see `tasks show nightly`)."
    )
    assert await rig.say("tasks remove nightly") == "Removed task nightly and its run history."
    for verb in ("show", "pause", "resume", "remove", "run"):
        assert await rig.say(f"tasks {verb} nightly") == "no task named 'nightly' (see `tasks`)"
    assert (await rig.say("tasks remove from-config")).startswith(
        "task 'from-config' comes from the config file; delete it there and reload"
    )
    assert "say which task: tasks pause NAME" in await rig.say("tasks pause")


async def test_a_manual_run_while_the_last_one_is_going_is_refused(rig: Rig) -> None:
    await rig.commands.service.add(hourly("slow", "sleep", "1"), owner="slack:ann")
    assert (await rig.say("tasks run slow")).startswith("Started task slow")
    assert await rig.say("tasks run slow") == (
        "Task slow did not start: the previous run is still going."
    )
    await rig.scheduler.wait_idle()


async def test_the_cli_reply_says_whether_it_worked(rig: Rig) -> None:
    ok = await rig.commands.reply("tasks", "", "console:root")
    bad = await rig.commands.reply("tasks", "show nope", "console:root")
    assert ok.ok and not bad.ok and bad.text == "no task named 'nope' (see `tasks`)"


# -- the hub: viewers look, admins change ---------------------------------------------------------


@dataclass
class HubRig:
    hub: ChannelHub
    channel: RecordingChannel
    worker: OutboxWorker
    audit: AuditRepo

    async def say(self, user: str, text: str) -> list[str]:
        before = len(self.channel.sent)
        await self.hub.on_message(
            InboundMessage(
                channel="slack", sender_id=user, sender_name=user.lower(), room="C0OPS",
                text=text, thread="T1",
            )
        )  # fmt: skip
        await self.worker.flush()
        return [m.text for m in self.channel.sent[before:]]


def make_hub(store: SqliteStore, clock: ManualClock, tasks: TaskCommands | None) -> HubRig:
    users = {"VIEW": "viewer", "OPS": "operator", "BOSS": "admin"}
    parts = build_hub(store, clock, channel="slack", users=users, task_commands=tasks)
    return HubRig(parts.hub, parts.channel, parts.worker, parts.audit)


async def test_in_chat_viewers_may_list_tasks_but_only_admins_change_them(rig: Rig) -> None:
    chat = make_hub(rig.store, rig.clock, rig.commands)
    assert "tasks add|pause|resume|remove|run NAME (admins" in (await chat.say("VIEW", "help"))[0]
    [listing] = await chat.say("VIEW", "tasks")
    assert listing.startswith("1 task(s):\n• from-config")
    [details] = await chat.say("VIEW", "tasks show from-config")
    assert details.startswith("Task from-config (config file")
    for text in ("tasks add x every 1h prompt hi", "tasks pause from-config", "tasks run x"):
        for user in ("VIEW", "OPS"):
            role = "viewer" if user == "VIEW" else "operator"
            assert await chat.say(user, text) == [
                f"Your role ({role}) cannot change tasks; ask an admin."
            ]
    assert [t.name for t in await rig.repo.all()] == ["from-config"]
    assert rig.scheduler.next_run("from-config") is not None  # not paused
    denied = [a for a in await chat.audit.recent() if a.action == "access_denied"]
    assert len(denied) == 6 and denied[-1].reason == "tasks add command"

    [added] = await chat.say("BOSS", "tasks add disk every 1h prompt Check the disks")
    assert added.startswith("Added task disk: every 1h")
    task = await rig.repo.get("disk")  # delivered where it was asked for, in that thread
    assert (task.spec.deliver_to, task.spec.thread, task.owner) == (
        "slack:C0OPS",
        "T1",
        "slack:boss",
    )
    assert await chat.say("BOSS", "tasks pause disk") == [
        "Paused task disk; it will not run until `tasks resume disk`."
    ]
    assert (await rig.repo.get("disk")).paused_reason == "paused by slack:boss"
    assert rig.scheduler.next_run("disk") is None
    [resumed] = await chat.say("BOSS", "tasks resume disk")
    assert resumed.startswith("Resumed task disk; next run 20")
    assert rig.scheduler.next_run("disk") is not None  # armed again
    [stranger] = await chat.say("EVE", "tasks")
    assert "only take requests" in stranger


async def test_with_the_scheduler_off_chat_says_so(tmp_path: Path) -> None:
    clock = ManualClock()
    store = await SqliteStore.open(tmp_path / "off.db")
    chat = make_hub(store, clock, None)
    assert await chat.say("BOSS", "tasks") == [SCHEDULER_OFF]
    await store.close()


# -- the CLI through the local API ----------------------------------------------------------------


async def test_the_cli_adds_lists_runs_and_removes_tasks_through_the_api(
    rig: Rig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    config = tmp_path / "nightshift.toml"
    config.write_text("")
    socket_path = load_settings(config, state_dir=state).socket_path
    runtime = SimpleNamespace(task_commands=rig.commands, commands=None)
    runner = web.AppRunner(build_local_app(cast(Any, runtime)))
    await runner.setup()
    await web.UnixSite(runner, str(socket_path)).start()

    async def cli(*argv: str) -> tuple[int, str, str]:
        code = await asyncio.to_thread(main, ["tasks", *argv, "--config", str(config),
                                               "--state-dir", str(state)])  # fmt: skip
        out, err = capsys.readouterr()
        return code, out, err

    try:
        code, out, _ = await cli("add", "echoer", "--every", "2h", "--command", "echo 'hi there'",
                                 "--to", "slack:C0OPS", "--catch-up", "skip")  # fmt: skip
        assert code == 0 and out.startswith("Added task echoer: every 2h, next run 20")
        task = await rig.repo.get("echoer")
        assert task.owner.startswith("console:") and task.spec.catch_up == "skip"
        assert task.spec.command == ["echo", "hi there"]

        code, _, err = await cli("add", "echoer", "--every", "1h", "--prompt", "again")
        assert code == 1 and "409: a task named 'echoer' exists already" in err
        code, _, err = await cli("add", "Bad Name", "--cron", "0 9 * * *", "--prompt", "x")
        assert code == 1 and "400: name: task name 'Bad Name'" in err
        code, _, err = await cli("add", "late", "--at", "2020-05-01T10:00", "--tz",
                                 "Europe/Berlin", "--prompt", "x")  # fmt: skip
        assert code == 1 and "is in the past" in err and "Europe/Berlin" in err
        code, _, err = await cli("add", "odd", "--every", "soon", "--prompt", "x")
        assert code == 2 and "interval 'soon' is not understood: write e.g. 90s, 15m, 1.5h" in err
        code, out, _ = await cli("add", "halfhourly", "--every", "1.5h", "--prompt", "x")
        assert code == 0 and (await rig.repo.get("halfhourly")).spec.interval_seconds == 5400

        code, out, _ = await cli("run-now", "echoer")
        assert code == 0 and out.startswith("Started task echoer (run #")
        await rig.scheduler.wait_idle()
        code, out, _ = await cli("show", "echoer")
        assert code == 0 and "· ok · 0 tokens · pending" in out
        code, out, _ = await cli("pause", "echoer", "--reason", "maintenance")
        assert code == 0
        code, out, _ = await cli()
        assert code == 0 and "paused: paused by console:" in out and ": maintenance;" in out
        code, out, _ = await cli("remove", "echoer")
        assert (code, out) == (0, "Removed task echoer and its run history.\n")
        code, out, _ = await cli("resume", "echoer")
        assert (code, out) == (1, "no task named 'echoer' (see `tasks`)\n")
    finally:
        await runner.cleanup()

    runtime.task_commands = None  # the scheduler is off
    runner = web.AppRunner(build_local_app(cast(Any, runtime)))
    await runner.setup()
    await web.UnixSite(runner, str(socket_path)).start()
    try:
        code, out, _ = await cli("list")
        assert (code, out) == (1, SCHEDULER_OFF + "\n")
        code, _, err = await cli("add", "x", "--every", "1h", "--prompt", "hi")
        assert code == 1 and "503: The scheduler is off" in err
    finally:
        await runner.cleanup()


async def test_tasks_must_deliver_to_an_enabled_channel(
    rig: Rig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`tasks add --to`, chat and the agent share one check against the enabled channels."""
    commands = TaskCommands(rig.scheduler, rig.repo, rig.clock, frozenset({"console"}))
    reply = await commands.run("tasks", "add x every 1h to slack:C0OPS prompt hi", "slack:ann")
    assert "deliver_to 'slack:C0OPS': channel 'slack' is not enabled on this daemon" in reply
    assert "deliver to console, or set [channels.slack] enabled = true" in reply

    state = tmp_path / "state"
    state.mkdir()
    socket_path = load_settings(None, state_dir=state).socket_path
    runtime = SimpleNamespace(task_commands=commands, commands=None)
    runner = web.AppRunner(build_local_app(cast(Any, runtime)))
    await runner.setup()
    await web.UnixSite(runner, str(socket_path)).start()
    try:
        argv = ["tasks", "add", "y", "--every", "1h", "--prompt", "hi", "--to", "telegram:42",
                "--state-dir", str(state)]  # fmt: skip
        code = await asyncio.to_thread(main, argv)
        err = capsys.readouterr().err
        assert code == 1
        assert "nightshift tasks add: 400: deliver_to 'telegram:42': channel 'telegram'" in err
        argv[argv.index("telegram:42")] = "console"
        assert await asyncio.to_thread(main, argv) == 0
    finally:
        await runner.cleanup()
    assert [task.name for task in await rig.repo.all()] == ["from-config", "y"]
