"""Recall at scale: 1M mixed records (messages, audit, timelines, task runs, facts, incidents)
written through the source tables (so the recall triggers and both FTS5 indexes do their work),
then p50/p95/p99 of RecallRepo.search for rare-word, common-word and substring queries.

Usage: python bench/recall.py [--records 1000000] [--queries 200] [--db PATH]
With --db an existing bench database is reused (no generation; handy for re-running queries).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from daemon.core.clock import ManualClock
from memory._codec import to_db_time
from memory.conversations import ConversationRepo
from memory.recall import RecallRepo
from memory.store import SqliteStore

START = datetime(2026, 1, 1, tzinfo=UTC)
COMMON = [
    "the",
    "a",
    "on",
    "is",
    "to",
    "error",
    "failed",
    "host",
    "service",
    "disk",
    "full",
    "memory",
    "timeout",
    "restart",
    "check",
]
HOSTS = [f"web-{i}" for i in range(40)] + [f"db-{i}" for i in range(10)]
SERVICES = ["nginx", "postgres", "redis", "checkout", "api", "worker", "cron", "rabbitmq"]
CJK = ["数据库连接失败", "磁盘空间不足", "内存使用率过高", "接口响应超时", "证书即将过期"]
BATCH = 20_000


def vocabulary(rng: random.Random, size: int = 20_000) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(rng.choices(letters, k=rng.randint(4, 9))) for _ in range(size)]


def sentence(rng: random.Random, vocab: list[str], i: int) -> str:
    words = rng.choices(COMMON, k=6) + [vocab[int(rng.paretovariate(1.1)) % len(vocab)]
                                        for _ in range(10)]  # fmt: skip
    rng.shuffle(words)
    if i % 20 == 0:
        words.append(f"/var/log/{rng.choice(SERVICES)}/app-{i % 5000}.log")
    if i % 25 == 0:
        words.append(rng.choice(CJK))
    if i % 50_000 == 7:  # a rare word: ~20 documents in 1M
        words.append(f"zqrare{i % 3}")
    return " ".join(words)


def generate(path: Path, records: int, seed: int = 7) -> tuple[float, int]:
    """Write ``records`` rows across the source tables; (rows per second, recall documents)."""
    rng = random.Random(seed)
    vocab = vocabulary(rng)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = NORMAL")
    now = to_db_time(START)
    conn.execute("BEGIN")
    conn.execute(
        "INSERT INTO conversations (id, channel, key, created_at, updated_at)"
        " VALUES (1, 'slack', 'C1', ?, ?)",
        (now, now),
    )
    conn.execute(
        "INSERT INTO tasks (id, name, source, spec, owner, created_at, updated_at)"
        " VALUES (1, 'nightly-report', 'config', '{}', 'ops', ?, ?)",
        (now, now),
    )
    conn.execute("COMMIT")
    step = timedelta(days=365) / records
    started = time.perf_counter()
    written = 0
    incident = 0
    for first in range(0, records, BATCH):
        rows: dict[str, list[tuple[object, ...]]] = {k: [] for k in ("m", "a", "e", "r", "f", "i")}
        for i in range(first, min(records, first + BATCH)):
            at = to_db_time(START + step * i)
            text = sentence(rng, vocab, i)
            kind = i % 100
            host = rng.choice(HOSTS)
            if kind < 50:
                rows["m"].append((rng.choice(("user", "assistant", "tool")), text, at))
            elif kind < 70:
                rows["a"].append((rng.choice(("read_log", "run_command")), text, f"{i}", at))
            elif kind < 85 and incident:
                rows["e"].append((incident, at, text))
            elif kind < 95:
                rows["r"].append((f"slot-{i}", at, text))
            elif kind < 98:
                rows["f"].append((f"{text} #{i}", host, at))
            else:
                incident += 1
                labels = f'{{"host": "{host}", "service": "{rng.choice(SERVICES)}"}}'
                rows["i"].append((incident, f"k{incident}", text[:60], labels, at, text))
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO messages (conversation_id, role, content, created_at) VALUES (1, ?, ?, ?)",
            rows["m"],
        )
        conn.executemany(
            "INSERT INTO audit_log (actor, action, tool, tier, reason, arguments, result, ok,"
            " duration_ms, created_at) VALUES ('agent', 'call', ?, 'read_only', ?, '{}', ?, 1,"
            " 1.0, ?)",
            rows["a"],
        )
        conn.executemany(
            "INSERT INTO incidents (id, group_key, title, severity, labels, opened_at, postmortem)"
            " VALUES (?, ?, ?, 'warning', ?, ?, ?)",
            rows["i"],
        )
        conn.executemany(
            "INSERT INTO incident_events (incident_id, at, kind, detail) VALUES (?, ?, 'note', ?)",
            rows["e"],
        )
        conn.executemany("INSERT INTO facts (text, tags, created_at) VALUES (?, ?, ?)", rows["f"])
        for slot, stamp, output in rows["r"]:  # output arrives with the run's UPDATE
            cur = conn.execute(
                "INSERT INTO task_runs (task_id, slot, started_at) VALUES (1, ?, ?)", (slot, stamp)
            )
            conn.execute(
                "UPDATE task_runs SET status = 'ok', output = ?, finished_at = ? WHERE id = ?",
                (output, stamp, cur.lastrowid),
            )
        conn.execute("COMMIT")
        written = min(records, first + BATCH)
        rate = written / (time.perf_counter() - started)
        print(f"  {written:>9,} rows  {rate:>8,.0f} rows/s", end="\r", flush=True)
    elapsed = time.perf_counter() - started
    docs = conn.execute("SELECT count(*) FROM recall_docs").fetchone()[0]
    conn.execute("PRAGMA optimize")
    conn.close()
    print()
    return written / elapsed, int(docs)


def percentiles(samples: list[float]) -> str:
    q = statistics.quantiles(samples, n=100, method="inclusive")
    return (
        f"p50 {q[49]:7.2f} ms   p95 {q[94]:7.2f} ms   p99 {q[98]:7.2f} ms   max {max(samples):7.2f}"
    )


QUERIES: dict[str, Callable[[random.Random], str]] = {
    "rare word": lambda r: f"why did zqrare{r.randint(0, 2)} {r.choice(COMMON)} again",
    "common words": lambda r: " ".join(r.sample(COMMON, 3)),
    "substring": lambda r: r.choice(
        [
            f"{r.choice(SERVICES)}/app-{r.randint(0, 4999)}",
            f"app-{r.randrange(0, 5000, 20)}.log",
            r.choice(CJK)[:4],
            "lib/postg",
            f"log/{r.choice(SERVICES)}/",
        ]
    ),  # fmt: skip
    "filtered": lambda r: (
        f"{r.choice(COMMON)} {r.choice(COMMON)}"  # common words, one host, last 30 days
    ),
}


def cases(rng: random.Random, n: int) -> Iterator[tuple[str, str]]:
    for kind, make in QUERIES.items():
        for _ in range(n):
            yield kind, make(rng)


async def measure(path: Path, queries: int, appends: int) -> None:
    clock = ManualClock(START + timedelta(days=365))
    async with await SqliteStore.open(path) as store:
        recall = RecallRepo(store, clock)
        rng = random.Random(11)
        timings: dict[str, list[float]] = {k: [] for k in QUERIES}
        found: dict[str, int] = {k: 0 for k in QUERIES}
        for kind, query in cases(rng, queries):
            extra = {}
            if kind == "filtered":
                extra = {"labels": {"host": rng.choice(HOSTS)}, "since": timedelta(days=30)}
            t = time.perf_counter()
            hits = await recall.search(query, **extra)  # type: ignore[arg-type]
            timings[kind].append((time.perf_counter() - t) * 1000)
            found[kind] += bool(hits)
        for kind, samples in timings.items():
            print(f"{kind:>13}: {percentiles(samples)}   ({found[kind]}/{len(samples)} found)")
        # the daemon's own pattern: one message per transaction, through the repository
        conversations = ConversationRepo(store, clock)
        conv = await conversations.get_or_create("bench", "appends")
        vocab = vocabulary(rng)
        latencies = []
        started = time.perf_counter()
        for i in range(appends):
            t = time.perf_counter()
            await conversations.append(conv.id, "user", sentence(rng, vocab, i))
            latencies.append((time.perf_counter() - t) * 1000)
        rate = appends / (time.perf_counter() - started)
        print(f"single-message transactions at this size: {rate:,.0f}/s; {percentiles(latencies)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--appends", type=int, default=1000, help="single-row transactions")
    parser.add_argument("--db", type=Path, help="reuse (or create) this bench database")
    parser.add_argument(
        "--baseline", action="store_true", help="only the insert rate, recall triggers dropped"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.db or Path(tmp) / "recall.db"
        asyncio.run(_create(path))
        print(f"database {path}")
        if args.baseline:
            _drop_recall_triggers(path)
            rate, _ = generate(path, args.records)
            print(f"insert rate without the recall index (baseline): {rate:,.0f} rows/s")
            return
        if not _has_rows(path):
            rate, docs = generate(path, args.records)
            print(f"insert rate with the recall indexes on: {rate:,.0f} rows/s ({docs:,} docs)")
        size = path.stat().st_size / 1e6
        print(f"database size {size:,.0f} MB")
        asyncio.run(measure(path, args.queries, args.appends))


async def _create(path: Path) -> None:
    await (await SqliteStore.open(path)).close()


def _drop_recall_triggers(path: Path) -> None:
    conn = sqlite3.connect(path)
    names = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'recall_%'"
        " AND tbl_name <> 'recall_docs'"
    ).fetchall()
    for (name,) in names:
        conn.execute(f"DROP TRIGGER {name}")
    conn.commit()
    conn.close()


def _has_rows(path: Path) -> bool:
    conn = sqlite3.connect(path)
    try:
        return bool(conn.execute("SELECT count(*) FROM recall_docs").fetchone()[0])
    finally:
        conn.close()


if __name__ == "__main__":
    main()
