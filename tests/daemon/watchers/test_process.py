"""ProcessWatcher against real child processes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from daemon.core.alerts import Observation
from daemon.watchers.process import ProcessWatcher, ProcessWatchSettings
from tests.daemon.watchers.recorder import Recorder, running

ROOT = Path(__file__).resolve().parents[3]
FAST = 0.1  # seconds between scans in these tests


class Children:
    """Starts child processes and always kills and reaps them."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *argv: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def sleeper(self, marker: str) -> subprocess.Popen[bytes]:
        return self.start(sys.executable, "-c", "import time; time.sleep(60)", marker)

    @staticmethod
    def stop(proc: subprocess.Popen[bytes]) -> None:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture
def children() -> Iterator[Children]:
    kids = Children()
    yield kids
    for proc in kids.procs:
        if proc.poll() is None:
            Children.stop(proc)


def up(value: float) -> Callable[[Observation], bool]:
    return lambda o: o.value == value


def cycle(rec: Recorder, seen: Observation) -> dict[str, float | None]:
    """The values emitted in the same scan as ``seen``."""
    return {o.metric: o.value for o in rec.seen if o.at == seen.at}


async def test_cmdline_match_counts_restarts(children: Children) -> None:
    marker = f"nightshift-test-{uuid.uuid4().hex}"
    settings = ProcessWatchSettings(
        name="sleeper", cmdline=re.escape(marker), interval_seconds=FAST
    )
    watcher = ProcessWatcher(settings)
    rec = Recorder()
    first = children.sleeper(marker)
    async with running(watcher, rec) as task:
        seen = await rec.wait_for("process_up", up(1), process="sleeper")
        values = cycle(rec, seen)
        assert values["process_count"] == 1
        assert values["process_restarts"] == 0
        assert values["process_rss_mb"] is not None and values["process_rss_mb"] > 1

        Children.stop(first)
        mark = len(rec.seen)
        await rec.wait_for("process_up", up(0), after=mark)
        assert rec.of("process_count")[-1].value == 0

        children.sleeper(marker)
        mark = len(rec.seen)
        back = await rec.wait_for("process_up", up(1), after=mark)
        assert cycle(rec, back)["process_restarts"] == 1
        assert cycle(rec, back)["process_count"] == 1
        assert not task.done()
    assert {o.labels["process"] for o in rec.seen} == {"sleeper"}
    assert {o.source for o in rec.seen} == {"process:sleeper"}
    assert not rec.of("watcher_error")


async def test_never_running_is_down_without_restarts() -> None:
    marker = f"nightshift-absent-{uuid.uuid4().hex}"
    watcher = ProcessWatcher(
        ProcessWatchSettings(name="ghost", cmdline=marker, interval_seconds=FAST)
    )
    rec = Recorder()
    async with running(watcher, rec):
        await rec.wait_for("process_restarts")
        await rec.wait_for("process_up", after=len(rec.seen))  # a second scan
    assert {o.value for o in rec.of("process_up")} == {0}
    assert {o.value for o in rec.of("process_restarts")} == {0}
    assert {o.value for o in rec.of("process_rss_mb")} == {0}


async def test_exact_name_match(children: Children, tmp_path: Path) -> None:
    name = f"nsw{uuid.uuid4().hex[:10]}"  # fits the kernel's 15-character comm
    sleep = tmp_path / name
    shutil.copy(shutil.which("sleep") or "/bin/sleep", sleep)
    children.start(str(sleep), "60")
    children.start(str(sleep), "60")
    watcher = ProcessWatcher(ProcessWatchSettings(name="pair", process=name, interval_seconds=FAST))
    rec = Recorder()
    async with running(watcher, rec):
        count = await rec.wait_for("process_count", process="pair")
    assert count.value == 2
    assert rec.of("process_up")[0].value == 1


async def test_cpu_burner_shows_cpu_percent(children: Children) -> None:
    marker = f"nightshift-burn-{uuid.uuid4().hex}"
    children.start(sys.executable, "-c", "while True: pass", marker)
    watcher = ProcessWatcher(
        ProcessWatchSettings(name="burner", cmdline=marker, interval_seconds=0.5)
    )
    rec = Recorder()
    async with running(watcher, rec):
        hot = await rec.wait_for("process_cpu_percent", lambda o: (o.value or 0) > 50, timeout=30.0)
    assert hot.value is not None and hot.value > 50
    assert rec.of("process_cpu_percent")[0].value == 0  # the first sample only sets the baseline


