"""The polling base's own promises: pacing, wake-ups, failures reported, close on stop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from daemon.core.clock import ManualClock
from daemon.watchers.base import Emit, ErrorReporter
from daemon.watchers.polling import PollingWatcher
from tests.daemon.watchers.recorder import Recorder, SteppedSleep


class Scripted(PollingWatcher):
    """Each poll takes ``takes`` seconds of the manual clock and does what the test says."""

    name = source = "scripted"
    expected_errors = (OSError,)

    def __init__(self, clock: ManualClock, sleep: SteppedSleep) -> None:
        super().__init__(10.0, clock, sleep)
        self.manual = clock
        self.takes = 0.0
        self.fail: Exception | None = None
        self.wake_once = False  # the next poll wakes the watcher (as an inotify event would)
        self.polls = 0
        self.closed = 0

    async def poll(self, emit: Emit, errors: ErrorReporter) -> None:
        self.polls += 1
        self.manual.advance(self.takes)
        if self.wake_once:
            self.wake_once = False
            self.wake()
        if self.fail is not None:
            raise self.fail
        errors.ok()

    async def close(self) -> None:
        self.closed += 1


class Steady(Scripted):
    """Polls start ``interval`` apart."""

    from_start = True


@contextlib.asynccontextmanager
async def started(watcher: Scripted, recorder: Recorder) -> AsyncIterator[None]:
    task = asyncio.create_task(watcher.run(recorder))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_the_interval_counts_from_the_poll_start_or_its_end() -> None:
    for kind, expected in ((Steady, 6.0), (Scripted, 10.0)):
        sleep = SteppedSleep()
        watcher = kind(ManualClock(), sleep)
        watcher.takes = 4.0
        async with started(watcher, Recorder()):
            await sleep.paused()
        assert sleep.asked == [expected]


async def test_a_slow_poll_is_followed_at_once_by_the_next_on_a_steady_rate() -> None:
    sleep = SteppedSleep()
    watcher = Steady(ManualClock(), sleep)
    watcher.takes = 25.0
    async with started(watcher, Recorder()):
        await sleep.paused()
    assert sleep.asked == [0.0]


async def test_wake_ends_the_pause_and_a_wake_during_a_poll_skips_the_next_one() -> None:
    sleep = SteppedSleep()
    watcher = Scripted(ManualClock(), sleep)
    async with started(watcher, Recorder()):
        await sleep.paused()
        watcher.wake_once = True
        watcher.wake()  # ends the pause; poll 2 wakes the watcher, so poll 3 follows at once
        await sleep.paused(2)
        assert watcher.polls == 3
    assert sleep.asked == [10.0, 10.0]


async def test_a_failing_poll_is_one_watcher_error_then_ok_and_the_loop_goes_on() -> None:
    sleep = SteppedSleep()
    recorder = Recorder()
    watcher = Scripted(ManualClock(), sleep)
    watcher.fail = ValueError("a bug")
    async with started(watcher, recorder):
        await sleep.paused()
        await sleep.step()
        await sleep.paused(2)
        watcher.fail = OSError("disk gone")
        await sleep.step()
        await sleep.paused(3)
        watcher.fail = None
        await sleep.step()
        await sleep.paused(4)
    errors = [(o.value, o.text) for o in recorder.of("watcher_error", watcher="scripted")]
    assert errors == [
        (1.0, "check failed: ValueError('a bug')"),  # twice failing, reported once
        (1.0, "disk gone"),  # an expected error, in its own words
        (0.0, ""),
    ]


async def test_close_runs_once_when_the_run_is_cancelled() -> None:
    sleep = SteppedSleep()
    watcher = Scripted(ManualClock(), sleep)
    async with started(watcher, Recorder()):
        await sleep.paused()
    assert watcher.closed == 1
