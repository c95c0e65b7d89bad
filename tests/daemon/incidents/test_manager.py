"""Incidents: grouping, group_wait/interval/repeat, resolved notices, silences, maintenance,
inhibition, Alertmanager snapshot repeats and restarts — on a real SQLite file, manual clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from daemon.alerting.pipeline import AlertPipeline
from daemon.alerting.settings import RuleSettings
from daemon.core.alerts import AlertEvent, Observation, fingerprint
from daemon.core.clock import ManualClock
from daemon.incidents.commands import IncidentCommands
from daemon.incidents.manager import IncidentManager, Responder
from daemon.incidents.poster import IncidentPoster
from daemon.incidents.routing import Router
from daemon.incidents.runbooks import RunbookLibrary
from daemon.incidents.settings import IncidentSettings
from memory.alerts import AlertRepo
from memory.incidents import IncidentRepo, SilenceRepo
from memory.outbox import OutboxRepo
from memory.store import SqliteStore

START = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # a Monday


class World:
    def __init__(self, store: SqliteStore, clock: ManualClock, tmp: Path, **settings: Any) -> None:
        self.store, self.clock = store, clock
        self.outbox = OutboxRepo(store, clock)
        self.incidents = IncidentRepo(store, clock)
        self.silences = SilenceRepo(store, clock)
        self.alerts = AlertRepo(store)
        base = {
            "group_wait_seconds": 30,
            "group_interval_seconds": 300,
            "repeat_interval_seconds": 3600,
        }
        self.settings = IncidentSettings(**{**base, **settings})
        self.poster = IncidentPoster(
            store=store, incidents=self.incidents, outbox=self.outbox,
            router=Router([], ["console"]), clock=clock,
        )  # fmt: skip
        self.runbooks = RunbookLibrary(tmp / "runbooks")
        self.manager = self.build_manager()
        self.seen = 0

    def build_manager(self, responder: Responder | None = None) -> IncidentManager:
        return IncidentManager(
            self.settings,
            store=self.store, alerts=self.alerts, incidents=self.incidents,
            silences=self.silences, poster=self.poster, runbooks=self.runbooks,
            clock=self.clock, responder=responder,
        )  # fmt: skip

    async def fire(self, name: str, **labels: str) -> str:
        return await self._event("firing", name, labels)

    async def resolve(self, name: str, **labels: str) -> str:
        return await self._event("resolved", name, labels)

    async def _event(self, status: str, name: str, labels: dict[str, str]) -> str:
        full = {"alertname": name, "severity": labels.pop("severity", "warning"), **labels}
        now = self.clock.now()
        await self.manager.accept([
            AlertEvent(fingerprint=fingerprint(full), status=status, labels=full,  # type: ignore[arg-type]
                       annotations={"summary": f"{name} on {labels}"}, starts_at=now, at=now,
                       ends_at=now if status == "resolved" else None, source="alertmanager")
        ])  # fmt: skip
        await self.manager.step()
        return fingerprint(full)

    async def after(self, seconds: float) -> list[str]:
        """Advance the clock, run the manager, return the messages queued since last time."""
        self.clock.advance(seconds)
        await self.manager.step()
        return await self.new_messages()

    async def new_messages(self) -> list[str]:
        async with self.store.read() as db:
            rows = await db.execute_fetchall(
                "SELECT id, text FROM outbox WHERE id > ? ORDER BY id", (self.seen,)
            )
        rows = list(rows)
        if rows:
            self.seen = rows[-1][0]
        return [row[1] for row in rows]


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    store = await SqliteStore.open(tmp_path / "n.db")
    try:
        yield World(store, ManualClock(START), tmp_path)
    finally:
        await store.close()


async def test_group_wait_collects_alerts_into_one_notification(world: World) -> None:
    await world.fire("DiskFull", mount="/var")
    assert await world.after(10) == []
    await world.fire("DiskFull", mount="/srv")
    [text] = await world.after(20)
    assert text.startswith("[FIRING:2] DiskFull — incident #1 (warning)")
    assert "mount=/srv" in text and "mount=/var" in text
    assert await world.after(3000) == []  # nothing new, repeat not due yet


async def test_changes_wait_for_group_interval_and_unchanged_repeats(world: World) -> None:
    await world.fire("DiskFull", mount="/var")
    assert len(await world.after(30)) == 1
    await world.fire("DiskFull", mount="/srv")
    assert await world.after(100) == []  # group_interval (300 s) since the last notification
    [update] = await world.after(200)
    assert update.startswith("[FIRING:2]")
    [reminder] = await world.after(3600)
    assert reminder.startswith("[Reminder: still firing:2]")


async def test_snapshot_repeats_are_not_news(world: World) -> None:
    await world.fire("HostDown", instance="a")
    assert len(await world.after(30)) == 1
    for _ in range(5):  # Alertmanager resends its whole group every group_interval
        await world.fire("HostDown", instance="a")
        assert await world.after(300) == []
    [incident] = await world.incidents.listing()
    timeline = await world.incidents.timeline(incident.id)
    assert [e.kind for e in timeline] == ["opened", "alert firing", "notified"]


async def test_resolution_sends_one_resolved_notice_and_closes(world: World) -> None:
    await world.fire("HostDown", instance="a")
    await world.after(30)
    await world.resolve("HostDown", instance="a")
    [notice] = await world.after(300)
    assert notice.startswith("[RESOLVED] HostDown — incident #1")
    await world.resolve("HostDown", instance="a")  # repeated resolve: ignored
    assert await world.after(0) == []
    assert await world.after(300) == []  # nothing fired again for group_interval: closed
    [incident] = await world.incidents.listing()
    assert incident.state == "resolved"
    # the same alert firing again later opens a new incident, after its own group_wait
    await world.fire("HostDown", instance="a")
    assert await world.after(29) == []
    [text] = await world.after(1)
    assert "incident #2" in text


class Recorder:
    """A Responder that records what it was asked to do."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def first_notified(self, incident_id: int) -> None:
        self.calls.append(("investigate", incident_id))

    def resolved(self, incident_id: int) -> None:
        self.calls.append(("resolved", incident_id))

    def closed(self, incident_id: int) -> None:
        self.calls.append(("postmortem", incident_id))