async def test_pidfile(children: Children, tmp_path: Path) -> None:
    pidfile = tmp_path / "app.pid"
    watcher = ProcessWatcher(
        ProcessWatchSettings(name="app", pidfile=pidfile, interval_seconds=FAST)
    )
    rec = Recorder()
    async with running(watcher, rec) as task:
        missing = await rec.wait_for("process_up")
        assert missing.value == 0  # no pidfile: not running, not a watcher error

        proc = children.sleeper("pidfile-test")
        pidfile.write_text(f"{proc.pid}\n")
        await rec.wait_for("process_up", up(1), after=len(rec.seen))

        pidfile.write_text("not a pid\n")
        await rec.wait_for("process_up", up(0), after=len(rec.seen))
        assert not rec.of("watcher_error")

        pidfile.write_text(f"{proc.pid}")
        await rec.wait_for("process_up", up(1), after=len(rec.seen))
        Children.stop(proc)  # a stale pidfile naming a dead pid
        await rec.wait_for("process_up", up(0), after=len(rec.seen))

        pidfile.unlink()
        pidfile.mkdir()  # unreadable as a file: that is a watcher error
        error = await rec.wait_for("watcher_error", target=str(pidfile))
        assert error.value == 1
        assert "cannot read pidfile" in error.text and str(pidfile) in error.text

        pidfile.rmdir()
        await rec.wait_for("watcher_error", up(0), after=rec.seen.index(error) + 1)
        assert not task.done()


PERMISSION_PROBE = """
import asyncio, json, sys
from pathlib import Path
from daemon.watchers.process import ProcessWatcher, ProcessWatchSettings

async def main() -> None:
    seen = []
    settings = ProcessWatchSettings(name="app", pidfile=Path(sys.argv[1]), interval_seconds=0.05)
    watcher = ProcessWatcher(settings)
    scans = []
    scan = watcher._scanner.scan
    def counted():
        try:
            return scan()
        finally:
            scans.append(1)
    watcher._scanner.scan = counted
    task = asyncio.create_task(watcher.run(seen.append))
    while len(scans) < 5:  # several scans: an error is reported once, not every scan
        await asyncio.sleep(0.01)
    task.cancel()
    print(json.dumps([[o.metric, o.value, o.text] for o in seen]))

asyncio.run(main())
"""


def _probe(pidfile: Path) -> list[list[object]]:
    """Run a watcher on ``pidfile`` for five scans in a child; as root, as nobody."""
    argv = [sys.executable, "-c", PERMISSION_PROBE, str(pidfile)]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root and setpriv (util-linux) is missing to drop privileges")
        argv = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)
    if done.returncode != 0 and "PermissionError" in done.stderr:
        pytest.skip(f"the checkout is not readable by nobody: {done.stderr.splitlines()[-1]}")
    assert done.returncode == 0, done.stderr
    seen: list[list[object]] = json.loads(done.stdout)
    return seen


def test_pidfile_without_permission_is_a_watcher_error() -> None:
    with tempfile.TemporaryDirectory() as tmp:  # pytest's tmp_path is private to root
        Path(tmp).chmod(0o755)
        pidfile = Path(tmp) / "app.pid"
        pidfile.write_text(f"{os.getpid()}")
        pidfile.chmod(0o644)
        readable = _probe(pidfile)
        pidfile.chmod(0)
        unreadable = _probe(pidfile)
    assert [v for m, v, _ in readable if m == "process_up"][0] == 1  # the control
    assert not [m for m, _, _ in readable if m == "watcher_error"]
    errors = [text for m, v, text in unreadable if m == "watcher_error" and v == 1]
    assert len(errors) == 1  # once, not every scan
    assert isinstance(errors[0], str)
    assert "cannot read pidfile: Permission denied" in errors[0] and str(pidfile) in errors[0]
    assert not [m for m, _, _ in unreadable if m == "process_up"]  # unknown, not "down"


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({}, "exactly one of process, cmdline or pidfile (found: none)"),
        ({"process": "nginx", "pidfile": "/run/nginx.pid"}, "found: process, pidfile"),
        ({"cmdline": "worker[("}, "invalid regular expression"),
    ],
)
def test_settings_are_validated(keys: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        ProcessWatchSettings.model_validate({"name": "web", **keys})
    with pytest.raises(ValidationError, match="interval_seconds"):
        ProcessWatchSettings(name="web", process="nginx", interval_seconds=0)
