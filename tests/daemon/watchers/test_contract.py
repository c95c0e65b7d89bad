"""The watcher contract, run against every watcher on a small real target of its own.

What a user relies on, whatever the source: started, a watcher's observations arrive with its
source and only the metrics the catalogue names for it; a failing target is a watcher_error
(once, not a storm) and the watcher goes on; stopped, it returns promptly and says nothing more;
it can be started again; and its pauses go through the injected sleep, so these tests run
every watcher on an hour's interval and never wait for one.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from daemon.core.alerts import METRIC_CATALOGUE, Observation
from daemon.core.clock import SystemClock
from daemon.watchers.command import CommandCheckSettings, CommandCheckWatcher
from daemon.watchers.files import FileWatcher, FileWatchSettings
from daemon.watchers.host import HostMetricsWatcher
from daemon.watchers.http import HttpCheckSettings, HttpCheckWatcher
from daemon.watchers.logs import LogFileWatcher, LogWatchSettings
from daemon.watchers.polling import PollingWatcher
from daemon.watchers.port import PortCheckSettings, PortCheckWatcher
from daemon.watchers.process import ProcessWatcher, ProcessWatchSettings
from daemon.watchers.settings import HostWatcherSettings
from tests.daemon.watchers.recorder import Recorder, SteppedSleep, until

HOUR = 3600.0  # every watcher's interval here: a real sleep would time the test out
WAIT = 20.0  # seconds a stop may take on a loaded machine
UNRESOLVABLE = "-nightshift-test"  # glibc rejects the name itself: no DNS query leaves the host


@dataclass
class Case:
    """One watcher kind on a real target: how to build it healthy or failing, how to stir it."""

    kind: str  # its key in METRIC_CATALOGUE
    build: Callable[[SteppedSleep], PollingWatcher]
    build_failing: Callable[[SteppedSleep], PollingWatcher]
    provoke: Callable[[], None] = lambda: None  # a change the next poll (or inotify) reports


class Run:
    """One watcher running in a task: start() and stop() as the supervisor does them."""

    def __init__(self, watcher: PollingWatcher, sleep: SteppedSleep) -> None:
        self.watcher = watcher
        self.sleep = sleep
        self.recorder = Recorder()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.watcher.run(self.recorder))

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        async with asyncio.timeout(WAIT):  # promptly: well within the supervisor's patience
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def reading(self, kind: str, after: int = 0) -> Observation:
        """The first observation at index >= ``after`` of one of ``kind``'s own metrics."""
        metrics = METRIC_CATALOGUE[kind]
        await until(
            lambda: any(o.metric in metrics for o in self.recorder.seen[after:]),
            f"a {kind} reading; seen {[o.metric for o in self.recorder.seen]}",
        )
        return next(o for o in self.recorder.seen[after:] if o.metric in metrics)


@contextlib.asynccontextmanager
async def running(case: Case, *, failing: bool = False) -> AsyncIterator[Run]:
    sleep = SteppedSleep()
    run = Run((case.build_failing if failing else case.build)(sleep), sleep)
    run.start()
    try:
        yield run
    finally:
        await run.stop()


async def first_reading(case: Case, run: Run) -> Observation:
    """Let the first poll happen, stir the target and let one more poll see it."""
    await run.sleep.paused(len(run.sleep.asked) + 1)
    case.provoke()
    await run.sleep.step()
    return await run.reading(case.kind)


# ---- the cases: one real target per watcher kind


@contextlib.asynccontextmanager
async def host_case(tmp_path: Path) -> AsyncIterator[Case]:
    yield Case(
        kind="host",
        build=lambda sleep: HostMetricsWatcher(
            HostWatcherSettings(interval_seconds=HOUR), SystemClock(), sleep=sleep
        ),
        build_failing=lambda sleep: HostMetricsWatcher(
            HostWatcherSettings(interval_seconds=HOUR, mounts=[str(tmp_path / "not-mounted")]),
            SystemClock(),
            sleep=sleep,
        ),
    )


@contextlib.asynccontextmanager
async def process_case(tmp_path: Path) -> AsyncIterator[Case]:
    marker = f"nightshift-contract-{uuid.uuid4().hex}"
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import time; time.sleep(120)",
        marker,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    try:
        yield Case(
            kind="process",
            build=lambda sleep: ProcessWatcher(
                ProcessWatchSettings(
                    name="child", cmdline=re.escape(marker), interval_seconds=HOUR
                ),
                SystemClock(),
                sleep=sleep,
            ),
            # a pidfile that is a directory cannot be read
            build_failing=lambda sleep: ProcessWatcher(
                ProcessWatchSettings(name="child", pidfile=tmp_path, interval_seconds=HOUR),
                SystemClock(),
                sleep=sleep,
            ),
        )
    finally:
        child.kill()
        await child.wait()


@contextlib.asynccontextmanager
async def port_case(tmp_path: Path) -> AsyncIterator[Case]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]

    def build(host: str) -> Callable[[SteppedSleep], PollingWatcher]:
        settings = PortCheckSettings(name="db", host=host, port=port, interval_seconds=HOUR)
        return lambda sleep: PortCheckWatcher(settings, SystemClock(), sleep=sleep)

    try:
        yield Case(kind="port", build=build("127.0.0.1"), build_failing=build(UNRESOLVABLE))
    finally:
        listener.close()


