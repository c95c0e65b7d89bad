"""The webhook route against the real Prometheus Alertmanager (Debian prometheus-alertmanager).

Alertmanager (child process, loopback) ── webhook v4 ──▶ our route on a loopback aiohttp server
── AlertEvents ──▶ a recording intake. Group timings are 1 s, so each test takes a few seconds.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web

from daemon.alerting.alertmanager import PATH, WebhookStats, alertmanager_routes
from daemon.core.alerts import AlertEvent
from daemon.core.clock import SystemClock
from tests.peers.alertmanager import SKIP_REASON, Alertmanager, alertmanager_binary, firing

pytestmark = pytest.mark.skipif(alertmanager_binary() is None, reason=SKIP_REASON)

TOKEN = "am-webhook-token-6f1d2c9a"
WAIT_SECONDS = 30.0  # generous: a loaded 2-core machine; deliveries take ~1 s here
NO_REPEAT_SECONDS = 3.0  # three group_interval ticks in which a duplicate would show up


@dataclass
class RecordingIntake:
    """Records each accepted batch (one batch = one webhook notification)."""

    batches: list[list[AlertEvent]] = field(default_factory=list)
    failures_left: int = 0

    async def accept(self, events: Sequence[AlertEvent]) -> None:
        if self.failures_left > 0:
            self.failures_left -= 1
            raise RuntimeError("database is locked")
        self.batches.append(list(events))

    @property
    def events(self) -> list[AlertEvent]:
        return [event for batch in self.batches for event in batch]


@dataclass
class Receiver:
    url: str
    intake: RecordingIntake
    stats: WebhookStats


async def wait_until(
    check: Callable[[], bool | Awaitable[bool]], what: str, am: Alertmanager
) -> None:
    """Poll ``check`` (plain or async) until true; fail with Alertmanager's log after a while."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_SECONDS
    while True:
        result = check()
        if await result if inspect.isawaitable(result) else result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}; Alertmanager log:\n{am.tail()}")
        await asyncio.sleep(0.05)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    intake, stats = RecordingIntake(), WebhookStats()
    app = web.Application()
    app.add_routes(alertmanager_routes(intake, TOKEN, clock=SystemClock(), stats=stats))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield Receiver(f"http://127.0.0.1:{port}{PATH}", intake, stats)
    finally:
        await runner.cleanup()


@pytest.fixture
async def am(receiver: Receiver, tmp_path: Path) -> AsyncIterator[Alertmanager]:
    async with Alertmanager(tmp_path / "am", receiver.url, TOKEN) as manager:
        yield manager


async def test_firing_alert_arrives_once_with_labels_annotations_and_severity(
    am: Alertmanager, receiver: Receiver
) -> None:
    labels = {"alertname": "NightshiftDiskFull", "instance": "db1", "severity": "page"}
    annotations = {"summary": "disk / is 97% full", "runbook_url": "https://runbooks/disk"}
    before = datetime.now(UTC)

    await am.fire(labels, annotations)  # no startsAt: Alertmanager stamps it, in nanoseconds
    await wait_until(lambda: bool(receiver.intake.batches), "the firing notification", am)

    (event,) = receiver.intake.events
    (held,) = await am.alerts()
    assert event.status == "firing"
    assert event.source == "alertmanager"
    assert event.fingerprint == "am:" + held["fingerprint"]
    assert dict(event.labels) == {**labels, "severity": "critical", "am_severity": "page"}
    assert dict(event.annotations) == annotations
    assert event.ends_at is None
    assert before - timedelta(seconds=5) <= event.starts_at <= datetime.now(UTC)

    await asyncio.sleep(NO_REPEAT_SECONDS)  # nothing changed: repeat_interval is 1 h
    assert len(receiver.intake.batches) == 1
    assert receiver.stats.accepted_events == 1
    assert receiver.stats.auth_failures == 0


async def test_resolving_delivers_a_resolved_event_with_the_same_fingerprint(
    am: Alertmanager, receiver: Receiver
) -> None:
    labels = {"alertname": "NightshiftHighLoad", "instance": "web1", "severity": "warning"}
    started = datetime.now(UTC) - timedelta(seconds=30)
    await am.fire(labels, {"summary": "load high"}, starts_at=started)
    await wait_until(lambda: bool(receiver.intake.batches), "the firing notification", am)
    (fired,) = receiver.intake.events
    assert fired.status == "firing"

    ended = datetime.now(UTC) - timedelta(seconds=1)
    await am.resolve(labels, {"summary": "load high"}, starts_at=started, ends_at=ended)
    await wait_until(
        lambda: any(e.status == "resolved" for e in receiver.intake.events),
        "the resolved notification",
        am,
    )

    resolved = next(e for e in receiver.intake.events if e.status == "resolved")
    assert resolved.fingerprint == fired.fingerprint
    assert resolved.starts_at == fired.starts_at == started
    assert resolved.ends_at == ended
    assert resolved.labels["severity"] == "warning" and "am_severity" not in resolved.labels


async def test_wrong_token_is_refused_and_nothing_reaches_the_intake(
    receiver: Receiver, tmp_path: Path
) -> None:
    async with Alertmanager(tmp_path / "am", receiver.url, "not-" + TOKEN) as am:
        await am.fire({"alertname": "NightshiftSshBruteForce", "severity": "critical"})

        # 401 is not retried within one send, but the unacknowledged group is sent again at
        # every group_interval tick: wait for two refusals, neither may reach the intake.
        await wait_until(lambda: receiver.stats.auth_failures >= 2, "two refused deliveries", am)

        async def alertmanager_counts_a_failed_send() -> bool:
            name = "alertmanager_notifications_failed_total"
            return await am.metric(name, integration="webhook") >= 1

        await wait_until(alertmanager_counts_a_failed_send, "Alertmanager's failure metric", am)

    taken = [e for b in receiver.intake.batches for e in b if e.source != "nightshift"]
    assert taken == []  # only the alarm that a payload was refused
    assert receiver.stats.accepted_events == 0


async def test_two_alerts_in_one_group_arrive_in_one_payload(
    am: Alertmanager, receiver: Receiver
) -> None:
    await am.post_alerts(
        [
            firing({"alertname": "NightshiftDiskFull", "instance": "db1"}),
            firing({"alertname": "NightshiftDiskFull", "instance": "db2", "severity": "info"}),
        ]
    )
    await wait_until(lambda: bool(receiver.intake.batches), "the group notification", am)

    first = receiver.intake.batches[0]
    assert sorted(e.labels["instance"] for e in first) == ["db1", "db2"]
    assert len({e.fingerprint for e in first}) == 2
    assert {e.labels["instance"]: e.severity for e in first} == {"db1": "warning", "db2": "info"}


async def test_intake_failure_answers_503_and_alertmanager_retries(
    am: Alertmanager, receiver: Receiver
) -> None:
    receiver.intake.failures_left = 1

    await am.fire({"alertname": "NightshiftBackupFailed", "severity": "critical"})
    await wait_until(lambda: bool(receiver.intake.batches), "the retried notification", am)

    assert receiver.stats.intake_failures == 1
    (event,) = receiver.intake.events
    assert event.name == "NightshiftBackupFailed"
