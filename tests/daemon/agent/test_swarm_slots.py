"""Priority slots: who gets a freed slot, and that none is lost to a cancelled waiter."""

from __future__ import annotations

import asyncio

import pytest

from daemon.agent.swarm.slots import PrioritySlots


async def _queued(slots: PrioritySlots, count: int) -> None:
    """Let the loop run until ``count`` callers wait (they queue within a tick or two)."""
    for _ in range(100):
        if slots.waiting >= count:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{slots.waiting} waiting, not {count}")


async def test_a_freed_slot_goes_to_the_lowest_key_then_the_first_to_ask() -> None:
    slots = PrioritySlots(1)
    await slots.acquire()
    order: list[str] = []

    async def wait(name: str, key: tuple[float, ...]) -> None:
        async with slots.slot(key):
            order.append(name)

    waiters = []
    keys = [("new-a", (2.0, 0.0)), ("late", (1.0, 0.0)), ("new-b", (2.0, 0.0)), ("long", (2.0, -9))]
    for name, key in keys:
        waiters.append(asyncio.create_task(wait(name, key)))
        await _queued(slots, len(waiters))
    slots.release()
    await asyncio.gather(*waiters)
    assert order == ["late", "long", "new-a", "new-b"]
    assert (slots.held, slots.waiting) == (0, 0)


async def test_a_waiter_cancelled_before_or_as_it_is_let_in_loses_no_slot() -> None:
    slots = PrioritySlots(1)
    await slots.acquire()
    gone = asyncio.create_task(slots.acquire())
    granted = asyncio.create_task(slots.acquire())
    await _queued(slots, 2)
    gone.cancel()  # cancelled while waiting
    slots.release()  # goes past the cancelled one to the next
    granted.cancel()  # ...which is cancelled in the same tick it was let in: it gives it back
    results = await asyncio.gather(gone, granted, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    assert (slots.held, slots.waiting) == (0, 0)
    await asyncio.wait_for(slots.acquire(), 1)  # the slot is there to take


async def test_a_new_limit_lets_waiters_in_at_once_or_takes_hold_as_holders_release() -> None:
    slots = PrioritySlots(1)
    await slots.acquire()
    more = [asyncio.create_task(slots.acquire()) for _ in range(2)]
    await _queued(slots, 2)
    slots.resize(3)
    await asyncio.gather(*more)
    assert slots.held == 3
    slots.resize(1)
    late = asyncio.create_task(slots.acquire())
    await _queued(slots, 1)
    slots.release()
    slots.release()  # still 1 held: at the new limit, the waiter keeps waiting
    await asyncio.sleep(0)
    assert not late.done()
    slots.release()
    await asyncio.wait_for(late, 1)
    assert slots.held == 1


@pytest.mark.parametrize("limit", [0, -1])
def test_a_pool_without_slots_is_refused(limit: int) -> None:
    with pytest.raises(ValueError, match="at least one slot"):
        PrioritySlots(limit)
