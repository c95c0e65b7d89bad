"""ReceiveLoop: the health of a polling channel comes from its loop, not from hope."""

from __future__ import annotations

import asyncio

from integrations.receive_loop import ReceiveLoop
from tests.support import eventually


async def test_start_returns_at_the_first_answer_and_health_follows_the_loop() -> None:
    loop = ReceiveLoop("poll", silence_limit=60)
    polls = asyncio.Event()

    async def poll_forever() -> None:
        loop.succeeded("polling as @bot")
        await polls.wait()
        loop.failed("cannot reach the API")
        await asyncio.Event().wait()

    await loop.launch(poll_forever(), name="t", detail="connecting", start_timeout=5)
    assert (loop.health().state, loop.health().detail) == ("up", "polling as @bot")
    polls.set()
    await eventually(lambda: loop.health().state == "down")
    assert (loop.health().state, loop.health().detail) == ("down", "cannot reach the API")
    await loop.cancel()
    assert not loop.running


async def never_answers() -> None:
    await asyncio.Event().wait()


async def test_a_loop_that_never_answers_does_not_hang_start() -> None:
    loop = ReceiveLoop("sync", silence_limit=60)
    await loop.launch(never_answers(), name="t", detail="connecting", start_timeout=0.05)
    assert loop.health().state == "starting"
    await loop.cancel()


async def test_a_dead_or_silent_loop_is_down() -> None:
    loop = ReceiveLoop("sync", silence_limit=0.01)

    async def once() -> None:
        loop.succeeded("syncing")

    await loop.launch(once(), name="t", detail="connecting", start_timeout=1)
    await eventually(lambda: loop.health().state == "down")
    health = loop.health()
    assert health.state == "down" and "sync loop stopped" in health.detail
