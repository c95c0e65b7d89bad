"""Incidents, their alerts and timeline; silences; remediation history."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import aiosqlite

from daemon.core.alerts import AlertEvent
from daemon.core.clock import Clock
from daemon.core.errors import RecordNotFound
from daemon.core.redact import redact
from memory._codec import dump_json, from_db_time, from_db_time_opt, load_json, to_db_time
from memory.store import SqliteStore

__all__ = ["Incident", "IncidentAlert", "IncidentRepo", "Silence", "SilenceRepo", "TimelineEntry"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Incident:
    id: int
    group_key: str
    title: str
    severity: str
    labels: Mapping[str, str]
    state: str  # open | resolved
    opened_at: datetime
    resolved_at: datetime | None
    flush_at: datetime | None
    notified_at: datetime | None
    notified_digest: str | None
    notifications: int
    investigation: str | None
    postmortem: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class IncidentAlert:
    fingerprint: str
    status: str  # firing | resolved
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: datetime
    ends_at: datetime | None
    value: float | None

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "")


@dataclass(frozen=True, slots=True, kw_only=True)
class TimelineEntry:
    at: datetime
    kind: str
    actor: str
    detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Silence:
    id: int
    matchers: list[str]
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str
    expired_at: datetime | None

    def active(self, now: datetime) -> bool:
        return self.expired_at is None and self.starts_at <= now < self.ends_at


@dataclass(frozen=True, slots=True, kw_only=True)
class FlushState:
    """What the incident manager needs to schedule an incident's next notification check."""

    notified_at: datetime | None
    opened_at: datetime
    flush_at: datetime | None
    group_key: str


