"""Supervisor: a crashing component is restarted with growing backoff and the crash recorded."""

from __future__ import annotations

import asyncio

from daemon.core.clock import ManualClock
from daemon.runtime.supervisor import Supervisor


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    async def record(self, component: str, event: str, detail: str = "") -> int:
        self.events.append((component, event, detail))
        return len(self.events)


async def test_crashing_component_restarts_with_exponential_backoff_and_others_keep_running() -> (
    None
):
    clock = ManualClock()
    delays: list[float] = []
    crashes = 0
    healthy_ticks = 0
    done = asyncio.Event()

    async def fake_sleep(seconds: float) -> None:
        delays.append(seconds)
        await asyncio.sleep(0)

    async def flaky() -> None:
        nonlocal crashes
        crashes += 1
        if crashes >= 5:
            done.set()
            await asyncio.Event().wait()
        raise RuntimeError(f"boom {crashes}")

    async def steady() -> None:
        nonlocal healthy_ticks
        while True:
            healthy_ticks += 1
            await asyncio.sleep(0)

    events = Recorder()
    supervisor = Supervisor(
        clock, events=events, initial_backoff=1, max_backoff=5, sleep=fake_sleep
    )
    supervisor.start("flaky", flaky)
    supervisor.start("steady", steady)
    await asyncio.wait_for(done.wait(), 5)

    assert delays == [1, 2, 4, 5]  # doubling, capped at the max
    health = supervisor.health["flaky"]
    assert health.restarts == 4 and health.last_error == "RuntimeError: boom 4"
    assert health.state == "running"
    assert supervisor.health["steady"].state == "running" and healthy_ticks > 0
    crashed = [e for e in events.events if e[1] == "crashed"]
    assert len(crashed) == 4 and crashed[0] == ("flaky", "crashed", "RuntimeError: boom 1")
    await supervisor.stop()
    assert {h.state for h in supervisor.health.values()} == {"stopped"}


async def test_backoff_resets_after_a_stable_run() -> None:
    clock = ManualClock()
    delays: list[float] = []
    runs = 0

    async def fake_sleep(seconds: float) -> None:
        delays.append(seconds)

    async def component() -> None:
        nonlocal runs
        runs += 1
        if runs == 3:
            clock.advance(120)  # this run stayed up for two minutes before failing
        if runs >= 5:
            await asyncio.Event().wait()
        raise OSError("lost")

    supervisor = Supervisor(clock, initial_backoff=1, max_backoff=60, sleep=fake_sleep)
    supervisor.start("c", component)
    for _ in range(100):
        await asyncio.sleep(0)
    assert delays == [1, 2, 1, 2]
    await supervisor.stop()
