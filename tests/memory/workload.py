"""A busy daemon's writes, an hour at a time, straight into the repositories (no daemon): for
the retention tests and bench/db_growth.py. Rows look like the real ones (sizes included)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

import aiosqlite

from daemon.core.alerts import AlertEvent, fingerprint
from daemon.core.clock import ManualClock
from memory._codec import to_db_time
from memory.alerts import AlertRepo
from memory.store import SqliteStore

HOSTS = [f"web-{i:02d}.prod.example.net" for i in range(20)]
NAMES = ["HighCpu", "DiskFilling", "HttpDown", "LogErrors", "ProcessRestarts"]


@dataclass(frozen=True, slots=True)
class Rates:
    """Records per simulated hour (alert events per minute)."""

    events_per_minute: float = 600.0  # the "busy config": ~0.5 GB/day of raw events
    incidents_per_hour: float = 2.0
    timeline_per_incident: int = 12
    audit_per_hour: int = 40
    runs_per_hour: int = 4
    steps_per_run: int = 8
    usage_per_hour: int = 20
    messages_per_hour: int = 6


class Workload:
    """Writes ``hours`` simulated hours per :meth:`hour` call (in one go, timestamps spread over
    them) and advances the clock as far."""

    def __init__(self, store: SqliteStore, clock: ManualClock, rates: Rates) -> None:
        self.store = store
        self.clock = clock
        self.rates = rates
        self.alerts = AlertRepo(store)
        self._incident_carry = 0.0
        self._hours = 0
        self.incidents: list[tuple[int, datetime]] = []  # (id, resolved_at) of every incident

    async def hour(self, hours: int = 1) -> None:
        start = self.clock.now()
        rates = self.rates
        events = int(rates.events_per_minute * 60 * hours)
        batch: list[AlertEvent] = []
        for i in range(events):
            at = start + timedelta(seconds=3600 * hours * i / max(events, 1))
            name, host = NAMES[i % len(NAMES)], HOSTS[i % len(HOSTS)]
            labels = {"alertname": name, "severity": "warning", "host": host, "job": "node"}
            batch.append(
                AlertEvent(
                    fingerprint=fingerprint(labels),
                    status="firing" if i % 2 == 0 else "resolved",
                    labels=labels,
                    annotations={
                        "summary": f"{name} on {host}: value {i % 97} over threshold 90",
                        "description": "see the runbook; this alert repeats while it holds",
                    },
                    starts_at=at,
                    at=at,
                    value=float(i % 97),
                    source="rules",
                )
            )
            if len(batch) >= 5000:
                await self.alerts.accept(batch)
                batch = []
        if batch:
            await self.alerts.accept(batch)
        await self.store.execute_write("UPDATE alert_events SET handled = 1 WHERE handled = 0")
        async with self.store.write() as db:
            self._incident_carry += rates.incidents_per_hour * hours
            while self._incident_carry >= 1:
                self._incident_carry -= 1
                await self._incident(db, start)
            await self._agent(db, start, hours)
            self._hours += hours
        self.clock.advance(3600 * hours)

    async def _incident(self, db: aiosqlite.Connection, start: datetime) -> None:
        opened, resolved = start + timedelta(minutes=5), start + timedelta(minutes=50)
        labels = json.dumps({"alertname": "HighCpu", "host": HOSTS[self._hours % len(HOSTS)]})
        cur = await db.execute(
            "INSERT INTO incidents (group_key, title, severity, labels, state, opened_at,"
            " resolved_at, investigation, postmortem) VALUES (?, ?, 'warning', ?, 'resolved',"
            " ?, ?, ?, ?)",
            (labels, f"HighCpu on {HOSTS[self._hours % len(HOSTS)]}", labels, to_db_time(opened),
             to_db_time(resolved), "findings " * 60, "postmortem " * 120),
        )  # fmt: skip
        incident = cur.lastrowid
        assert incident is not None
        await db.executemany(
            "INSERT INTO incident_alerts (incident_id, fingerprint, status, labels, annotations,"
            " starts_at, updated_at) VALUES (?, ?, 'resolved', ?, '{}', ?, ?)",
            [(incident, f"fp{k}", labels, to_db_time(opened), to_db_time(resolved))
             for k in range(3)],
        )  # fmt: skip
        await db.executemany(
            "INSERT INTO incident_events (incident_id, at, kind, detail) VALUES (?, ?, ?, ?)",
            [(incident, to_db_time(opened), "step", "ran a check: " + "output " * 20)
             for _ in range(self.rates.timeline_per_incident)],
        )  # fmt: skip
        await db.execute(
            "INSERT INTO remediations (incident_id, alertname, action, decided_by, outcome, at)"
            " VALUES (?, 'HighCpu', 'restart_service', 'auto', 'ok', ?)",
            (incident, to_db_time(resolved)),
        )
        await db.execute(
            "INSERT INTO facts (text, tags, source, created_at) VALUES (?, ?, ?, ?)",
            (f"postmortem of incident {incident}: " + "cause fix " * 40,
             "postmortem incident HighCpu", f"incident:{incident}", to_db_time(resolved)),
        )  # fmt: skip
        await db.executemany(
            "INSERT INTO outbox (channel, target, text, status, next_attempt_at, created_at,"
            " delivered_at, dedupe_key) VALUES ('slack', 'C1', ?, 'delivered', ?, ?, ?, ?)",
            [("incident update " * 30, to_db_time(opened), to_db_time(opened),
              to_db_time(opened), f"incident:{incident}:{k}") for k in range(3)],
        )  # fmt: skip
        self.incidents.append((incident, resolved))

    async def _agent(self, db: aiosqlite.Connection, start: datetime, hours: int) -> None:
        rates, at = self.rates, to_db_time(start)
        for _ in range(rates.runs_per_hour * hours):
            cur = await db.execute(
                "INSERT INTO agent_runs (kind, trigger, status, started_at, finished_at)"
                " VALUES ('incident', 'incident:1', 'ok', ?, ?)",
                (at, at),
            )
            await db.executemany(
                "INSERT INTO run_steps (run_id, step_index, kind, name, input, output,"
                " created_at) VALUES (?, ?, 'tool', 'shell', ?, ?, ?)",
                [(cur.lastrowid, k, '{"cmd": "uptime"}', json.dumps("load " * 80), at)
                 for k in range(rates.steps_per_run)],
            )  # fmt: skip
        await db.executemany(
            "INSERT INTO audit_log (actor, action, tool, tier, reason, arguments, result, ok,"
            " duration_ms, created_at) VALUES ('agent', 'call', 'shell', 'read', 'checking',"
            " '{}', ?, 1, 3.0, ?)",
            [("ok " * 40, at)] * rates.audit_per_hour * hours,
        )
        await db.executemany(
            "INSERT INTO llm_usage (model, purpose, prompt_tokens, completion_tokens,"
            " cached_tokens, total_tokens, cost_usd, latency_ms, ok, created_at)"
            " VALUES ('m', 'investigation', 3000, 200, 2000, 3200, 0.01, 900, 1, ?)",
            [(at,)] * rates.usage_per_hour * hours,
        )
        await db.executemany(
            "INSERT INTO component_events (component, event, detail, created_at)"
            " VALUES ('watcher.log', 'restart', 'file rotated', ?)",
            [(at,)] * hours,
        )
        await db.executemany(
            "INSERT INTO inbound_seen (channel, room, message_id, seen_at) VALUES"
            " ('slack', 'C1', ?, ?)",
            [(f"{self._hours}.{k}", at) for k in range(rates.messages_per_hour * hours)],
        )
        for hour in range(hours):  # a conversation an hour
            cur = await db.execute(
                "INSERT INTO conversations (channel, key, created_at, updated_at)"
                " VALUES ('slack', ?, ?, ?)",
                (f"C1:{self._hours + hour}", at, at),
            )
            await db.executemany(
                "INSERT INTO messages (conversation_id, role, content, created_at)"
                " VALUES (?, 'user', ?, ?)",
                [(cur.lastrowid, "what is wrong with web-01? " * 5, at)] * rates.messages_per_hour,
            )