async def test_an_alert_flapping_on_after_its_resolved_notice_stays_one_incident(
    world: World,
) -> None:
    """A re-fire right after the resolved notice joins the incident (as Alertmanager's group
    does); it used to open a new incident, with its own notices and postmortem, every cycle."""
    recorder = Recorder()
    world.manager = world.build_manager(recorder)
    await world.fire("Flappy", host="web1")
    sent = await world.after(30)
    for _ in range(6):  # 30 minutes of flapping: 100 s resolved, 100 s firing
        await world.resolve("Flappy", host="web1")
        sent += await world.after(100)
        await world.fire("Flappy", host="web1")
        sent += await world.after(100)
    await world.resolve("Flappy", host="web1")
    sent += await world.after(300)
    sent += await world.after(300)
    assert [i.state for i in await world.incidents.listing()] == ["resolved"]
    assert all("incident #1 " in text for text in sent), sent
    assert len(sent) <= 1 + 1230 // 300 + 1  # the first notice, then one per group_interval
    assert sent[0].startswith("[FIRING:1]") and sent[-1].startswith("[RESOLVED]")
    assert any("Flapping: fired" in text for text in sent)
    assert [c for c in recorder.calls if c[0] != "resolved"] == [
        ("investigate", 1), ("postmortem", 1),
    ]  # fmt: skip
    timeline = await world.incidents.timeline(1)
    assert timeline[-1].kind == "closed" and "fired 7 times" in timeline[-1].detail


async def test_flapping_that_goes_on_after_its_flapping_notice_stays_one_incident(
    world: World,
) -> None:
    recorder = Recorder()
    world.manager = world.build_manager(recorder)
    for _ in range(3):  # every phase shorter than group_wait
        await world.fire("Flappy", host="web1")
        assert await world.after(4) == []
        await world.resolve("Flappy", host="web1")
        assert await world.after(4) == []
    [notice] = await world.after(6)
    assert notice.startswith("[FLAPPING] Flappy")
    await world.fire("Flappy", host="web1")  # flaps once more, resolved again by the next tick
    await world.after(4)
    await world.resolve("Flappy", host="web1")
    assert await world.after(300) == []  # the state people were told (resolved) still holds
    assert await world.after(300) == []
    [incident] = await world.incidents.listing()
    assert incident.state == "resolved"
    assert recorder.calls == [("resolved", 1), ("postmortem", 1)]


