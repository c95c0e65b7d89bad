"""InboundOnce and ReceiveLoop.poll_forever: the dedupe and retries polling channels share."""

from __future__ import annotations

import asyncio

import pytest

from integrations.inbound import InboundOnce, SeenIds
from integrations.receive_loop import ReceiveLoop


def test_the_seen_window_forgets_the_oldest_first() -> None:
    seen = SeenIds(2, handled=[1])
    assert seen.add(2) and not seen.add(1)  # 1 is known, and now the newest
    assert seen.add(3)
    assert seen.snapshot() == [1, 3] and 2 not in seen and len(seen) == 2


async def test_an_item_is_handled_once_retried_while_failing_then_dropped() -> None:
    once = InboundOnce[str]("event", 10, max_attempts=3)
    calls: list[str] = []

    async def ok() -> None:
        calls.append("ok")

    async def broken() -> None:
        calls.append("broken")
        raise RuntimeError("store unavailable")

    assert await once.handle("a", ok) and await once.handle("a", ok)
    assert calls == ["ok"]
    assert [await once.handle("b", broken) for _ in range(3)] == [False, False, True]
    assert await once.handle("b", broken)  # dropped for good: not tried a fourth time
    assert calls == ["ok", "broken", "broken", "broken"]


async def test_poll_forever_backs_off_doubling_and_resets_after_success(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waits: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    script = iter(["fail", "fail", "fail", "ok", "fail", "unhandled", "stop"])

    async def poll() -> str:
        step = next(script)
        if step == "fail":
            raise OSError("unreachable")
        if step == "stop":
            raise asyncio.CancelledError
        return step

    async def handle(batch: str) -> bool:
        return batch == "ok"

    def failed(exc: Exception, backoff: float) -> float:
        return backoff

    with pytest.raises(asyncio.CancelledError):
        await ReceiveLoop.poll_forever(poll, handle, failed, backoff=(1.0, 3.0))
    assert waits == [1.0, 2.0, 3.0, 1.0, 1.0]