class IncidentRepo:
    """All reads and writes of incidents; writes take the caller's transaction (``db``)."""

    def __init__(self, store: SqliteStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    # -- writes (inside the caller's store.write() transaction) --------------------------------

    @staticmethod
    async def open_alert(
        db: aiosqlite.Connection, fingerprint: str
    ) -> tuple[int | None, str | None]:
        """The open incident holding this alert, and the alert's status there (one query)."""
        rows = list(
            await db.execute_fetchall(
                "SELECT a.incident_id, a.status FROM incident_alerts a JOIN incidents i"
                " ON i.id = a.incident_id WHERE a.fingerprint = ? AND i.state = 'open'"
                " ORDER BY a.incident_id DESC LIMIT 1",
                (fingerprint,),
            )
        )
        return (int(rows[0][0]), str(rows[0][1])) if rows else (None, None)

    @staticmethod
    async def open_for_group(db: aiosqlite.Connection, group_key: str) -> int | None:
        rows = list(
            await db.execute_fetchall(
                "SELECT id FROM incidents WHERE state = 'open' AND group_key = ?"
                " ORDER BY id DESC LIMIT 1",
                (group_key,),
            )
        )
        return int(rows[0][0]) if rows else None

    @staticmethod
    async def last_notified(db: aiosqlite.Connection, group_key: str) -> datetime | None:
        """When anything was last sent for this group (its latest incident's last notice)."""
        rows = list(
            await db.execute_fetchall(
                "SELECT max(notified_at) FROM incidents WHERE group_key = ?", (group_key,)
            )
        )
        return from_db_time_opt(rows[0][0]) if rows else None

    @staticmethod
    async def create(
        db: aiosqlite.Connection,
        *,
        group_key: str,
        title: str,
        severity: str,
        labels: Mapping[str, str],
        opened_at: datetime,
        flush_at: datetime,
    ) -> int:
        cur = await db.execute(
            "INSERT INTO incidents (group_key, title, severity, labels, opened_at, flush_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (group_key, title, severity, dump_json(dict(labels)), to_db_time(opened_at),
             to_db_time(flush_at)),
        )  # fmt: skip
        assert cur.lastrowid is not None
        return cur.lastrowid

    @staticmethod
    async def put_alert(db: aiosqlite.Connection, incident_id: int, event: AlertEvent) -> None:
        await db.execute(
            "INSERT INTO incident_alerts (incident_id, fingerprint, status, labels, annotations,"
            " starts_at, ends_at, value, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (incident_id, fingerprint) DO UPDATE SET status = excluded.status,"
            " labels = excluded.labels, annotations = excluded.annotations,"
            " starts_at = min(starts_at, excluded.starts_at), ends_at = excluded.ends_at,"
            " value = excluded.value, updated_at = excluded.updated_at,"
            " fired = fired + (status = 'resolved' AND excluded.status = 'firing')",
            (
                incident_id,
                event.fingerprint,
                event.status,
                dump_json(dict(event.labels)),
                dump_json(dict(event.annotations)),
                to_db_time(event.starts_at),
                to_db_time(event.ends_at) if event.ends_at else None,
                event.value,
                to_db_time(event.at),
            ),
        )

    @staticmethod
    async def most_fired(db: aiosqlite.Connection, incident_id: int) -> int:
        """How many times the incident's most restless alert fired (more than once: flapping)."""
        rows = list(
            await db.execute_fetchall(
                "SELECT max(fired) FROM incident_alerts WHERE incident_id = ?", (incident_id,)
            )
        )
        return int(rows[0][0] or 0)

    @staticmethod
    async def raise_severity(db: aiosqlite.Connection, incident_id: int, severity: str) -> None:
        await db.execute(
            "UPDATE incidents SET severity = ? WHERE id = ? AND"
            " (CASE severity WHEN 'critical' THEN 3 WHEN 'warning' THEN 2 ELSE 1 END) <"
            " (CASE ? WHEN 'critical' THEN 3 WHEN 'warning' THEN 2 ELSE 1 END)",
            (severity, incident_id, severity),
        )

    @staticmethod
    async def flush_state(db: aiosqlite.Connection, incident_id: int) -> FlushState:
        """When the incident was last notified, opened and is due a check, and its group."""
        rows = list(
            await db.execute_fetchall(
                "SELECT notified_at, opened_at, flush_at, group_key FROM incidents WHERE id = ?",
                (incident_id,),
            )
        )
        notified, opened, flush, group_key = rows[0]
        return FlushState(
            notified_at=from_db_time_opt(notified),
            opened_at=from_db_time(opened),
            flush_at=from_db_time_opt(flush),
            group_key=group_key,
        )

    @staticmethod
    async def set_digest(db: aiosqlite.Connection, incident_id: int, digest: str) -> None:
        """Remember what was last judged (notified, muted or settling) without a notice."""
        await db.execute(
            "UPDATE incidents SET notified_digest = ? WHERE id = ?", (digest, incident_id)
        )

    @staticmethod
    async def last_alert_change(db: aiosqlite.Connection, incident_id: int) -> datetime | None:
        """When an alert of the incident last fired or resolved."""
        rows = list(
            await db.execute_fetchall(
                "SELECT max(at) FROM incident_events WHERE incident_id = ?"
                " AND kind IN ('alert firing', 'alert resolved')",
                (incident_id,),
            )
        )
        return from_db_time_opt(rows[0][0]) if rows else None

    @staticmethod
    async def set_flush(db: aiosqlite.Connection, incident_id: int, at: datetime | None) -> None:
        """Schedule the next notification check; an earlier existing time is kept."""
        if at is None:
            await db.execute("UPDATE incidents SET flush_at = NULL WHERE id = ?", (incident_id,))
            return
        await db.execute(
            "UPDATE incidents SET flush_at = CASE WHEN flush_at IS NULL OR flush_at > ?"
            " THEN ? ELSE flush_at END WHERE id = ?",
            (to_db_time(at), to_db_time(at), incident_id),
        )

    @staticmethod
    async def replace_flush(
        db: aiosqlite.Connection, incident_id: int, at: datetime | None
    ) -> None:
        await db.execute(
            "UPDATE incidents SET flush_at = ? WHERE id = ?",
            (to_db_time(at) if at else None, incident_id),
        )

    @staticmethod
    async def mark_notified(
        db: aiosqlite.Connection, incident_id: int, at: datetime, digest: str
    ) -> None:
        await db.execute(
            "UPDATE incidents SET notified_at = ?, notified_digest = ?,"
            " notifications = notifications + 1 WHERE id = ?",
            (to_db_time(at), digest, incident_id),
        )

    @staticmethod
    async def resolve(db: aiosqlite.Connection, incident_id: int, at: datetime) -> None:
        await db.execute(
            "UPDATE incidents SET state = 'resolved', resolved_at = ?, flush_at = NULL"
            " WHERE id = ?",
            (to_db_time(at), incident_id),
        )

    @staticmethod
    async def add_event(
        db: aiosqlite.Connection,
        incident_id: int,
        at: datetime,
        kind: str,
        detail: str,
        actor: str = "nightshift",
    ) -> None:
        await db.execute(
            "INSERT INTO incident_events (incident_id, at, kind, actor, detail)"
            " VALUES (?, ?, ?, ?, ?)",
            (incident_id, to_db_time(at), kind, actor, redact(detail)),
        )

    async def note(
        self, incident_id: int, kind: str, detail: str, actor: str = "nightshift"
    ) -> None:
        """Append to the timeline in a transaction of its own."""
        async with self._store.write() as db:
            await self.add_event(db, incident_id, self._clock.now(), kind, detail, actor)

    async def set_text(self, incident_id: int, column: str, text: str) -> None:
        """Store the investigation findings or the postmortem."""
        if column not in ("investigation", "postmortem"):
            raise ValueError(column)
        await self._store.execute_write(
            f"UPDATE incidents SET {column} = ? WHERE id = ?", (redact(text), incident_id)
        )

    # -- reads ---------------------------------------------------------------------------------

    async def get(self, incident_id: int) -> Incident:
        async with self._store.read() as db:
            rows = list(
                await db.execute_fetchall("SELECT * FROM incidents WHERE id = ?", (incident_id,))
            )
        if not rows:
            raise RecordNotFound("incident", incident_id)
        return _incident(rows[0])

    async def listing(self, *, state: str | None = None, limit: int = 20) -> list[Incident]:
        query = "SELECT * FROM incidents"
        params: list[object] = []
        if state is not None:
            query += " WHERE state = ?"
            params.append(state)
        async with self._store.read() as db:
            rows = await db.execute_fetchall(query + " ORDER BY id DESC LIMIT ?", (*params, limit))
        return [_incident(row) for row in rows]

    async def due(self, now: datetime) -> list[Incident]:
        async with self._store.read() as db:
            rows = await db.execute_fetchall(
                "SELECT * FROM incidents WHERE flush_at IS NOT NULL AND flush_at <= ?"
                " ORDER BY flush_at, id",
                (to_db_time(now),),
            )
        return [_incident(row) for row in rows]

    async def flush_muted_now(self, now: datetime) -> int:
        """Open incidents held back as muted are looked at again at ``now``."""
        cur = await self._store.execute_write(
            "UPDATE incidents SET flush_at = ? WHERE state = 'open'"
            " AND notified_digest LIKE 'muted:%'",
            (to_db_time(now),),
        )
        return cur.rowcount

    async def next_flush(self) -> datetime | None:
        async with self._store.read() as db:
            rows = list(
                await db.execute_fetchall(
                    "SELECT min(flush_at) FROM incidents WHERE flush_at IS NOT NULL"
                )
            )
        return from_db_time_opt(rows[0][0]) if rows else None

    async def alerts(self, incident_id: int) -> list[IncidentAlert]:
        async with self._store.read() as db:
            rows = await db.execute_fetchall(
                "SELECT * FROM incident_alerts WHERE incident_id = ? ORDER BY starts_at",
                (incident_id,),
            )
        return [_alert(row) for row in rows]

    async def firing_alerts(self) -> list[IncidentAlert]:
        """Firing alerts of open incidents (for inhibition)."""
        async with self._store.read() as db:
            rows = await db.execute_fetchall(
                "SELECT a.* FROM incident_alerts a JOIN incidents i ON i.id = a.incident_id"
                " WHERE i.state = 'open' AND a.status = 'firing'"
            )
        return [_alert(row) for row in rows]

    async def timeline(self, incident_id: int) -> list[TimelineEntry]:
        async with self._store.read() as db:
            rows = await db.execute_fetchall(
                "SELECT at, kind, actor, detail FROM incident_events WHERE incident_id = ?"
                " ORDER BY id",
                (incident_id,),
            )
        return [
            TimelineEntry(
                at=from_db_time(row["at"]), kind=row["kind"], actor=row["actor"],
                detail=row["detail"],
            )
            for row in rows
        ]  # fmt: skip

    async def record_remediation(
        self, incident_id: int, alertname: str, action: str, decided_by: str, outcome: str
    ) -> None:
        await self._store.execute_write(
            "INSERT INTO remediations (incident_id, alertname, action, decided_by, outcome, at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (incident_id, alertname, action, decided_by, outcome, to_db_time(self._clock.now())),
        )

    async def remediations_since(self, alertname: str, since: datetime) -> int:
        async with self._store.read() as db:
            rows = list(
                await db.execute_fetchall(
                    "SELECT count(*) FROM remediations WHERE alertname = ? AND at >= ?"
                    " AND outcome != 'denied'",
                    (alertname, to_db_time(since)),
                )
            )
        return int(rows[0][0])


