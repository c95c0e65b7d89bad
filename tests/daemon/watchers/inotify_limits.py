"""Real inotify limits for the file and log watchers, without touching the host's.

`run_limited` starts this module in a new user namespace (``unshare -Ur``), where the
per-namespace limits in /proc/sys/user/max_inotify_{instances,watches} can be lowered and raised
by an unprivileged user; the scenario prints every observation as a JSON line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from daemon.core.alerts import Observation
from daemon.core.clock import ManualClock
from daemon.watchers.files import FileWatcher, FileWatchSettings
from daemon.watchers.logs import LogFileWatcher, LogWatchSettings
from tests.daemon.watchers.recorder import Recorder, running

ROOT = Path(__file__).resolve().parents[3]
LIMITS = Path("/proc/sys/user")


def userns_available() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-Ur", "true"], capture_output=True, check=False)
    return probe.returncode == 0


async def run_limited(scenario: str, directory: Path) -> list[dict[str, object]]:
    """Run ``scenario`` in a fresh user namespace; its observations, or AssertionError."""
    process = await asyncio.create_subprocess_exec(
        "unshare",
        "-Ur",
        sys.executable,
        "-m",
        "tests.daemon.watchers.inotify_limits",
        scenario,
        str(directory),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode == 0, f"{scenario} failed:\n{err.decode()[-3000:]}"
    return [json.loads(line) for line in out.decode().splitlines()]


def _limit(name: str, value: int) -> None:
    (LIMITS / f"max_inotify_{name}").write_text(f"{value}\n")


def _is_error(value: float, target: str = "") -> Callable[[Observation], bool]:
    return lambda o: o.value == value and o.labels.get("target", "") == target


async def _files_instances(base: Path, recorder: Recorder) -> None:
    _limit("instances", 0)
    watched = base / "watched"
    watched.mkdir()
    settings = FileWatchSettings(name="cfg", paths=[str(watched)], recheck_seconds=0.1)
    async with running(FileWatcher(settings, ManualClock()), recorder):
        await recorder.wait_for("watcher_error", _is_error(1.0))
        _limit("instances", 16)
        mark = len(recorder.seen)
        await recorder.wait_for("watcher_error", _is_error(0.0))
        for n in range(200):  # the new watch may still be going up: create files until one is seen
            (watched / f"new{n}.conf").write_text("x")
            with contextlib.suppress(AssertionError):
                await recorder.wait_for(
                    "file_changed", lambda o: o.text == "created", after=mark, timeout=0.1
                )
                break
        else:
            raise AssertionError("no file created in the watched directory was ever seen")


async def _files_instances_at_start(base: Path, recorder: Recorder) -> None:
    """As up to watchdog 7.1.0, which opened its inotify descriptor in ``Observer.start()``."""
    import ctypes
    import errno
    import os
    from typing import cast

    from watchdog.observers import Observer
    from watchdog.observers.api import BaseObserver

    observer = cast(type[BaseObserver], Observer)  # the class Observer names on this platform
    libc = ctypes.CDLL(None, use_errno=True)
    original = observer.start

    def eager_start(self: BaseObserver) -> None:
        fd = libc.inotify_init()
        if fd == -1:
            raise OSError(ctypes.get_errno() or errno.EMFILE, "inotify instance limit reached")
        os.close(fd)
        original(self)

    observer.start = eager_start  # type: ignore[method-assign]
    try:
        await _files_instances(base, recorder)
    finally:
        observer.start = original  # type: ignore[method-assign]


async def _files_watches(base: Path, recorder: Recorder) -> None:
    _limit("watches", 1)
    first, second = base / "first", base / "second"
    first.mkdir()
    second.mkdir()
    settings = FileWatchSettings(name="cfg", paths=[str(first), str(second)], recheck_seconds=0.1)
    watcher = FileWatcher(settings, ManualClock())
    async with running(watcher, recorder):
        await recorder.wait_for("watcher_error", _is_error(1.0, str(second)))
        await watcher.ready.wait()
        (first / "a.conf").write_text("x")  # the first directory is watched all the same
        await recorder.wait_for("file_changed", lambda o: o.text == "created")
        _limit("watches", 16)
        await recorder.wait_for("watcher_error", _is_error(0.0, str(second)))
        (second / "b.conf").write_text("x")
        await recorder.wait_for("file_changed", path=str(second / "b.conf"))


async def _log_instances(base: Path, recorder: Recorder) -> None:
    _limit("instances", 0)
    log = base / "app.log"
    log.write_text("")
    watcher = LogFileWatcher(
        LogWatchSettings(name="app", path=str(log), poll_seconds=0.05), ManualClock()
    )
    async with running(watcher, recorder):
        await recorder.wait_for("watcher_error", _is_error(1.0))
        await watcher.ready.wait()
        with log.open("a") as handle:
            handle.write("still read by polling\n")
        await recorder.wait_for("log_line")


SCENARIOS = {
    "files-instances": _files_instances,
    "files-instances-at-start": _files_instances_at_start,
    "files-watches": _files_watches,
    "log-instances": _log_instances,
}


async def _main(scenario: str, base: Path) -> None:
    recorder = Recorder()
    try:
        await SCENARIOS[scenario](base, recorder)
    finally:
        for o in recorder.seen:
            print(json.dumps({"metric": o.metric, "value": o.value, "text": o.text, **o.labels}))


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1], Path(sys.argv[2])))
