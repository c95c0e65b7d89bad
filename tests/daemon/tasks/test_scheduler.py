"""The scheduler and task runner on a real SQLite file: claims, catch-up, the pre-check gate,
the failure policy, unattended denial, quiet hours — the fake Kimi server plays the model."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from daemon.agent.build import build_agent, build_llm
from daemon.agent.tools.registry import default_registry
from daemon.chat.approvals import ApprovalBroker
from daemon.config import load_settings
from daemon.core.clock import ManualClock
from daemon.core.tasks import TaskSpec
from daemon.tasks.quiet_hours import QuietHours
from daemon.tasks.runner import TaskRunner
from daemon.tasks.scheduler import TaskScheduler
from daemon.tasks.settings import QuietHoursSettings
from daemon.tasks.tools import TOOLS
from memory.conversations import ConversationRepo
from memory.outbox import OutboxRepo
from memory.store import SqliteStore
from memory.tasks import TaskRepo
from memory.usage import UsageRepo
from tests.fakes.chat_completions import FakeChatServer, Reply

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


@dataclass
class Rig:
    store: SqliteStore
    clock: ManualClock
    repo: TaskRepo
    outbox: OutboxRepo
    runner: TaskRunner
    scheduler: TaskScheduler
    sleeps: list[float]

    async def texts(self) -> list[str]:
        async with self.store.read() as db:
            rows = await db.execute_fetchall("SELECT text FROM outbox ORDER BY id")
        return [row[0] for row in rows]

    async def statuses(self, name: str) -> list[str]:
        task = await self.repo.get(name)
        return [run.status for run in reversed(await self.repo.runs(task.id))]

    async def restart(self) -> TaskScheduler:
        await self.scheduler.stop()
        self.scheduler = TaskScheduler(
            repo=self.repo, runner=self.runner, clock=self.clock, timezone=lambda: "UTC"
        )
        return self.scheduler


@pytest.fixture(name="rig")
async def rig_fixture(tmp_path: Path, fake_llm: FakeChatServer) -> AsyncIterator[Rig]:
    settings = load_settings(
        None,
        overrides={"llm": {"base_url": fake_llm.base_url, "api_key": "sk-test", "max_retries": 0}},
        environ_secrets=False,
    )
    clock = ManualClock(T0)
    store = await SqliteStore.open(tmp_path / "t.db")
    llm = build_llm(settings, usage=UsageRepo(store, clock), clock=clock)
    conversations = ConversationRepo(store, clock)
    agent = build_agent(
        settings=settings,
        registry=default_registry(TOOLS),
        store=store,
        clock=clock,
        llm=llm,
        approvals=ApprovalBroker(clock),
        conversations=conversations,
    )
    repo, outbox = TaskRepo(store, clock), OutboxRepo(store, clock)
    sleeps: list[float] = []

    async def no_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    runner = TaskRunner(
        repo=repo, outbox=outbox, conversations=conversations, agent=agent, clock=clock,
        sleep=no_sleep,
    )  # fmt: skip
    scheduler = TaskScheduler(repo=repo, runner=runner, clock=clock, timezone=lambda: "UTC")
    rig = Rig(store, clock, repo, outbox, runner, scheduler, sleeps)
    yield rig
    await rig.scheduler.stop()
    await llm.close()
    await store.close()


def hourly(name: str, **fields: Any) -> TaskSpec:
    return TaskSpec(name=name, interval_seconds=3600, **fields)


async def run_now(rig: Rig, name: str) -> list[str]:
    await rig.scheduler.run_now(name)
    await rig.scheduler.wait_idle()
    return await rig.statuses(name)


@pytest.mark.parametrize(
    ("policy", "runs"), [("skip", 0), ("once", 1), ("each", 3)]
)  # fmt: skip
async def test_catch_up_after_downtime_follows_the_policy(rig: Rig, policy: str, runs: int) -> None:
    spec = hourly("report", command=["echo", "report"], catch_up=policy, catch_up_max=3)
    await rig.scheduler.start([spec])
    assert await rig.statuses("report") == []  # created now: nothing missed yet
    rig.clock.advance(10 * 3600 + 60)  # down for ten hours
    scheduler = await rig.restart()
    await scheduler.start([spec])
    await scheduler.wait_idle()
    statuses = await rig.statuses("report")
    assert statuses.count("ok") == runs
    assert statuses.count("skipped") == 1  # one row marks the slots passed over
    task = await rig.repo.get("report")
    runs_rows = await rig.repo.runs(task.id)
    ran = sorted(r.slot for r in runs_rows if r.status == "ok")
    expected = [T0 + timedelta(hours=h) for h in range(11 - runs, 11)]
    assert [datetime.fromisoformat(s) for s in ran] == expected  # the latest slots, in order
    # a second restart at the same moment finds nothing more to do: every slot is claimed
    scheduler = await rig.restart()
    await scheduler.start([spec])
    await scheduler.wait_idle()
    assert await rig.statuses("report") == statuses


async def test_a_claimed_slot_never_runs_twice(rig: Rig) -> None:
    await rig.scheduler.start([hourly("once", command=["true"])])
    task = await rig.repo.get("once")
    slot = "2026-03-02T09:00:00.000000Z"
    assert await rig.repo.claim(task.id, slot) is not None
    assert await rig.repo.claim(task.id, slot) is None


async def test_the_pre_check_gate_spends_no_tokens_when_there_is_nothing_to_do(
    rig: Rig, fake_llm: FakeChatServer
) -> None:
    await rig.scheduler.start([hourly("news", prompt="What changed?", precheck=["false"])])
    assert await run_now(rig, "news") == ["nothing_to_do"]
    assert fake_llm.calls == 0 and await rig.texts() == []


async def test_a_pre_check_with_work_passes_its_output_to_the_agent(
    rig: Rig, fake_llm: FakeChatServer
) -> None:
    fake_llm.script(Reply(content="Two new CVEs affect openssl."))
    precheck = ["sh", "-c", 'echo \'{"run": true, "context": "openssl 3.0.2 installed"}\'']
    await rig.scheduler.start([hourly("cves", prompt="Any CVEs?", precheck=precheck)])
    assert await run_now(rig, "cves") == ["ok"]
    prompt = fake_llm.requests[0]["messages"][-1]["content"]
    assert '<untrusted-data source="pre-check">' in prompt and "openssl 3.0.2" in prompt
    assert await rig.texts() == ["[cves] Two new CVEs affect openssl."]


async def test_the_no_news_token_is_not_delivered(rig: Rig, fake_llm: FakeChatServer) -> None:
    fake_llm.script(Reply(content="NO_NEWS"))
    await rig.scheduler.start([hourly("quiet", prompt="Anything?")])
    assert await run_now(rig, "quiet") == ["ok"]
    assert await rig.texts() == []
    task = await rig.repo.get("quiet")
    [run] = await rig.repo.runs(task.id)
    assert run.tokens > 0 and run.outbox_id is None


async def test_failures_back_off_notify_once_then_pause(rig: Rig) -> None:
    spec = hourly("broken", command=["false"], retries=2, retry_backoff_seconds=10,
                  notify_after_failures=2, pause_after_failures=3)  # fmt: skip
    await rig.scheduler.start([spec])
    assert await run_now(rig, "broken") == ["failed"]
    assert rig.sleeps == [10, 20]  # backoff doubles between the retries of one slot
    assert await rig.texts() == []
    await run_now(rig, "broken")
    [notice] = await rig.texts()
    assert "failed 2 times in a row" in notice and "after 10 failures" not in notice
    await run_now(rig, "broken")
    texts = await rig.texts()
    assert len(texts) == 2 and "is now paused" in texts[1]
    assert "nightshift tasks resume broken" in texts[1]
    task = await rig.repo.get("broken")
    assert task.paused_reason and "3 consecutive failures" in task.paused_reason
    assert rig.scheduler.next_run("broken") is None


async def test_an_unattended_privileged_call_is_denied_at_once(
    rig: Rig, fake_llm: FakeChatServer
) -> None:
    fake_llm.script(
        Reply(tool_calls=[("run_command", '{"command": "systemctl restart nginx"}')]),
        Reply(content="I would need approval to restart nginx; not done."),
    )
    await rig.scheduler.start([hourly("fixer", prompt="Restart nginx if needed")])
    assert await run_now(rig, "fixer") == ["ok"]
    result = next(m for m in fake_llm.requests[1]["messages"] if m["role"] == "tool")
    assert "unattended" in result["content"] and "denied" in result["content"]
    assert await rig.texts() == ["[fixer] I would need approval to restart nginx; not done."]


async def test_a_run_past_its_timeout_is_cancelled_and_recorded(rig: Rig) -> None:
    await rig.scheduler.start([hourly("slow", command=["sleep", "30"], timeout_seconds=0.3)])
    assert await run_now(rig, "slow") == ["timeout"]


async def test_a_run_cancelled_at_stop_is_recorded_before_stop_returns(rig: Rig) -> None:
    """The store closes right after the scheduler stops: the "interrupted" row must be written
    by then (stop used to cancel the run and return at once)."""
    await rig.scheduler.start([hourly("slow", command=["sleep", "30"])])
    await rig.scheduler.run_now("slow")
    for _ in range(1000):  # polls a condition, up to 10 s
        if await rig.statuses("slow") == ["running"]:
            break
        await asyncio.sleep(0.01)
    await rig.scheduler.stop(timeout=0.05)
    assert await rig.statuses("slow") == ["interrupted"]


async def test_quiet_hours_hold_proactive_results_but_not_critical_ones(rig: Rig) -> None:
    quiet = QuietHours(QuietHoursSettings(enabled=True, start="07:00", end="09:00"), "UTC")
    rig.outbox.hold_until = quiet.hold_until  # it is 08:00
    normal = hourly("normal", command=["echo", "hi"])
    await rig.scheduler.start([normal, hourly("urgent", command=["echo", "now"], critical=True)])
    await run_now(rig, "normal")
    await run_now(rig, "urgent")
    due = [m.text for m in await rig.outbox.due("console")]
    assert due == ["[urgent] now"]
    later = [m.text for m in await rig.outbox.due("console", T0 + timedelta(hours=1))]
    assert later == ["[normal] hi", "[urgent] now"]


async def test_config_reconciliation_adds_changes_and_removes(rig: Rig) -> None:
    await rig.scheduler.start([hourly("a", command=["true"]), hourly("b", command=["true"])])
    report = await rig.scheduler.reconcile(
        [
            hourly("a", command=["true"]),
            TaskSpec(name="b", cron="0 9 * * *", command=["true"]),
            hourly("c", command=["true"]),
        ]  # fmt: skip
    )
    assert report == {"added": ["c"], "changed": ["b"], "removed": []}
    report = await rig.scheduler.reconcile([hourly("c", command=["true"])])
    assert report == {"added": [], "changed": [], "removed": ["a", "b"]}
    assert [t.name for t in await rig.repo.all()] == ["c"]


async def test_slots_that_pass_while_paused_are_not_caught_up_later(rig: Rig) -> None:
    spec = hourly("paused", command=["true"], catch_up="each", catch_up_max=5)
    await rig.scheduler.start([spec])
    await rig.scheduler.pause("paused", "maintenance")
    rig.clock.advance(5 * 3600 + 60)
    await rig.scheduler.resume("paused")
    scheduler = await rig.restart()
    await scheduler.start([spec])
    await scheduler.wait_idle()
    assert await rig.statuses("paused") == ["skipped"]


async def test_old_runs_are_forgotten_but_the_latest_slot_stays(rig: Rig) -> None:
    spec = hourly("old", command=["true"], catch_up="each", catch_up_max=5)
    await rig.scheduler.start([spec])
    rig.clock.advance(5 * 3600 + 60)
    scheduler = await rig.restart()
    await scheduler.start([spec])
    await scheduler.wait_idle()
    assert await rig.statuses("old") == ["ok"] * 5
    rig.clock.advance(40 * 86400)
    assert await scheduler.prune() == 4
    task = await rig.repo.get("old")
    [kept] = await rig.repo.runs(task.id)
    assert kept.slot == "2026-03-02T13:00:00.000000Z"  # catch-up still counts from here


async def test_a_task_without_tools_sends_no_tool_schemas(
    rig: Rig, fake_llm: FakeChatServer
) -> None:
    fake_llm.script(Reply(content="All fine."))
    await rig.scheduler.start([hourly("plain", prompt="Say hi", tools="none")])
    assert await run_now(rig, "plain") == ["ok"]
    assert "tools" not in fake_llm.requests[0] or not fake_llm.requests[0]["tools"]


async def test_a_success_resets_the_failure_count(rig: Rig, tmp_path: Path) -> None:
    flag = tmp_path / "ok"
    spec = hourly("flaky", command=["test", "-e", str(flag)], retries=0,
                  notify_after_failures=3, pause_after_failures=5)  # fmt: skip
    await rig.scheduler.start([spec])
    for _ in range(2):
        await run_now(rig, "flaky")
    flag.touch()
    await run_now(rig, "flaky")
    assert (await rig.repo.get("flaky")).consecutive_failures == 0
    flag.unlink()
    for _ in range(2):
        await run_now(rig, "flaky")
    assert await rig.texts() == []  # never 3 in a row: nobody was bothered
    assert await rig.statuses("flaky") == ["failed", "failed", "ok", "failed", "failed"]