async def test_grouping_by_labels_separates_incidents(world: World, tmp_path: Path) -> None:
    world.manager.settings = IncidentSettings(group_by=["instance"], group_wait_seconds=10)
    await world.fire("HighCpu", instance="a")
    await world.fire("HighLoad", instance="a")
    await world.fire("HighCpu", instance="b")
    texts = await world.after(10)
    assert len(texts) == 2
    assert sorted(t.split(" — ")[0] for t in texts) == [
        "[FIRING:1] HighCpu (instance=b)",
        "[FIRING:2] HighCpu (instance=a)",
    ]


async def test_silence_mutes_until_it_expires(world: World) -> None:
    await world.silences.add(
        ["alertname=DiskFull", "mount=~/v.*"], START + timedelta(hours=1), "ann"
    )
    await world.fire("DiskFull", mount="/var")
    assert await world.after(30) == []
    [incident] = await world.incidents.listing()
    assert "silenced by #1" in (await world.incidents.timeline(incident.id))[-1].detail
    [text] = await world.after(3600)  # the silence ended
    assert text.startswith("[FIRING:1] DiskFull")


async def test_expiring_a_silence_early_notifies_at_once(world: World) -> None:
    commands = IncidentCommands(
        world.incidents, world.silences, world.clock, world.manager.silences_changed
    )
    silence = await world.silences.add(["alertname=DiskFull"], START + timedelta(days=1), "ann")
    await world.fire("DiskFull")
    assert await world.after(30) == []
    assert await world.after(15) == []
    assert await commands.run("unsilence", str(silence.id), "ann") == "Silence #1 expired."
    [text] = await world.after(0)  # not after the next 60 s re-check
    assert text.startswith("[FIRING:1] DiskFull")
    [incident] = await world.incidents.listing()
    kinds = [entry.kind for entry in await world.incidents.timeline(incident.id)]
    assert kinds[-2:] == ["unmuted", "notified"]


async def test_a_silence_that_ends_is_followed_by_the_notice_at_that_moment(
    world: World,
) -> None:
    ends = START + timedelta(minutes=10, seconds=45)  # not on a 60 s re-check tick
    await world.silences.add(["alertname=DiskFull"], ends, "ann")
    await world.fire("DiskFull")
    assert await world.after(30) == []
    assert await world.after(614) == []  # 12:10:44
    [text] = await world.after(1)
    assert text.startswith("[FIRING:1] DiskFull")


async def test_maintenance_window_mutes_only_inside_it(world: World) -> None:
    world.manager.settings = IncidentSettings(group_wait_seconds=0)
    from daemon.incidents.muting import Muter
    from daemon.incidents.settings import MaintenanceSettings

    window = MaintenanceSettings(
        name="backup",
        matchers=["alertname=HighLoad"],
        days=["mon"],
        start="11:30",
        duration_minutes=60,
    )
    world.manager.muter = Muter([], [window])
    await world.fire("HighLoad")  # Monday 12:00: inside 11:30–12:30
    assert await world.after(0) == []
    [text] = await world.after(30 * 60 + 60)
    assert text.startswith("[FIRING:1] HighLoad")


async def test_inhibition_mutes_dependents_while_the_source_fires(world: World) -> None:
    from daemon.incidents.muting import Muter
    from daemon.incidents.settings import InhibitSettings

    world.manager.settings = IncidentSettings(group_by=["alertname"], group_wait_seconds=0)
    world.manager.muter = Muter(
        [
            InhibitSettings(
                source=["alertname=HostDown"], target=["alertname!=HostDown"], equal=["instance"]
            )
        ],
        [],
    )
    await world.fire("HostDown", instance="a", severity="critical")
    await world.fire("HttpDown", instance="a")
    await world.fire("HttpDown2", instance="b")
    texts = await world.after(0)
    assert sorted(t.split(" — ")[0] for t in texts) == [
        "[FIRING:1] HostDown",
        "[FIRING:1] HttpDown2",
    ]


