"""A process killed with SIGKILL mid-write loses no committed row and leaves a sound file."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from daemon.core.clock import ManualClock
from memory.components import ComponentEventRepo
from memory.store import SqliteStore

REPO_ROOT = Path(__file__).resolve().parents[2]
WRITER = Path(__file__).with_name("_crash_writer.py")
IDS_BEFORE_KILL = 300


async def test_committed_rows_survive_sigkill(db_path: Path) -> None:
    pythonpath = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": pythonpath}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(WRITER),
        str(db_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO_ROOT,
        env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    printed: list[int] = []
    try:
        async with asyncio.timeout(60):
            while len(printed) < IDS_BEFORE_KILL:
                line = await proc.stdout.readline()
                if not line:
                    raise AssertionError(f"writer exited early: {(await proc.stderr.read())!r}")
                printed.append(int(line))
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
        rest, _ = await proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    printed += [int(line) for line in rest.decode().split("\n")[:-1]]  # drop a partial line

    async with await SqliteStore.open(db_path) as store:
        events = await ComponentEventRepo(store, ManualClock()).recent(limit=len(printed) + 10)
        async with store.read() as db:
            integrity = [row[0] for row in await db.execute_fetchall("PRAGMA integrity_check")]
        report = await store.check()

    stored = {e.id for e in events}
    assert set(printed) <= stored
    assert len(stored) - len(printed) <= 1  # at most the row committed as we killed
    assert integrity == ["ok"]
    assert report["ok"] is True
