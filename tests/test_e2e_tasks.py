"""End to end, the scheduler: `nightshift run` with an every-second command task, killed with
SIGKILL and restarted — every slot runs at most once, the missed one is caught up, and results
are confirmed delivered through the console channel."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.support import DaemonProcess


def rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


async def test_every_slot_runs_once_across_sigkill_and_results_are_delivered(
    tmp_path: Path,
) -> None:
    ticks = tmp_path / "ticks.txt"
    config = tmp_path / "config.toml"
    config.write_text(
        "[watchers.host]\nenabled = false\n"
        "[[scheduler.tasks]]\n"
        'name = "tick"\n'
        "interval_seconds = 1\n"
        f'command = ["sh", "-c", "echo $NIGHTSHIFT_SLOT >> {ticks}; echo tick $NIGHTSHIFT_SLOT"]\n'
        'catch_up = "once"\n'
    )

    async def ticked(count: int) -> list[str]:
        """Wait until the task has written ``count`` slots (the file is the event)."""
        for _ in range(600):
            written = ticks.read_text().split() if ticks.exists() else []
            if len(written) >= count:
                return written
            await asyncio.sleep(0.05)
        raise AssertionError(f"only {len(written)} of {count} ticks")

    daemon = DaemonProcess(config, tmp_path / "state")
    await daemon.start()
    before = await ticked(3)
    daemon.signal(signal.SIGKILL)
    await daemon.wait()
    await daemon.stop()  # closes its sockets and log
    last = datetime.fromisoformat(max(before).replace("Z", "+00:00"))
    # down until at least three slots after the last one seen have passed (two are missed
    # whatever the kill's timing), however slow this machine is
    await asyncio.sleep(
        max(0.0, (last + timedelta(seconds=3.5) - datetime.now(UTC)).total_seconds())
    )
    daemon = DaemonProcess(config, tmp_path / "state")
    await daemon.start()
    await ticked(len(before) + 3)  # the catch-up run and two more after the restart
    await daemon.stop()

    written = ticks.read_text().split()
    assert len(written) >= 5
    assert [slot for slot, n in Counter(written).items() if n > 1] == []  # no slot ran twice
    db = daemon.state_dir / "nightshift.db"
    runs = rows(db, "SELECT slot, status FROM task_runs ORDER BY slot")
    ran = [slot for slot, status in runs if status in ("ok", "interrupted", "failed")]
    assert sorted(written) == sorted(s for s in ran if s in written)
    assert any(status == "skipped" for _, status in runs)  # the older missed slot, passed over
    delivered = rows(
        db,
        "SELECT o.status FROM task_runs r JOIN outbox o ON o.id = r.outbox_id"
        " WHERE r.status = 'ok'",
    )
    assert delivered and all(status == "delivered" for (status,) in delivered)


async def test_sighup_reconciles_config_tasks(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    base = "[watchers.host]\nenabled = false\n"
    task = '[[scheduler.tasks]]\nname = "{name}"\ncron = "0 3 * * *"\ncommand = ["true"]\n'
    config.write_text(base + task.format(name="nightly"))
    daemon = DaemonProcess(config, tmp_path / "state")
    await daemon.start()
    try:
        code, out, _ = await daemon.cli("tasks")
        assert "nightly" in out
        config.write_text(base + task.format(name="weekly").replace("0 3 * * *", "0 3 * * sun"))
        daemon.signal(signal.SIGHUP)
        for _ in range(100):
            code, out, _ = await daemon.cli("tasks")
            if "weekly" in out:
                break
            await asyncio.sleep(0.1)
        assert "weekly — cron '0 3 * * sun' (UTC)" in out and "nightly" not in out
    finally:
        await daemon.stop()
