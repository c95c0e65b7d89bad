"""RecallRepo: one search over messages, facts, incidents, timelines, task runs, audit entries
and runbooks."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest

from daemon.core.alerts import AlertEvent, fingerprint
from daemon.core.clock import ManualClock
from memory._codec import to_db_time
from memory.audit import AuditEntry, AuditRepo
from memory.conversations import ConversationRepo
from memory.facts import FactRepo
from memory.incident_records import IncidentRecord, IncidentRecordRepo, signature
from memory.incidents import IncidentRepo
from memory.recall import SOURCES, RecallRepo, RunbookFile, parse_query
from memory.store import SqliteStore

# Scripted incidents: (key, host, service, alerts as (alertname, summary), postmortem)
INCIDENTS = [
    (
        "disk",
        "db-7",
        "postgres",
        [("DiskAlmostFull", "filesystem /var/lib/postgresql/data is 97% full on db-7")],
        "WAL archiving stalled; old segments filled the volume. Fixed by restarting archiver.",
    ),
    (
        "cert",
        "edge-1",
        "nginx",
        [("CertificateExpiring", "TLS certificate for shop.example.com expires in 3 days")],
        "certbot timer was disabled after the upgrade; renewed by hand and re-enabled.",
    ),
    (
        "oom",
        "app-3",
        "checkout",
        [
            ("ContainerOOMKilled", "checkout container killed by the OOM killer"),
            ("HighMemoryUsage", "memory usage above 95% on app-3"),
        ],
        "a memory leak in the image resizer; rolled back to v2.4.1.",
    ),
    (
        "queue",
        "mq-2",
        "rabbitmq",
        [("QueueBacklog", "orders queue backlog above 50000 messages")],
        "consumer deploy crashed on start; the queue drained after the fix.",
    ),
    (
        "cjk",
        "cn-web-1",
        "api",
        [("ApiLatencyHigh", "接口延迟过高，数据库连接池耗尽")],
        "数据库连接池配置过小，已调大。",
    ),
]


@dataclass
class Corpus:
    incidents: dict[str, int]
    fact: int
    message: int
    audit: int
    task_run: int
    note: int
    runbook: int


@pytest.fixture
def recall(store: SqliteStore, clock: ManualClock) -> RecallRepo:
    return RecallRepo(store, clock)


async def _incident(
    store: SqliteStore,
    clock: ManualClock,
    host: str,
    service: str,
    alerts: list[tuple[str, str]],
    postmortem: str,
) -> int:
    repo = IncidentRepo(store, clock)
    now = clock.now()
    async with store.write() as db:
        incident_id = await IncidentRepo.create(
            db,
            group_key=f"{host}/{service}",
            title=f"{alerts[0][0]} on {host}",
            severity="critical",
            labels={"host": host, "service": service},
            opened_at=now,
            flush_at=now,
        )
        for name, summary in alerts:
            labels = {"alertname": name, "host": host, "service": service}
            event = AlertEvent(
                fingerprint=fingerprint(labels),
                status="firing",
                labels=labels,
                annotations={"summary": summary},
                starts_at=now,
                at=now,
            )
            await IncidentRepo.put_alert(db, incident_id, event)
            await IncidentRepo.add_event(db, incident_id, now, "alert firing", name)
    clock.advance(600)
    await repo.set_text(incident_id, "postmortem", postmortem)
    async with store.write() as db:
        await IncidentRepo.resolve(db, incident_id, clock.now())
    return incident_id


@pytest.fixture
async def corpus(store: SqliteStore, clock: ManualClock) -> Corpus:
    incidents = {}
    for key, host, service, alerts, postmortem in INCIDENTS:
        incidents[key] = await _incident(store, clock, host, service, alerts, postmortem)
        clock.advance(3600)
    fact = await FactRepo(store, clock).remember(
        "backups of db-7 are written to /srv/backup/pg-nightly", tags="backup"
    )
    conversations = ConversationRepo(store, clock)
    conv = await conversations.get_or_create("slack", "C1:1")
    message = await conversations.append(conv.id, "user", "why is the disk on db-7 full again?")
    await conversations.append(conv.id, "assistant", None)  # nothing to index
    audit = await AuditRepo(store, clock).record(
        AuditEntry(
            actor="slack:U1",
            action="call",
            tool="read_log",
            tier="read_only",
            reason="look for OOM kills",
            arguments={"path": "/var/log/kern.log"},
            result="Out of memory: Killed process 4242 (resizer)",
            ok=True,
            duration_ms=3.0,
        )
    )
    now = to_db_time(clock.now())
    async with store.write() as db:
        cur = await db.execute(
            "INSERT INTO tasks (name, source, spec, owner, created_at, updated_at)"
            " VALUES ('cert-report', 'config', '{}', 'ops', ?, ?)",
            (now, now),
        )
        cur = await db.execute(
            "INSERT INTO task_runs (task_id, slot, started_at) VALUES (?, 'slot-1', ?)",
            (cur.lastrowid, now),
        )
        task_run = cur.lastrowid
        await db.execute(
            "UPDATE task_runs SET status = 'ok', finished_at = ?, output = ? WHERE id = ?",
            (now, "3 certificates expire this month: shop.example.com, api.example.com", task_run),
        )
    assert task_run is not None
    await IncidentRepo(store, clock).note(
        incidents["queue"], "operator note", "drained the orders queue by hand"
    )
    recall = RecallRepo(store, clock)
    await recall.sync_runbooks(
        [RunbookFile("queue-backlog.md", "1:1", "# Queue backlog\nScale the consumers first.")],
        [],
    )
    docs = {h.source: h.ref for h in await recall.search("", limit=50)}
    return Corpus(incidents, fact, message, audit, task_run, docs["timeline"], docs["runbook"])


async def test_each_incident_comes_first_for_its_own_alerts(
    recall: RecallRepo, corpus: Corpus
) -> None:
    for key, _host, _service, alerts, _postmortem in INCIDENTS:
        for name, summary in alerts:
            for query in (name, summary):
                hits = await recall.search(query, sources=["incident"])
                assert hits, query
                assert hits[0].ref == corpus.incidents[key], (query, hits[:3])
            # across every source the incident (or its timeline) is still on top
            hits = await recall.search(summary)
            assert hits[0].source in ("incident", "timeline"), (summary, hits[:3])
            assert f"incident={corpus.incidents[key]}" in hits[0].labels


async def test_postmortem_words_find_their_incident(recall: RecallRepo, corpus: Corpus) -> None:
    hits = await recall.search("certbot timer disabled")
    assert hits[0].cite == f"incident#{corpus.incidents['cert']}"
    assert "certbot" in hits[0].snippet


async def test_substring_finds_a_path_fragment_and_cjk(recall: RecallRepo, corpus: Corpus) -> None:
    hits = await recall.search("lib/postgres")
    assert hits and hits[0].ref == corpus.incidents["disk"]
    assert "/var/lib/postgresql/data" in hits[0].snippet

    hits = await recall.search("pg-nightly")
    assert [h.cite for h in hits] == [f"fact#{corpus.fact}"]

    hits = await recall.search("连接池")
    assert hits[0].ref == corpus.incidents["cjk"]
    assert "连接池" in hits[0].snippet

    # part of a longer word with no word match of its own falls back to substrings
    hits = await recall.search("resizer")
    assert {h.source for h in hits} >= {"incident", "audit"}


async def test_every_source_is_searchable_and_cited(
    recall: RecallRepo, corpus: Corpus, store: SqliteStore, clock: ManualClock
) -> None:
    record = await IncidentRecordRepo(store, clock).save(
        IncidentRecord(
            incident_id=corpus.incidents["queue"],
            signature=signature([{"alertname": "QueueBacklog", "service": "rabbitmq"}]),
            title="QueueBacklog",
            cause="the consumer deploy crashed on start",
            fix="rolled the consumer back",
            outcome="fixed",
        )
    )
    found = {
        "record": await recall.search("consumer crashed", sources=["record"]),
        "message": await recall.search("why is the disk full", sources=["message"]),
        "fact": await recall.search("backups", sources=["fact"]),
        "audit": await recall.search("kern.log", sources=["audit"]),
        "task_run": await recall.search("certificates expire", sources=["task_run"]),
        "timeline": await recall.search("drained by hand", sources=["timeline"]),
        "incident": await recall.search("rabbitmq", sources=["incident"]),
        "runbook": await recall.search("scale consumers", sources=["runbook"]),
    }
    refs = {
        "message": corpus.message,
        "fact": corpus.fact,
        "audit": corpus.audit,
        "task_run": corpus.task_run,
        "incident": corpus.incidents["queue"],
        "record": record,
        "timeline": corpus.note,
        "runbook": corpus.runbook,
    }
    assert set(found) == set(SOURCES)
    for source, hits in found.items():
        assert hits, source
        assert {h.source for h in hits} == {source}
        if source in refs:
            assert hits[0].ref == refs[source], (source, hits)
        assert hits[0].snippet and hits[0].at is not None


async def test_filters_by_source_labels_and_time(
    recall: RecallRepo, corpus: Corpus, clock: ManualClock
) -> None:
    everything = await recall.search("db-7 disk", limit=20)
    assert {h.source for h in everything} >= {"incident", "message", "fact"}

    only = await recall.search("db-7 disk", sources=["message", "fact"], limit=20)
    assert {h.source for h in only} == {"message", "fact"}

    on_host = await recall.search("full", labels={"host": "db-7"}, limit=20)
    assert on_host and all("host=db-7" in h.labels for h in on_host)
    assert await recall.search("full", labels=["host=edge-1"]) == []
    assert await recall.search("lib/postgres", labels={"service": "nginx"}) == []

    # the disk incident was resolved first, hours before the others
    disk_at = (await recall.search("DiskAlmostFull", sources=["incident"]))[0].at
    later = await recall.search("DiskAlmostFull", since=disk_at + timedelta(seconds=1))
    assert all(h.at > disk_at for h in later)
    assert corpus.incidents["disk"] not in [h.ref for h in later if h.source == "incident"]
    earlier = await recall.search("certificate", until=disk_at)
    assert earlier == []
    recent = await recall.search("", since=timedelta(minutes=1), limit=50)
    assert recent and all(clock.now() - h.at <= timedelta(minutes=1) for h in recent)
    assert await recall.search("certificate", since=clock.now() + timedelta(days=1)) == []

    with pytest.raises(ValueError, match="unknown recall source"):
        await recall.search("x", sources=["nope"])


async def test_recency_breaks_ties_and_edits_follow(
    recall: RecallRepo, store: SqliteStore, clock: ManualClock
) -> None:
    facts = FactRepo(store, clock)
    old = await facts.remember("the staging proxy runs on port 8081")
    clock.advance(90 * 86400)
    new = await facts.remember("the staging proxy runs on port 8082")
    hits = await recall.search("staging proxy port")
    assert [h.ref for h in hits] == [new, old]

    assert await facts.forget(new)
    assert [h.ref for h in await recall.search("staging proxy")] == [old]
    assert await recall.count() == 1


async def test_hostile_queries_do_not_raise(recall: RecallRepo, corpus: Corpus) -> None:
    for hostile in ['"', "((", "sda*", "NEAR(disk", "text:disk", "AND OR NOT", "-disk ^full"]:
        await recall.search(hostile)
    assert await recall.search("zzzzqqq") == []


def test_query_parsing() -> None:
    assert parse_query("disk full on db-7") == (["disk", "full", "on"], ["db-7"])
    assert parse_query("/var/log 数据库 ok.") == (["ok"], ["/var/log", "数据库"])
    assert parse_query("a/ x") == (["a", "x"], [])


async def test_a_storm_incident_indexes_its_first_alerts_only(
    recall: RecallRepo, store: SqliteStore, clock: ManualClock
) -> None:
    many = [(f"Probe{i:03d}Down", f"probe {i} unreachable") for i in range(60)]
    incident = await _incident(store, clock, "edge-9", "probes", many, "a switch died")
    assert [h.ref for h in await recall.search("Probe049Down", sources=["incident"])] == [incident]
    assert await recall.search("Probe055Down", sources=["incident"]) == []
    timeline = await recall.search("Probe055Down", sources=["timeline"])  # still in its timeline
    assert timeline and f"incident={incident}" in timeline[0].labels


async def _integrity(store: SqliteStore) -> None:
    async with store.write() as db:  # raises if an index disagrees with recall_docs
        await db.execute("INSERT INTO recall_words (recall_words) VALUES ('integrity-check')")
        await db.execute("INSERT INTO recall_grams (recall_grams) VALUES ('integrity-check')")


async def test_alert_timeline_entries_are_not_indexed_twice(
    recall: RecallRepo, store: SqliteStore, clock: ManualClock, corpus: Corpus
) -> None:
    """'alert firing/resolved' entries repeat what the incident document holds: not indexed
    (below 50 alerts); other timeline entries are."""
    async with store.read() as db:
        rows = await db.execute_fetchall(
            "SELECT count(*) FROM incident_events WHERE kind LIKE 'alert %'"
        )
        assert list(rows)[0][0] >= 6
        rows = await db.execute_fetchall(
            "SELECT count(*) FROM recall_docs WHERE source = 'timeline' AND text LIKE 'alert %'"
        )
        assert list(rows)[0][0] == 0
    assert await recall.search("QueueBacklog", sources=["timeline"]) == []
    hits = await recall.search("QueueBacklog")
    assert hits[0].cite == f"incident#{corpus.incidents['queue']}"


async def test_label_filters_are_exact(
    recall: RecallRepo, store: SqliteStore, clock: ManualClock
) -> None:
    """Labels are indexed squashed ("web-3" and "web3" share a token): the filter still
    returns only documents carrying the exact label, and the index stays consistent."""
    facts = FactRepo(store, clock)
    a = await facts.remember("nginx reload fixed the 502s", tags="host=web-3")
    b = await facts.remember("nginx reload fixed the 502s again", tags="host=web3")
    c = await facts.remember("nginx reload fixed the 502s once more", tags="host=web-3.eu")
    assert [h.ref for h in await recall.search("nginx", labels=["tags=host=web-3"])] == [a]
    assert [h.ref for h in await recall.search("nginx", labels=["tags=host=web3"])] == [b]
    assert [h.ref for h in await recall.search("502s", labels=["tags=host=web-3.eu"])] == [c]
    assert await facts.forget(a)
    assert await recall.search("nginx", labels=["tags=host=web-3"]) == []
    await _integrity(store)


async def test_runbooks_follow_their_files(
    recall: RecallRepo, store: SqliteStore, clock: ManualClock
) -> None:
    first = [RunbookFile("disk-full.md", "10:1", "# Disk full\nRun ncdu on /var first.")]
    assert await recall.sync_runbooks(first, ["disk-full.md"]) == 1
    assert await recall.sync_runbooks(first, ["disk-full.md"]) == 0  # unchanged: untouched
    hits = await recall.search("ncdu")
    assert [h.source for h in hits] == ["runbook"] and "runbook=disk-full.md" in hits[0].labels
    assert await recall.runbook_digests() == {"disk-full.md": "10:1"}

    edited = [RunbookFile("disk-full.md", "12:2", "# Disk full\nRun du -xh on /srv first.")]
    assert await recall.sync_runbooks(edited, ["disk-full.md"]) == 1
    assert await recall.search("ncdu") == []
    assert [h.source for h in await recall.search("/srv")] == ["runbook"]

    assert await recall.sync_runbooks([], []) == 1  # the file is gone
    assert await recall.search("/srv") == [] and await recall.runbook_digests() == {}
    await _integrity(store)


async def test_substring_misses_and_near_misses(recall: RecallRepo, corpus: Corpus) -> None:
    """The substring scan checks candidates against the text: trigrams found apart do not
    make a match."""
    assert await recall.search("postgresql/var") == []  # every trigram is there, not in order
    assert await recall.search("data/lib") == []
    hits = await recall.search("lib/postgresql/data")
    assert [h.cite for h in hits][:1] == [f"incident#{corpus.incidents['disk']}"]
