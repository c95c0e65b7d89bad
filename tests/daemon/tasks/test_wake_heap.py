"""The scheduler's heap of next slots: re-armed and disarmed tasks never wake."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from daemon.core.schedule import parse_schedule
from daemon.tasks.wake_heap import WakeHeap

T0 = datetime(2026, 12, 6, 6, 0, tzinfo=UTC)
EVERY_MINUTE = parse_schedule(cron="* * * * *")


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_due_entries_come_out_in_time_order_and_later_ones_stay() -> None:
    heap = WakeHeap()
    for name, seconds in [("c", 30), ("a", 10), ("b", 20), ("later", 90)]:
        heap.push(name, EVERY_MINUTE, at(seconds))
    assert [armed.name for armed in heap.pop_due(at(30))] == ["a", "b", "c"]
    assert heap.earliest() == at(90)
    assert heap.pop_due(at(89)) == []


def test_a_rearmed_task_wakes_only_at_its_new_slot() -> None:
    heap = WakeHeap()
    first = heap.push("backup", EVERY_MINUTE, at(10))
    heap.push("backup", EVERY_MINUTE, at(70))
    assert first is not None and not heap.is_current(first)
    assert heap.earliest() == at(70)
    assert heap.pop_due(at(60)) == []
    assert [armed.slot for armed in heap.pop_due(at(70))] == [at(70)]


def test_disarmed_and_finished_one_shots_never_wake() -> None:
    heap = WakeHeap()
    heap.push("gone", EVERY_MINUTE, at(10))
    heap.push("once", EVERY_MINUTE, at(20))
    heap.disarm("gone")
    assert heap.push("once", EVERY_MINUTE, None) is None  # its one slot is over
    assert "gone" not in heap and "once" not in heap
    assert heap.earliest() is None
    assert heap.pop_due(at(3600)) == []
