"""IncidentRecordRepo: signatures, same and near matches, recall, retention."""

from __future__ import annotations

from daemon.core.clock import ManualClock
from memory._codec import to_db_time
from memory.incident_records import (
    Evidence,
    IncidentRecord,
    IncidentRecordRepo,
    signature,
)
from memory.recall import RecallRepo
from memory.retention import RetentionRepo
from memory.store import SqliteStore

DISK = {"alertname": "DiskFull", "service": "postgres", "instance": "db1:9100", "value": "97"}


async def _incident(store: SqliteStore, clock: ManualClock, title: str) -> int:
    now = to_db_time(clock.now())
    async with store.write() as db:
        cur = await db.execute(
            "INSERT INTO incidents (group_key, title, severity, labels, opened_at, state,"
            " resolved_at) VALUES ('g', ?, 'critical', '{}', ?, 'resolved', ?)",
            (title, now, now),
        )
    assert cur.lastrowid is not None
    return cur.lastrowid


def test_a_signature_ignores_order_and_volatile_labels() -> None:
    other = {"alertname": "WalArchiveLag", "service": "postgres", "job": "pg", "pod": "pg-7f9c"}
    one = signature([DISK, other])
    two = signature([{**other, "pod": "pg-1a2b"}, {**DISK, "instance": "db1:9200", "value": "99"}])
    assert one == two
    assert one.key == "DiskFull,WalArchiveLag|instance=db1 job=pg service=postgres"


def test_near_means_same_alertnames_and_a_label_subset() -> None:
    full = signature([DISK])
    fewer = signature([{"alertname": "DiskFull", "service": "postgres"}])
    other_service = signature([{**DISK, "service": "mysql"}])
    other_alert = signature([{**DISK, "alertname": "DiskFilling"}])
    assert full.near(fewer) and fewer.near(full)
    assert not full.near(other_service)
    assert not full.near(other_alert)


async def test_similar_finds_same_then_near_and_skips_the_rest(
    store: SqliteStore, clock: ManualClock
) -> None:
    repo = IncidentRecordRepo(store, clock)
    sigs = {
        "same": signature([DISK]),
        "near": signature([{"alertname": "DiskFull", "service": "postgres"}]),
        "other": signature([{**DISK, "service": "mysql"}]),
    }
    ids = {}
    for name, sig in sigs.items():
        ids[name] = await _incident(store, clock, name)
        await repo.save(
            IncidentRecord(
                incident_id=ids[name],
                signature=sig,
                title=name,
                evidence=(Evidence(tool="disk_usage", arguments="{}", excerpt="pg_wal 40G"),),
                cause=f"cause {name}",
                outcome="fixed",
            )
        )
        clock.advance(60)
    current = await _incident(store, clock, "now")
    found = await repo.similar(signature([DISK]), exclude_incident=current)
    assert [r.title for r in found] == ["same", "near"]  # exact first, though older
    assert found[0].evidence[0].excerpt == "pg_wal 40G"
    assert await repo.similar(signature([DISK]), exclude_incident=ids["same"]) == [
        r for r in found if r.title == "near"
    ]
    hits = await RecallRepo(store, clock).search("cause near", sources=["record"])
    assert hits and hits[0].ref == found[1].id


async def test_retention_prunes_a_record_with_its_incident(
    store: SqliteStore, clock: ManualClock
) -> None:
    repo = IncidentRecordRepo(store, clock)
    old = await _incident(store, clock, "old")
    await repo.save(IncidentRecord(incident_id=old, signature=signature([DISK]), title="old"))
    clock.advance(400 * 86400)
    removed = await RetentionRepo(store, clock).prune({"incidents": 365})
    assert removed["incidents"] == 1
    assert await repo.for_incident(old) is None
    assert await RecallRepo(store, clock).search("old", sources=["record"]) == []