async def test_severity_rises_with_a_critical_alert(world: World) -> None:
    await world.fire("DiskFull", mount="/var")
    await world.fire("DiskFull", mount="/", severity="critical")
    [text] = await world.after(30)
    assert "(critical)" in text.splitlines()[0]


async def test_runbook_is_attached_to_the_notification(world: World, tmp_path: Path) -> None:
    (tmp_path / "runbooks").mkdir()
    (tmp_path / "runbooks" / "disk-full.md").write_text("# Disk full\n1. du -xh /var | sort -h\n")
    await world.fire("DiskFull")
    [text] = await world.after(30)
    assert "Runbook: disk-full.md" in text and "du -xh /var" in text


async def test_rule_events_flow_through_the_pipeline_and_survive_a_restart(
    world: World,
) -> None:
    rules = [RuleSettings(name="HighCpu", metric="cpu_percent", op=">", threshold=90)]
    pipeline = AlertPipeline(rules, world.alerts, world.clock, on_events=world.manager.wake)

    def cpu(value: float) -> Observation:
        return Observation(source="host", metric="cpu_percent", at=world.clock.now(), value=value)

    pipeline.emit(cpu(95))
    await pipeline.flush()
    await world.manager.step()
    assert len(await world.after(30)) == 1
    # a restart: a new pipeline restores the firing alert without announcing it again
    again = AlertPipeline(rules, world.alerts, world.clock)
    assert await again.restore() == 1
    again.emit(cpu(97))
    await again.flush()
    assert await world.after(300) == []
    again.emit(cpu(10))
    await again.flush()
    [notice] = await world.after(300)
    assert notice.startswith("[RESOLVED] HighCpu")


async def test_follow_ups_on_slack_reply_in_the_incident_thread(world: World) -> None:
    world.poster.router = Router([], ["slack:C0OPS", "telegram:42"])
    await world.fire("DiskFull", mount="/var")
    await world.after(30)
    await world.fire("DiskFull", mount="/srv")
    await world.after(300)
    await world.poster.post(1, "Findings …", "findings")
    async with world.store.read() as db:
        rows = [tuple(r) for r in await db.execute_fetchall(
            "SELECT channel, thread FROM outbox ORDER BY id")]  # fmt: skip
    first = "outbox:incident:1:notified:1:slack:C0OPS"
    assert rows == [("slack", None), ("telegram", None), ("slack", first), ("telegram", None),
                    ("slack", first), ("telegram", None)]  # fmt: skip


async def test_events_committed_before_a_crash_are_handled_after_it(world: World) -> None:
    full = {"alertname": "A", "severity": "warning"}
    event = AlertEvent(fingerprint="x", status="firing", labels=full, annotations={},
                       starts_at=START, at=START)  # fmt: skip
    await world.alerts.accept([event])  # committed, then the process "dies" before handling
    assert len(await world.alerts.unhandled()) == 1
    await world.manager.step()
    assert await world.alerts.unhandled() == []
    assert len(await world.after(30)) == 1


async def test_a_backlog_does_not_hold_up_notifications_that_are_due(world: World) -> None:
    from daemon.incidents import manager as module

    world.manager.settings = IncidentSettings(group_wait_seconds=0)
    first = {"alertname": "First", "severity": "warning"}
    later = [
        AlertEvent(fingerprint=f"f{n}", status="firing", labels={"alertname": "Other", "n": str(n),
                   "severity": "warning"}, annotations={}, starts_at=START, at=START)
        for n in range(2 * module.BATCH)
    ]  # fmt: skip
    head = AlertEvent(fingerprint="first", status="firing", labels=first, annotations={},
                      starts_at=START, at=START)  # fmt: skip
    await world.alerts.accept([head, *later])
    sent: list[int] = []
    original = world.manager._handle

    async def handle(batch):  # type: ignore[no-untyped-def]
        sent.append(len(await world.new_messages()))
        await original(batch)

    world.manager._handle = handle  # type: ignore[method-assign]
    await world.manager.step()
    # First was notified before the second batch was taken; Other, still in the backlog, waits
    # for the rest of its events and is announced once, whole
    assert sent[:2] == [0, 1]
    [other] = await world.new_messages()
    assert other.startswith(f"[FIRING:{2 * module.BATCH}] Other")


