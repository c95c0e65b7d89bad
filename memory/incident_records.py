"""Incident memory: a structured record per resolved incident, found again by alert signature.

A signature is order-independent: the sorted alert names plus the sorted labels that identify
the service or host (``service``, ``job``, ``host``, ``instance`` without its port …), never
volatile ones (values, ports, pod suffixes, severities). A later incident is *near* a record
when it has the same alert names and one label set contains the other.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import aiosqlite

from daemon.core.clock import Clock
from daemon.core.redact import redact
from memory._codec import dump_json, from_db_time, load_json, to_db_time
from memory.store import SqliteStore

__all__ = [
    "IDENTITY_LABELS",
    "Evidence",
    "IncidentRecord",
    "IncidentRecordRepo",
    "Signature",
    "signature",
]

# Labels that say which service or host an alert is about; everything else is left out.
IDENTITY_LABELS = frozenset(
    {
        "service",
        "job",
        "host",
        "hostname",
        "instance",
        "node",
        "process",
        "app",
        "namespace",
        "cluster",
        "deployment",
        "container",
        "device",
        "mountpoint",
    }
)
OUTCOMES = ("fixed", "self", "open")
_PORT = re.compile(r":\d+$")
_NEAR_CANDIDATES = 50


@dataclass(frozen=True, slots=True)
class Signature:
    """Sorted alert names and sorted ``name=value`` identifying labels."""

    alertnames: tuple[str, ...]
    labels: tuple[str, ...]

    @property
    def key(self) -> str:
        return ",".join(self.alertnames) + "|" + " ".join(self.labels)

    @property
    def names_key(self) -> str:
        return ",".join(self.alertnames)

    def near(self, other: Signature) -> bool:
        """Same alert names, and one's identifying labels are a subset of the other's."""
        if self.alertnames != other.alertnames:
            return False
        mine, theirs = set(self.labels), set(other.labels)
        return mine <= theirs or theirs <= mine


def signature(label_sets: Iterable[Mapping[str, str]]) -> Signature:
    """The signature of a group of alerts (their labels), independent of their order."""
    names: set[str] = set()
    pairs: set[str] = set()
    for labels in label_sets:
        if labels.get("alertname"):
            names.add(labels["alertname"])
        for key, value in labels.items():
            if key in IDENTITY_LABELS and value:
                pairs.add(f"{key}={_PORT.sub('', value) if key == 'instance' else value}")
    return Signature(tuple(sorted(names)), tuple(sorted(pairs)))


@dataclass(frozen=True, slots=True, kw_only=True)
class Evidence:
    """A tool call the investigation made and cited, with a short excerpt of its result."""

    tool: str
    arguments: str
    excerpt: str


@dataclass(frozen=True, slots=True, kw_only=True)
class IncidentRecord:
    incident_id: int
    signature: Signature
    title: str
    evidence: tuple[Evidence, ...] = ()
    cause: str = ""
    fix: str = ""
    action: str = ""  # the remediation that ran, if any
    fix_worked: bool | None = None  # None: no action ran
    outcome: str = "self"  # fixed | self (resolved by itself) | open
    complete: bool = True  # False: the postmortem answer was unusable; cause/fix are partial
    note: str = ""
    created_at: datetime | None = None
    id: int | None = field(default=None)


class IncidentRecordRepo:
    """Writes and finds incident records."""

    def __init__(self, store: SqliteStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def save(self, record: IncidentRecord) -> int:
        """Store (or replace) the record of ``record.incident_id``; returns its id."""
        if record.outcome not in OUTCOMES:
            raise ValueError(f"outcome {record.outcome!r} is not one of {OUTCOMES}")
        evidence = [
            {"tool": e.tool, "arguments": redact(e.arguments), "excerpt": redact(e.excerpt)}
            for e in record.evidence
        ]
        worked = None if record.fix_worked is None else int(record.fix_worked)
        async with self._store.write() as db:
            await db.execute(
                "INSERT INTO incident_records (incident_id, signature, alertnames, labels, title,"
                " evidence, cause, fix, action, fix_worked, outcome, complete, note, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (incident_id) DO UPDATE SET signature = excluded.signature,"
                " alertnames = excluded.alertnames, labels = excluded.labels,"
                " title = excluded.title, evidence = excluded.evidence, cause = excluded.cause,"
                " fix = excluded.fix, action = excluded.action, fix_worked = excluded.fix_worked,"
                " outcome = excluded.outcome, complete = excluded.complete, note = excluded.note,"
                " created_at = excluded.created_at",
                (record.incident_id, record.signature.key, record.signature.names_key,
                 dump_json(list(record.signature.labels)), record.title, dump_json(evidence),
                 redact(record.cause), redact(record.fix), redact(record.action), worked,
                 record.outcome, int(record.complete), record.note,
                 to_db_time(record.created_at or self._clock.now())),
            )  # fmt: skip
            rows = list(
                await db.execute_fetchall(
                    "SELECT id FROM incident_records WHERE incident_id = ?", (record.incident_id,)
                )
            )
        return int(rows[0][0])

    async def for_incident(self, incident_id: int) -> IncidentRecord | None:
        async with self._store.read() as db:
            rows = list(
                await db.execute_fetchall(
                    "SELECT * FROM incident_records WHERE incident_id = ?", (incident_id,)
                )
            )
        return _record(rows[0]) if rows else None

    async def similar(
        self, sig: Signature, *, exclude_incident: int | None = None, limit: int = 2
    ) -> list[IncidentRecord]:
        """Records with the same signature first, then near ones; newest first within each."""
        if not sig.alertnames:
            return []
        async with self._store.read() as db:
            rows = await db.execute_fetchall(
                "SELECT * FROM incident_records WHERE alertnames = ? AND incident_id != ?"
                " ORDER BY signature = ? DESC, id DESC LIMIT ?",
                (sig.names_key, exclude_incident or -1, sig.key, _NEAR_CANDIDATES),
            )
        found = [_record(row) for row in rows]
        return [r for r in found if r.signature.near(sig)][:limit]

    async def investigation_calls(
        self, incident_id: int, *, limit: int = 20
    ) -> list[tuple[str, str, str]]:
        """(tool, arguments, result) of the evidence calls the incident's investigation made."""
        async with self._store.read() as db:
            rows = await db.execute_fetchall(
                "SELECT a.tool, a.arguments, substr(a.result, 1, 2000) FROM conversations c"
                " JOIN agent_runs r ON r.conversation_id = c.id"
                " JOIN audit_log a ON a.run_id = r.id"
                " WHERE c.channel = 'incident' AND c.key = ? AND r.kind = 'investigation'"
                " AND a.ok = 1 AND a.tool != 'propose_action' ORDER BY a.id LIMIT ?",
                (f"incident:{incident_id}", limit),
            )
        return [(str(row[0]), str(row[1]), str(row[2])) for row in rows]


def _record(row: aiosqlite.Row) -> IncidentRecord:
    names, _, _ = str(row["signature"]).partition("|")
    evidence: Sequence[Mapping[str, str]] = load_json(row["evidence"]) or []
    worked = row["fix_worked"]
    return IncidentRecord(
        id=row["id"],
        incident_id=row["incident_id"],
        signature=Signature(
            tuple(n for n in names.split(",") if n), tuple(load_json(row["labels"]) or [])
        ),
        title=row["title"],
        evidence=tuple(
            Evidence(
                tool=str(e.get("tool", "")),
                arguments=str(e.get("arguments", "")),
                excerpt=str(e.get("excerpt", "")),
            )
            for e in evidence
        ),
        cause=row["cause"],
        fix=row["fix"],
        action=row["action"],
        fix_worked=None if worked is None else bool(worked),
        outcome=row["outcome"],
        complete=bool(row["complete"]),
        note=row["note"],
        created_at=from_db_time(row["created_at"]),
    )