@contextlib.asynccontextmanager
async def http_case(tmp_path: Path) -> AsyncIterator[Case]:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="status: ok")

    app = web.Application()
    app.router.add_get("/health", ok)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    await web.SockSite(runner, sock).start()

    def build(url: str) -> Callable[[SteppedSleep], PollingWatcher]:
        settings = HttpCheckSettings(name="web", url=url, interval_seconds=HOUR)
        return lambda sleep: HttpCheckWatcher(settings, SystemClock(), sleep=sleep)

    try:
        yield Case(
            kind="http",
            build=build(f"http://127.0.0.1:{port}/health"),
            build_failing=build(f"http://{UNRESOLVABLE}:{port}/health"),
        )
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def command_case(tmp_path: Path) -> AsyncIterator[Case]:
    def build(command: list[str]) -> Callable[[SteppedSleep], PollingWatcher]:
        settings = CommandCheckSettings(name="check", command=command, interval_seconds=HOUR)
        return lambda sleep: CommandCheckWatcher(settings, SystemClock(), sleep=sleep)

    yield Case(
        kind="command",
        build=build(["/bin/sh", "-c", "echo ok"]),
        build_failing=build([str(tmp_path / "no-such-program")]),
    )


@contextlib.asynccontextmanager
async def files_case(tmp_path: Path) -> AsyncIterator[Case]:
    watched = tmp_path / "etc"
    watched.mkdir()
    created = iter(range(1_000_000))

    def build(path: Path) -> Callable[[SteppedSleep], PollingWatcher]:
        settings = FileWatchSettings(name="etc", paths=[str(path)], recheck_seconds=HOUR)
        return lambda sleep: FileWatcher(settings, SystemClock(), sleep=sleep)

    def provoke() -> None:
        (watched / f"new-{next(created)}.conf").write_text("x")

    yield Case(
        kind="file",
        build=build(watched),
        build_failing=build(tmp_path / "gone" / "app.conf"),
        provoke=provoke,
    )


def logs_case(*, inotify: bool) -> Callable[[Path], contextlib.AbstractAsyncContextManager[Case]]:
    @contextlib.asynccontextmanager
    async def case(tmp_path: Path) -> AsyncIterator[Case]:
        log = tmp_path / "app.log"
        log.write_text("before the watcher\n")
        lines = iter(range(1_000_000))

        def build(path: Path) -> Callable[[SteppedSleep], PollingWatcher]:
            settings = LogWatchSettings(
                name="app", path=str(path), poll_seconds=300, inotify=inotify
            )
            return lambda sleep: LogFileWatcher(settings, SystemClock(), sleep=sleep)

        def provoke() -> None:
            with log.open("a") as handle:
                handle.write(f"line {next(lines)}\n")

        yield Case(
            kind="log",
            build=build(log),
            build_failing=build(tmp_path / "gone" / "app.log"),
            provoke=provoke,
        )

    return case


CASES = {
    "host": host_case,
    "process": process_case,
    "port": port_case,
    "http": http_case,
    "command": command_case,
    "files": files_case,
    "logs": logs_case(inotify=True),
    "logs-polling": logs_case(inotify=False),
}


@pytest.fixture(params=list(CASES))
async def case(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Case]:
    async with CASES[request.param](tmp_path) as made:
        yield made


# ---- the contract


async def test_observations_carry_the_source_and_only_catalogue_metrics(case: Case) -> None:
    async with running(case) as run:
        await first_reading(case, run)
    allowed = set(METRIC_CATALOGUE[case.kind]) | {"watcher_error"}
    assert {o.metric for o in run.recorder.seen} <= allowed
    assert {o.source for o in run.recorder.seen} == {run.watcher.source}
    assert not [o for o in run.recorder.of("watcher_error") if o.value == 1.0]


async def test_a_failing_target_is_one_watcher_error_and_the_watcher_goes_on(case: Case) -> None:
    async with running(case, failing=True) as run:
        error = await run.recorder.wait_for("watcher_error", lambda o: o.value == 1.0)
        assert error.source == run.watcher.source
        assert error.labels["watcher"] == run.watcher.source
        assert error.text
        await run.sleep.paused()
        await run.sleep.step()
        await run.sleep.paused(2)  # the second poll ran: still alive, still failing
        assert run.task is not None and not run.task.done()
    assert [o.text for o in run.recorder.of("watcher_error")] == [error.text]  # no storm


async def test_stop_returns_promptly_and_nothing_arrives_after(case: Case) -> None:
    async with running(case) as run:
        await first_reading(case, run)
    said = len(run.recorder.seen)
    async with running(case) as witness:  # a second watcher on the same target
        await witness.sleep.paused()
        case.provoke()
        await witness.sleep.step()
        await witness.reading(case.kind)  # it saw the change; the stopped one must not have
    assert run.task is not None and run.task.done()
    assert len(run.recorder.seen) == said


async def test_a_stopped_watcher_starts_again(case: Case) -> None:
    sleep = SteppedSleep()
    run = Run(case.build(sleep), sleep)
    run.start()
    await first_reading(case, run)
    await run.stop()
    again = Run(run.watcher, sleep)  # the same watcher object, a fresh recorder
    again.start()
    try:
        await first_reading(case, again)
    finally:
        await again.stop()


async def test_the_injected_sleep_paces_the_polls(case: Case) -> None:
    async with running(case) as run:
        await run.sleep.paused()
        interval = run.watcher.interval
        assert interval - 60 < run.sleep.asked[0] <= interval
        before = len(run.recorder.seen)
        pauses = len(run.sleep.asked)
        case.provoke()
        await run.sleep.step()
        await run.sleep.paused(pauses + 1)  # the next poll ran at once, then paused again
        await run.reading(case.kind, after=before)
    assert all(interval - 60 < asked <= interval for asked in run.sleep.asked)
