"""HostMetricsWatcher against the real host: psutil readings and a real tmpfs mount."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.watchers.host import HostMetricsWatcher
from daemon.watchers.settings import HostWatcherSettings
from tests.daemon.watchers.recorder import Recorder, running
from tests.support import mounted_tmpfs

SCALARS = {"cpu_percent", "memory_percent", "swap_percent", "load1", "load5", "load15"}


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MB tmpfs mounted under tmp_path (skips when this host does not allow mounting)."""
    with mounted_tmpfs(tmp_path / "small", "1m") as mount:
        yield mount


async def _run(*argv: str) -> None:
    done = await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True)
    assert done.returncode == 0, f"{argv}: {done.stderr}"


async def test_emits_host_metrics_and_net_error_rates() -> None:
    watcher = HostMetricsWatcher(HostWatcherSettings(interval_seconds=1.0))
    rec = Recorder()
    async with running(watcher, rec):
        await rec.wait_for("net_errors", interface="lo")  # a rate needs two samples
    first_cycle = {o.metric for o in rec.seen if o.at == rec.seen[0].at}
    assert first_cycle >= SCALARS
    assert all(not o.labels for o in rec.seen if o.metric in SCALARS)
    assert 0 <= rec.of("memory_percent")[0].value <= 100  # type: ignore[operator]
    disks = rec.of("disk_percent")
    assert disks, "no real filesystem reported"
    assert all(o.labels["mount"].startswith("/") for o in disks)
    assert rec.of("net_errors", interface="lo")[0].value >= 0  # type: ignore[operator]
    assert not rec.of("watcher_error")
    assert watcher.latest is not None
    assert watcher.summary()["samples"] == len(watcher.history) >= 2


async def test_run_without_emit_still_keeps_history() -> None:
    """The runtime's current call, run() with no arguments, keeps working."""
    watcher = HostMetricsWatcher(HostWatcherSettings(interval_seconds=1.0))
    task = asyncio.create_task(watcher.run())
    try:
        for _ in range(200):
            if watcher.latest is not None:
                break
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert watcher.summary()["samples"] >= 1


async def test_tmpfs_filling_up_then_unmounted(tmpfs: Path) -> None:
    watcher = HostMetricsWatcher(HostWatcherSettings(interval_seconds=1.0, mounts=[f"{tmpfs}/"]))
    rec = Recorder()
    mount = str(tmpfs)
    async with running(watcher, rec) as task:
        empty = await rec.wait_for("disk_percent", mount=mount)
        assert empty.value is not None and empty.value < 50
        assert rec.of("inode_percent", mount=mount)

        (tmpfs / "ballast").write_bytes(b"\0" * 700_000)
        full = await rec.wait_for("disk_percent", lambda o: (o.value or 0) > 50, mount=mount)
        assert full.value is not None and full.value <= 100
        # only the listed mount is watched, tmpfs or not
        assert {o.labels["mount"] for o in rec.of("disk_percent")} == {mount}

        await _run("umount", mount)
        mark = len(rec.seen)
        error = await rec.wait_for("watcher_error", after=mark, target=mount)
        assert error.value == 1
        assert "not mounted" in error.text and mount in error.text
        after_error = rec.seen.index(error)
        await rec.wait_for("cpu_percent", after=after_error + 1)  # still sampling the rest
        assert not task.done()
        assert len(rec.of("watcher_error", target=mount)) == 1  # reported once, not every cycle
        later = [o for o in rec.seen[after_error:] if o.metric == "disk_percent"]
        assert not later  # nothing pretends the old mount is still there

        await _run("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mount)
        back = await rec.wait_for("watcher_error", lambda o: o.value == 0, target=mount)
        resumed = await rec.wait_for("disk_percent", after=rec.seen.index(back), mount=mount)
        assert resumed.value is not None and resumed.value < 50  # a fresh, empty tmpfs
