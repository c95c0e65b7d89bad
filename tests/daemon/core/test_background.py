"""The one background-task owner: references kept, failures logged by name, drained at stop."""

from __future__ import annotations

import asyncio
import logging

import pytest

from daemon.core.background import BackgroundTasks


async def test_a_failure_is_logged_with_the_tasks_name(caplog: pytest.LogCaptureFixture) -> None:
    tasks = BackgroundTasks("responder")

    async def boom() -> None:
        raise RuntimeError("disk on fire")

    task = tasks.spawn(boom(), "investigate #7")
    assert len(tasks) == 1 and task.get_name() == "investigate #7"
    with caplog.at_level(logging.ERROR, logger="daemon.core.background"):
        await tasks.wait_idle()
    assert len(tasks) == 0 and not tasks
    [record] = caplog.records
    assert record.getMessage() == "responder: investigate #7 failed"
    assert record.exc_info is not None and "disk on fire" in str(record.exc_info[1])


async def test_an_awaited_tasks_failure_is_left_to_its_caller(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tasks = BackgroundTasks("chat")

    async def boom() -> None:
        raise LookupError("no such conversation")

    with pytest.raises(LookupError):
        await tasks.spawn(boom(), "agent run", awaited=True)
    assert not caplog.records and len(tasks) == 0


async def test_drain_waits_then_cancels_and_lets_the_cancelled_clean_up() -> None:
    tasks, cleaned = BackgroundTasks("scheduler"), asyncio.Event()
    quick_done = asyncio.Event()

    async def quick() -> None:
        await asyncio.sleep(0)
        quick_done.set()

    async def stuck() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.sleep(0.01)  # e.g. record "interrupted" before the store closes
            cleaned.set()
            raise

    tasks.spawn(quick(), "quick")
    tasks.spawn(stuck(), "stuck")
    assert await tasks.drain(timeout=0.05) == 1
    assert quick_done.is_set() and cleaned.is_set() and len(tasks) == 0
    assert await tasks.drain(timeout=1) == 0  # nothing left


async def test_cancel_stops_long_lived_loops() -> None:
    tasks = BackgroundTasks("slack")
    loop = tasks.spawn(asyncio.Event().wait(), "slack-watchdog")
    await tasks.cancel()
    assert loop.cancelled() and len(tasks) == 0