class SilenceRepo:
    """Silences created by people (CLI or chat); they expire by themselves."""

    def __init__(self, store: SqliteStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def add(
        self, matchers: Sequence[str], ends_at: datetime, created_by: str, comment: str = ""
    ) -> Silence:
        now = self._clock.now()
        cur = await self._store.execute_write(
            "INSERT INTO silences (matchers, starts_at, ends_at, created_by, comment, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (dump_json(list(matchers)), to_db_time(now), to_db_time(ends_at), created_by,
             comment, to_db_time(now)),
        )  # fmt: skip
        assert cur.lastrowid is not None
        return Silence(
            id=cur.lastrowid, matchers=list(matchers), starts_at=now, ends_at=ends_at,
            created_by=created_by, comment=comment, expired_at=None,
        )  # fmt: skip

    async def expire(self, silence_id: int) -> bool:
        now = to_db_time(self._clock.now())
        cur = await self._store.execute_write(
            "UPDATE silences SET expired_at = ? WHERE id = ? AND expired_at IS NULL"
            " AND ends_at > ?",
            (now, silence_id, now),
        )
        return cur.rowcount == 1

    async def active(self) -> list[Silence]:
        now = self._clock.now()
        return [s for s in await self._rows("WHERE expired_at IS NULL AND ends_at > ?",
                                            (to_db_time(now),)) if s.active(now)]  # fmt: skip

    async def listing(self, limit: int = 50) -> list[Silence]:
        return await self._rows("ORDER BY id DESC LIMIT ?", (limit,))

    async def _rows(self, where: str, params: tuple[object, ...]) -> list[Silence]:
        async with self._store.read() as db:
            rows = await db.execute_fetchall(f"SELECT * FROM silences {where}", params)
        return [
            Silence(
                id=row["id"], matchers=load_json(row["matchers"]),
                starts_at=from_db_time(row["starts_at"]), ends_at=from_db_time(row["ends_at"]),
                created_by=row["created_by"], comment=row["comment"],
                expired_at=from_db_time_opt(row["expired_at"]),
            )
            for row in rows
        ]  # fmt: skip


def _alert(row: aiosqlite.Row) -> IncidentAlert:
    return IncidentAlert(
        fingerprint=row["fingerprint"],
        status=row["status"],
        labels=load_json(row["labels"]),
        annotations=load_json(row["annotations"]),
        starts_at=from_db_time(row["starts_at"]),
        ends_at=from_db_time_opt(row["ends_at"]),
        value=row["value"],
    )


def _incident(row: aiosqlite.Row) -> Incident:
    return Incident(
        id=row["id"],
        group_key=row["group_key"],
        title=row["title"],
        severity=row["severity"],
        labels=load_json(row["labels"]),
        state=row["state"],
        opened_at=from_db_time(row["opened_at"]),
        resolved_at=from_db_time_opt(row["resolved_at"]),
        flush_at=from_db_time_opt(row["flush_at"]),
        notified_at=from_db_time_opt(row["notified_at"]),
        notified_digest=row["notified_digest"],
        notifications=row["notifications"],
        investigation=row["investigation"],
        postmortem=row["postmortem"],
    )
