"""`nightshift backup` / `restore` on a realistic database, idle and under write load.

Builds a nightshift database of about --megabytes (conversations and messages, audit log,
component events), then times the real CLI (`python -m daemon.cli.main backup|restore`):
a backup with no writer, a backup while another process commits 5-row transactions through
the real store as fast as it can, and a restore. For the loaded run it prints the writer's
commit rate and its longest gap between two commits before and during the backup: the
backup must not starve the writer.

Usage: python bench/backup.py [--megabytes 100]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from memory.store import SqliteStore

ROOT = Path(__file__).resolve().parent.parent
WRITER = ROOT / "tests" / "daemon" / "cli" / "_backup_writer.py"
CLI = [sys.executable, "-m", "daemon.cli.main"]
NOW = "2026-12-06T00:00:00.000000Z"


def build(path: Path, megabytes: float) -> None:
    """About ``megabytes`` of rows: 60 % messages, 20 % audit log, 20 % component events."""

    async def create() -> None:
        async with await SqliteStore.open(path):
            pass

    asyncio.run(create())
    import sqlite3

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    per_kb = int(megabytes * 1000)
    for c in range(per_kb // 200 + 1):
        conn.execute(
            "INSERT INTO conversations (channel, key, created_at, updated_at) VALUES (?,?,?,?)",
            ("slack", f"C{c}", NOW, NOW),
        )
    conn.executemany(
        "INSERT INTO messages (conversation_id, role, content, created_at) VALUES (?,?,?,?)",
        ((i // 200 + 1, "user" if i % 2 else "assistant", os.urandom(400).hex(), NOW)
         for i in range(per_kb * 6 // 10)),
    )  # fmt: skip
    conn.executemany(
        "INSERT INTO audit_log (actor, action, tool, tier, reason, arguments, result, ok,"
        " duration_ms, created_at) VALUES ('agent','run','shell','read','why',?,?,1,12.5,?)",
        (('{"cmd": "df -h"}', os.urandom(400).hex(), NOW) for _ in range(per_kb // 5)),
    )
    conn.executemany(
        "INSERT INTO component_events (component, event, detail, created_at) VALUES (?,?,?,?)",
        (("watcher", "tick", os.urandom(400).hex(), NOW) for _ in range(per_kb // 5)),
    )
    conn.execute("COMMIT")
    conn.close()


class Writer:
    """The test suite's writer process; records when each batch was reported committed."""

    def __init__(self, path: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, str(WRITER), str(path)], stdout=subprocess.PIPE, env=env, text=True
        )
        self.times: list[float] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for _ in self.proc.stdout:
            self.times.append(time.perf_counter())

    def window(self, start: float, end: float) -> tuple[float, float]:
        """Commits per second and the longest gap (ms) between commits in [start, end]."""
        inside = [t for t in self.times if start <= t <= end]
        gaps = [b - a for a, b in zip([start, *inside], [*inside, end], strict=True)]
        return len(inside) / (end - start), max(gaps) * 1000

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.thread.join()


def cli(*args: str) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(
        [*CLI, *args], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{args[0]} failed: {done.stderr}")
    return elapsed, done.stdout.strip()


def main(megabytes: float) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-backup-") as tmp:
        state = Path(tmp) / "state"
        live = state / "nightshift.db"
        started = time.perf_counter()
        build(live, megabytes)
        print(f"built {live.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - started:.1f}s")

        idle, out = cli("backup", str(Path(tmp) / "idle.db"), "--state-dir", str(state))
        print(f"backup, idle:        {idle:.2f}s  ({out})")

        writer = Writer(live)
        while len(writer.times) < 50:
            time.sleep(0.01)
        mark = time.perf_counter()
        while time.perf_counter() - mark < 2:  # the writer's undisturbed rate, 2 s
            time.sleep(0.05)
        before_end = time.perf_counter()
        loaded, out = cli("backup", str(Path(tmp) / "loaded.db"), "--state-dir", str(state))
        during_end = time.perf_counter()
        writer.stop()
        rate_before, gap_before = writer.window(mark, before_end)
        rate_during, gap_during = writer.window(before_end, during_end)
        print(f"backup, under writes: {loaded:.2f}s  ({out})")
        print(
            f"writer: {rate_before:.0f} commits/s, longest gap {gap_before:.0f} ms before; "
            f"{rate_during:.0f} commits/s, longest gap {gap_during:.0f} ms during the backup"
        )

        restored, out = cli("restore", str(Path(tmp) / "loaded.db"), "--state-dir", str(state))
        print(f"restore:             {restored:.2f}s  ({out.splitlines()[0]})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--megabytes", type=float, default=100)
    main(parser.parse_args().megabytes)
