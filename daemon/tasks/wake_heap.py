"""Every armed task's next slot, earliest first: what the scheduler's one timer waits for.

Re-arming or disarming a task does not search the heap: the task's current entry is recorded
by name, and an entry that is no longer current is dropped when it reaches the top.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass
from datetime import datetime

from daemon.core.schedule import Schedule

__all__ = ["Armed", "WakeHeap"]


@dataclass(frozen=True, slots=True, eq=False)
class Armed:
    """A task's next slot; stale once the task is re-armed or disarmed."""

    name: str
    slot: datetime
    schedule: Schedule


class WakeHeap:
    """The armed tasks by name, and their slots in time order."""

    def __init__(self) -> None:
        self._armed: dict[str, Armed] = {}
        self._heap: list[tuple[datetime, int, Armed]] = []
        self._seq = itertools.count()  # heap ties: never compare Armed

    def __contains__(self, name: str) -> bool:
        return name in self._armed

    def get(self, name: str) -> Armed | None:
        """The task's current entry, if it is armed."""
        return self._armed.get(name)

    def is_current(self, armed: Armed) -> bool:
        """Whether ``armed`` is still its task's entry (not re-armed nor disarmed since)."""
        return self._armed.get(armed.name) is armed

    def push(self, name: str, schedule: Schedule, slot: datetime | None) -> Armed | None:
        """Arm ``name`` for ``slot``, replacing its entry (None: a one-shot that is over, which
        disarms it)."""
        if slot is None:
            self.disarm(name)
            return None
        armed = Armed(name, slot, schedule)
        self._armed[name] = armed
        heapq.heappush(self._heap, (slot, next(self._seq), armed))
        return armed

    def disarm(self, name: str) -> None:
        self._armed.pop(name, None)  # its heap entry is dropped when it comes up

    def clear(self) -> None:
        self._armed.clear()
        self._heap.clear()

    def earliest(self) -> datetime | None:
        """The earliest current slot (stale entries on top are dropped)."""
        heap = self._heap
        while heap and not self.is_current(heap[0][2]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def pop_due(self, until: datetime) -> list[Armed]:
        """Take out every current entry whose slot is at or before ``until``; they stay the
        tasks' entries (so a re-arm or disarm meanwhile is seen) until pushed again."""
        due: list[Armed] = []
        heap = self._heap
        while heap and heap[0][0] <= until:
            armed = heapq.heappop(heap)[2]
            if self.is_current(armed):
                due.append(armed)
        return due
