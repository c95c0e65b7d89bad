"""Retention: a simulated year of a busy daemon on the injected clock stays bounded, and
nothing still needed is pruned."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from daemon.core.alerts import AlertEvent, fingerprint
from daemon.core.clock import ManualClock
from memory._codec import to_db_time
from memory.alerts import AlertRepo
from memory.retention import RetentionRepo
from memory.settings import MemorySettings
from memory.store import SqliteStore
from tests.memory.workload import Rates, Workload

# Scaled down to run in seconds: the windows and shapes are what is under test, not the volume.
YEAR_RATES = Rates(
    events_per_minute=0.5,
    incidents_per_hour=0.25,
    timeline_per_incident=4,
    audit_per_hour=2,
    runs_per_hour=1,
    steps_per_run=2,
    usage_per_hour=1,
    messages_per_hour=1,
)


async def _needed_rows(store: SqliteStore, clock: ManualClock) -> dict[str, int]:
    """Rows that must survive any retention: an open incident with its timeline, a pending
    outbox message, an unhandled alert event and a firing alert."""
    now = to_db_time(clock.now())
    async with store.write() as db:
        cur = await db.execute(
            "INSERT INTO incidents (group_key, title, severity, labels, opened_at)"
            " VALUES ('g', 'still open', 'critical', '{}', ?)",
            (now,),
        )
        incident = cur.lastrowid
        await db.execute(
            "INSERT INTO incident_events (incident_id, at, kind, detail)"
            " VALUES (?, ?, 'opened', 'x')",
            (incident, now),
        )
        cur = await db.execute(
            "INSERT INTO outbox (channel, target, text, next_attempt_at, created_at)"
            " VALUES ('slack', 'C1', 'waiting for slack', ?, ?)",
            (now, now),
        )
        outbox = cur.lastrowid
        await db.execute(
            "INSERT INTO alert_state (fingerprint, rule, state, labels, annotations,"
            " active_since, fired_at, updated_at) VALUES ('fp-firing', 'HighCpu', 'firing',"
            " '{}', '{}', ?, ?, ?)",
            (now, now, now),
        )
    labels = {"alertname": "Unhandled", "severity": "warning"}
    event = AlertEvent(fingerprint=fingerprint(labels), status="firing", labels=labels,
                       annotations={}, starts_at=clock.now(), at=clock.now())  # fmt: skip
    await AlertRepo(store).accept([event])
    async with store.read() as db:
        rows = list(await db.execute_fetchall("SELECT max(id) FROM alert_events"))
    assert incident is not None and outbox is not None
    return {"incident": incident, "outbox": outbox, "alert_event": int(rows[0][0])}


async def test_a_simulated_year_stays_bounded_and_keeps_what_is_needed(
    store: SqliteStore, clock: ManualClock
) -> None:
    settings = MemorySettings()
    retention = RetentionRepo(store, clock)
    needed = await _needed_rows(store, clock)
    # the unhandled event must not be marked handled by the workload's bulk update
    workload = Workload(store, clock, YEAR_RATES)
    await store.execute_write(
        "UPDATE alert_events SET handled = 0, at = ? WHERE id = ?",
        (to_db_time(clock.now()), needed["alert_event"]),
    )
    step, days = 2, 366 + 30  # days written per step (then a prune), days simulated
    for _ in range(0, days, step):
        await workload.hour(24 * step)
        # the workload marks everything handled: put the unhandled one back
        await store.execute_write(
            "UPDATE alert_events SET handled = 0 WHERE id = ?", (needed["alert_event"],)
        )
        await retention.prune(settings.windows(), batch=200)
        await retention.sample()
    await retention.vacuum()
    counts = await retention.counts()
    hourly = 24 * YEAR_RATES.events_per_minute * 60
    # raw alert events: only the last 14 days (plus the one never handled)
    assert counts["alert_events"] <= (14 + step) * hourly + 1
    assert counts["alert_events"] >= 14 * hourly
    # incidents: every one resolved in the last 365 days is still there, none older
    now = clock.now()
    year_ago = now - timedelta(days=365)
    async with store.read() as db:
        kept = {row[0] for row in await db.execute_fetchall("SELECT id FROM incidents")}
        facts = {row[0] for row in await db.execute_fetchall("SELECT source FROM facts")}
    recent = {i for i, resolved in workload.incidents if resolved >= year_ago}
    old = {i for i, r in workload.incidents if r < year_ago - timedelta(days=step)}
    assert recent <= kept
    assert not old & kept
    assert {f"incident:{i}" for i in recent} <= facts  # their postmortems too
    assert not {f"incident:{i}" for i in old} & facts
    assert counts["incident_events"] <= len(kept) * YEAR_RATES.timeline_per_incident + 1
    # what is still needed survived a year of pruning
    assert needed["incident"] in kept
    async with store.read() as db:
        outbox = list(await db.execute_fetchall(
            "SELECT status FROM outbox WHERE id = ?", (needed["outbox"],)))  # fmt: skip
        event = list(await db.execute_fetchall(
            "SELECT handled FROM alert_events WHERE id = ?", (needed["alert_event"],)))  # fmt: skip
        state = list(await db.execute_fetchall("SELECT state FROM alert_state"))
        timeline = list(await db.execute_fetchall(
            "SELECT count(*) FROM incident_events WHERE incident_id = ?", (needed["incident"],)
        ))  # fmt: skip
    assert [tuple(r) for r in outbox] == [("pending",)]
    assert [tuple(r) for r in event] == [(0,)]
    assert [tuple(r) for r in state] == [("firing",)]
    assert timeline[0][0] == 1
    # the other tables hold their windows' worth
    assert counts["outbox"] <= (30 + step) * 24 * YEAR_RATES.incidents_per_hour * 3 + 1
    assert counts["audit_log"] <= (90 + step) * 24 * YEAR_RATES.audit_per_hour
    assert counts["agent_runs"] <= (90 + step) * 24 * YEAR_RATES.runs_per_hour
    steps = YEAR_RATES.runs_per_hour * YEAR_RATES.steps_per_run
    assert counts["run_steps"] <= (90 + step) * 24 * steps
    assert counts["inbound_seen"] <= (30 + step) * 24 * YEAR_RATES.messages_per_hour
    assert counts["component_events"] <= (90 + step) * 24
    assert counts["db_size"] <= 31
    # conversations are searchable memory: kept unless configured
    assert counts["conversations"] == days * 24


async def test_conversations_are_pruned_when_configured(
    store: SqliteStore, clock: ManualClock
) -> None:
    workload = Workload(store, clock, Rates(events_per_minute=0, incidents_per_hour=0))
    for _ in range(48):
        await workload.hour()
    settings = MemorySettings(conversations_days=1)
    removed = await RetentionRepo(store, clock).prune(settings.windows(), batch=3)
    counts = await RetentionRepo(store, clock).counts()
    assert removed["conversations"] == 24
    assert counts["conversations"] == 24
    assert counts["messages"] == 24 * 6


async def test_an_outbox_row_a_task_run_points_at_is_kept(
    store: SqliteStore, clock: ManualClock
) -> None:
    old = to_db_time(clock.now())
    async with store.write() as db:
        for status in ("delivered", "failed", "delivered"):
            await db.execute(
                "INSERT INTO outbox (channel, target, text, status, next_attempt_at, created_at)"
                " VALUES ('slack', 'C1', 'x', ?, ?, ?)",
                (status, old, old),
            )
        await db.execute(
            "INSERT INTO tasks (name, source, spec, owner, created_at, updated_at)"
            " VALUES ('t', 'config', '{}', 'o', ?, ?)",
            (old, old),
        )
        await db.execute(
            "INSERT INTO task_runs (task_id, slot, status, started_at, outbox_id)"
            " VALUES (1, 's', 'ok', ?, 3)",
            (old,),
        )
    clock.advance(40 * 86400)
    removed = await RetentionRepo(store, clock).prune({"outbox": 30}, batch=1)
    assert removed == {"outbox": 2}
    async with store.read() as db:
        rows = list(await db.execute_fetchall("SELECT id FROM outbox"))
    assert [r[0] for r in rows] == [3]


async def test_vacuum_gives_pruned_space_back(store: SqliteStore, clock: ManualClock) -> None:
    workload = Workload(store, clock, Rates(events_per_minute=20, incidents_per_hour=0))
    await workload.hour(24)
    retention = RetentionRepo(store, clock)
    before = (await retention.size()).file_bytes
    clock.advance(20 * 86400)
    await retention.prune({"alert_events": 14})
    freed = await retention.vacuum()
    after = await retention.size()
    assert after.auto_vacuum == "incremental"
    assert freed > 0 and after.free_bytes == 0
    assert after.file_bytes < before / 4
    assert store.path.stat().st_size == after.file_bytes


async def test_growth_rate_is_measured_over_the_last_day(
    store: SqliteStore, clock: ManualClock
) -> None:
    retention = RetentionRepo(store, clock)
    assert (await retention.size()).growth_bytes_per_day is None
    workload = Workload(store, clock, Rates(events_per_minute=10, incidents_per_hour=0))
    await retention.sample()
    for _ in range(24):
        await workload.hour()
    size = await retention.size()
    assert size.growth_window_days == 1.0
    assert size.growth_bytes_per_day is not None and size.growth_bytes_per_day > 100_000


async def test_an_existing_small_database_switches_to_incremental_vacuum(
    tmp_path: Path,
) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    async with await SqliteStore.open(path):
        pass
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.execute("PRAGMA auto_vacuum = NONE")
    conn.execute("VACUUM")
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    conn.close()
    async with (
        await SqliteStore.open(path, vacuum_at_open_max_bytes=0) as store,
        store.read() as db,
    ):
        assert list(await db.execute_fetchall("PRAGMA auto_vacuum"))[0][0] == 0
    async with await SqliteStore.open(path) as store, store.read() as db:
        assert list(await db.execute_fetchall("PRAGMA auto_vacuum"))[0][0] == 2


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("alert_events_days", -1, "negative; give a number of days (0 keeps forever)"),
        ("storage_alert_percent", 20, "greater than or equal to 50"),
        ("max_db_mb", -5, "greater than or equal to 0"),
    ],
)
def test_settings_errors_are_clear(field: str, value: float, message: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=re.escape(message)):
        MemorySettings.model_validate({field: value})


def test_windows_leave_out_what_is_kept_forever() -> None:
    windows = MemorySettings(audit_days=0).windows()
    assert "audit" not in windows and "conversations" not in windows
    assert windows["alert_events"] == 14 and windows["incidents"] == 365


async def test_every_prune_batch_finds_its_rows_by_index(store: SqliteStore) -> None:
    """A batch must not scan or sort the table: on a month of busy events that made each batch
    of 500 take ~0.4 s (a day's prune: over a minute), holding the writer all along."""
    from memory import retention

    statements = [*retention._SINGLE.values(), retention._RUN_STEPS, retention._RUNS,
                  retention._MESSAGES, retention._CONVERSATIONS, retention._EXPIRED_INCIDENTS,
                  retention._INCIDENT_EVENTS]  # fmt: skip
    async with store.read() as db:
        for sql in statements:
            plan = [row[3] for row in await db.execute_fetchall(f"EXPLAIN QUERY PLAN {sql}",
                                                                ("2026", 5))]  # fmt: skip
            assert not [step for step in plan if "TEMP B-TREE" in step or "SCAN" in step], (
                sql,
                plan,
            )