async def test_flapping_faster_than_group_wait_is_announced(world: World) -> None:
    """Alertmanager announces such a group; nightshift used to open a new silent incident each
    time (and then post a postmortem for each)."""
    for _ in range(3):  # firing 4 s, resolved 4 s: every phase shorter than group_wait
        await world.fire("Flappy", host="web1")
        assert await world.after(4) == []
        await world.resolve("Flappy", host="web1")
        assert await world.after(4) == []
    [notice] = await world.after(6)
    assert notice.startswith("[FLAPPING] Flappy")
    assert "fired up to 3 times" in notice
    assert await world.after(300) == []  # closed quietly when nothing fired again
    assert [i.state for i in await world.incidents.listing()] == ["resolved"]


async def test_a_re_fire_of_a_blip_joins_it_and_is_announced_at_once(world: World) -> None:
    await world.fire("Flappy", host="web1")
    await world.resolve("Flappy", host="web1")
    assert await world.after(30) == []  # resolved before group_wait: held, not announced
    assert await world.after(100) == []
    await world.fire("Flappy", host="web1")
    [notice] = await world.new_messages()
    assert notice.startswith("[FIRING:1] Flappy") and "incident #1 " in notice
    assert "Flapping: fired 2 times" in notice


async def test_a_single_blip_closes_silently_with_the_reason_in_its_timeline(
    world: World,
) -> None:
    await world.fire("Blip", host="web1")
    await world.resolve("Blip", host="web1")
    assert await world.after(30) == []
    assert await world.after(300) == []
    [incident] = await world.incidents.listing()
    assert incident.state == "resolved" and incident.notifications == 0
    timeline = await world.incidents.timeline(incident.id)
    assert timeline[-1].detail == "resolved within group_wait; not announced"


async def test_two_alerts_of_one_group_are_not_flapping(world: World) -> None:
    await world.fire("DiskFull", mount="/var")
    await world.fire("DiskFull", mount="/srv")
    [text] = await world.after(30)
    assert "Flapping" not in text


async def test_one_big_snapshot_is_one_state_and_one_notice(world: World) -> None:
    """A webhook snapshot of 1,000 alerts in one group, applied in slices, used to announce
    states that never existed (FIRING:500, then FIRING:1000)."""
    await world.fire("DiskFull", mount="/0")
    [first] = await world.after(30)
    assert first.startswith("[FIRING:1]")
    world.clock.advance(300)  # group_interval passed: the next change is due at once
    now = world.clock.now()
    snapshot = []
    for n in range(1, 1001):
        labels = {"alertname": "DiskFull", "severity": "warning", "mount": f"/{n}"}
        snapshot.append(
            AlertEvent(fingerprint=fingerprint(labels), status="firing", labels=labels,
                       annotations={}, starts_at=now, at=now, source="alertmanager")
        )  # fmt: skip
    await world.manager.accept(snapshot)
    await world.manager.step()
    [update] = await world.new_messages()
    assert update.startswith("[FIRING:1001] DiskFull")


def test_a_stored_silence_whose_regex_is_refused_now_mutes_nothing_and_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A silence saved before patterns ran on RE2 may hold a lookahead: it is skipped, loudly."""
    from daemon.incidents.muting import Muter
    from memory.incidents import Silence

    now = datetime(2026, 1, 1, tzinfo=UTC)
    silence = Silence(
        id=7,
        matchers=["alertname=~Disk(?=Full)"],
        starts_at=now - timedelta(hours=1),
        ends_at=now + timedelta(hours=1),
        created_by="chat:ops",
        comment="",
        expired_at=None,
    )
    muter = Muter([], [])
    assert muter.reason({"alertname": "DiskFull"}, now=now, silences=[silence], firing=[]) is None
    assert "silence #7 mutes nothing" in caplog.text and "lookahead" in caplog.text
