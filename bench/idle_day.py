"""An idle day with the digest on: no LLM call and no message when nothing happens.

Part 1, a simulated 24 hours (seconds of real time): the real TaskScheduler, TaskRunner, agent
loop and digest on a real SQLite file, the fake Chat Completions server as the model, and a
ManualClock. Two tasks from config: the daily digest (09:00 UTC) and ``inbox-check``, a prompt
task every 15 minutes whose pre-check (``test -s inbox``: is the inbox file non-empty?) says
there is nothing to do. APScheduler's own timer is paused: the bench plays it, asking each
job's trigger for its next fire time, moving the clock there and calling the job's callback
(what APScheduler does at that moment). At 12:00 the scheduler is stopped for an hour and
started again, so the catch-up path runs too. Printed: runs per task and status, LLM calls,
tokens and outbox messages (all three must be 0); then a control: with a line in the inbox the
same task does call the model.

Part 2, a real daemon (``python -m daemon.cli.main run``) with the digest at the first whole minute
at least 30 s after launch, the same ``inbox-check`` task every 30 s and the fake model as
``llm.base_url``, run for ``--daemon-seconds`` (at least until 15 s after the digest slot):
printed are the runs recorded in its database, LLM calls, outbox rows and the warnings and
errors in its log.

Usage: python -m bench.idle_day [--no-daemon] [--daemon-seconds 90]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._daemon import start_daemon, stop
from daemon.agent.build import build_agent, build_llm
from daemon.chat.approvals import ApprovalBroker
from daemon.config import load_settings
from daemon.core.clock import ManualClock
from daemon.core.tasks import TaskSpec
from daemon.tasks import digest
from daemon.tasks.runner import TaskRunner
from daemon.tasks.scheduler import TaskScheduler
from memory.components import ComponentEventRepo
from memory.conversations import ConversationRepo
from memory.incidents import IncidentRepo
from memory.outbox import OutboxRepo
from memory.store import SqliteStore
from memory.tasks import TaskRepo
from memory.usage import UsageRepo
from tests.fakes.chat_completions import FakeChatServer, Reply

T0 = datetime(2026, 3, 2, 0, 0, 30, tzinfo=UTC)  # a Monday, just after midnight
DAY = timedelta(hours=24)
DOWN_AT, DOWN_FOR = timedelta(hours=12), timedelta(hours=1)


def config_tasks(inbox: Path, every: float) -> list[TaskSpec]:
    check = TaskSpec(
        name="inbox-check",
        interval_seconds=every,
        prompt="Summarise what arrived in the inbox for the on-call engineer.",
        precheck=["test", "-s", str(inbox)],  # exit 1 while the inbox is empty: nothing to do
    )
    return [digest.digest_task("09:00", "console", "UTC"), check]


async def simulated_day(tmp: Path, fake: FakeChatServer) -> None:
    settings = load_settings(
        None,
        overrides={"llm": {"base_url": fake.base_url, "api_key": "sk-bench", "max_retries": 0}},
        environ_secrets=False,
    )
    clock = ManualClock(T0)
    store = await SqliteStore.open(tmp / "day.db")
    usage = UsageRepo(store, clock)
    llm = build_llm(settings, usage=usage, clock=clock)
    conversations = ConversationRepo(store, clock)
    agent = build_agent(
        settings=settings,
        store=store,
        clock=clock,
        llm=llm,
        approvals=ApprovalBroker(clock),
        conversations=conversations,
    )
    repo = TaskRepo(store, clock)
    incidents, events = IncidentRepo(store, clock), ComponentEventRepo(store, clock)

    async def compose_digest(now: datetime) -> str:
        return await digest.compose(
            now, incidents=incidents, tasks=repo, usage=usage, events=events
        )

    runner = TaskRunner(
        repo=repo,
        outbox=OutboxRepo(store, clock),
        conversations=conversations,
        agent=agent,
        clock=clock,
        builtins={"digest": compose_digest},
    )
    inbox = tmp / "inbox"
    inbox.write_text("")
    tasks = config_tasks(inbox, 900)

    async def start() -> TaskScheduler:
        scheduler = TaskScheduler(repo=repo, runner=runner, clock=clock, timezone=lambda: "UTC")
        await scheduler.start(tasks)
        await scheduler.wait_idle()  # catch-up after the downtime
        scheduler._aps.pause()  # the bench is the timer from here on
        return scheduler

    began = time.perf_counter()
    scheduler = await start()
    wakes, restarted = 0, False
    last: dict[str, datetime] = {}
    while True:
        jobs = scheduler._aps.get_jobs()
        now = clock.now()
        soon = now + timedelta(microseconds=1)  # a job just added fires after now
        fire_times = [(job.trigger.get_next_fire_time(last.get(job.id), soon), job) for job in jobs]
        when, job = min(((t, j) for t, j in fire_times if t is not None), key=lambda p: p[0])
        if not restarted and when >= T0 + DOWN_AT:  # down for an hour at noon
            await scheduler.stop()
            clock.advance((T0 + DOWN_AT + DOWN_FOR - now).total_seconds())
            scheduler, restarted, last = await start(), True, {}
            continue
        if when > T0 + DAY:
            break
        clock.advance((when - now).total_seconds())
        await job.func(*job.args, **job.kwargs)  # what APScheduler calls at that moment
        last[job.id] = when
        await scheduler.wait_idle()
        wakes += 1
    took = time.perf_counter() - began
    statuses = {
        t.name: Counter(r.status for r in await repo.runs(t.id, 1000)) for t in await repo.all()
    }
    async with store.read() as db:
        outbox = list(await db.execute_fetchall("SELECT count(*) FROM outbox"))[0][0]
    tokens = await usage.tokens_since(T0)
    print(f"simulated day {T0:%Y-%m-%d %H:%M:%S} → {T0 + DAY:%H:%M:%S} UTC (+24 h), down "
          f"{DOWN_AT.seconds // 3600}:00-{(DOWN_AT + DOWN_FOR).seconds // 3600}:00; "
          f"{wakes} wake-ups in {took:.1f} s of real time")  # fmt: skip
    for name, counts in statuses.items():
        print(f"  task {name}: {dict(counts)}")
    for task in await repo.all():
        for run in await repo.runs(task.id, 1000):
            if run.status == "skipped":
                print(f"  {task.name} skipped row: {run.error}")
    print(f"  LLM calls: {fake.calls}   tokens recorded: {tokens}   agent runs: {runner.llm_runs}"
          f"   outbox messages: {outbox}")  # fmt: skip
    fake.script(Reply(content="NO_NEWS"))
    inbox.write_text("disk replaced on db-2\n")
    await scheduler.run_now("inbox-check")
    await scheduler.wait_idle()
    print(f"  control: one line in the inbox, run-now: LLM calls {fake.calls} (the pre-check "
          f"gate was what kept it at 0)")  # fmt: skip
    await scheduler.stop()
    await llm.close()
    await store.close()


def daemon_config(work: Path, digest_at: datetime, inbox: Path) -> Path:
    path = work / "nightshift.toml"
    path.write_text(
        "[scheduler.digest]\n"
        "enabled = true\n"
        f'time = "{digest_at:%H:%M}"\n'
        "\n[[scheduler.tasks]]\n"
        'name = "inbox-check"\n'
        "interval_seconds = 30\n"
        'prompt = "Summarise what arrived in the inbox for the on-call engineer."\n'
        f'precheck = ["test", "-s", "{inbox}"]\n'
    )
    return path


def daemon_runs(database: Path) -> tuple[dict[str, dict[str, int]], int, list[str]]:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        rows = db.execute(
            "SELECT t.name, r.status, count(*) FROM task_runs r JOIN tasks t ON t.id = r.task_id"
            " GROUP BY t.name, r.status"
        ).fetchall()
        outbox = db.execute("SELECT count(*) FROM outbox").fetchone()[0]
        slots = [f"slot {slot} {status}, claimed {started}" for slot, status, started in db.execute(
            "SELECT r.slot, r.status, r.started_at FROM task_runs r"
            " JOIN tasks t ON t.id = r.task_id WHERE t.name = 'digest'"
        )]  # fmt: skip
    runs: dict[str, dict[str, int]] = {}
    for name, status, count in rows:
        runs.setdefault(name, {})[status] = count
    return runs, outbox, slots


async def real_daemon(tmp: Path, fake: FakeChatServer, seconds: float) -> None:
    work = tmp / "daemon"
    work.mkdir()
    inbox = work / "inbox"
    inbox.write_text("")
    now = datetime.now(UTC)
    digest_at = (now + timedelta(seconds=90)).replace(second=0, microsecond=0)  # 30-90 s on
    config = daemon_config(work, digest_at, inbox)
    env = {"NIGHTSHIFT_LLM__BASE_URL": fake.base_url, "NIGHTSHIFT_LLM__API_KEY": "sk-bench"}
    calls_before = fake.calls
    proc, ready = await asyncio.to_thread(start_daemon, work, config, env)
    started = time.monotonic()
    database = work / "state" / "nightshift.db"
    try:
        deadline = max(seconds, (digest_at - now).total_seconds() + 15)
        while time.monotonic() - started < deadline:
            await asyncio.sleep(1)
            if proc.poll() is not None:
                break
    finally:
        code = await asyncio.to_thread(stop, proc)
    ran = time.monotonic() - started
    runs, outbox, digest_slots = daemon_runs(database)
    print(f"real daemon: READY after {ready:.1f} s, ran {ran:.0f} s, digest due at "
          f"{digest_at:%H:%M} UTC ({(digest_at - now).total_seconds():.0f} s after launch), "
          f"exit code {code}")  # fmt: skip
    for name, counts in sorted(runs.items()):
        print(f"  task {name}: {counts}")
    print(f"  digest runs: {digest_slots or 'none'}")
    print(f"  LLM calls: {fake.calls - calls_before}   outbox messages: {outbox}")
    log = (work / "daemon.log").read_text(errors="replace").splitlines()
    bad = [line for line in log if " WARNING " in line or " ERROR " in line]
    print(f"  daemon log: {len(log)} lines, {len(bad)} warnings/errors")
    for line in bad[:10]:
        print(f"    {line[:200]}")


async def main(daemon: bool, seconds: float) -> None:
    began = time.perf_counter()
    async with FakeChatServer() as fake:
        with tempfile.TemporaryDirectory() as tmp:
            await simulated_day(Path(tmp), fake)
            if daemon:
                await real_daemon(Path(tmp), fake, seconds)
    print(f"total bench time: {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-daemon", action="store_true", help="only the simulated day")
    parser.add_argument("--daemon-seconds", type=float, default=90.0)
    args = parser.parse_args()
    asyncio.run(main(not args.no_daemon, args.daemon_seconds))
