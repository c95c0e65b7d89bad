"""Inbound once: the window of handled ids every channel de-duplicates with (Slack redelivers
an envelope, Telegram an update whose confirming poll was lost, Matrix a batch whose sync token
was not saved), and the per-item retry of the polling channels (a failing sink gets the item
again with its batch, a few times, then it is dropped with an error)."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)

MAX_HANDLE_ATTEMPTS = 5  # the sink failing on one item this often: drop it, log an error


class SeenIds(Generic[K]):
    """The last ``size`` ids handled, oldest forgotten first."""

    def __init__(self, size: int, handled: Iterable[K] = ()) -> None:
        self._size = size
        self._ids: OrderedDict[K, None] = OrderedDict()
        for key in handled:
            self.add(key)

    def __contains__(self, key: object) -> bool:
        return key in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, key: K) -> bool:
        """Remember ``key``; return False when it was already known."""
        known = key in self._ids
        self._ids[key] = None
        self._ids.move_to_end(key)
        while len(self._ids) > self._size:
            self._ids.popitem(last=False)
        return not known

    def snapshot(self) -> list[K]:
        """The ids remembered, oldest first (to persist across restarts)."""
        return list(self._ids)


class InboundOnce(Generic[K]):
    """Hands each inbound item (by id) to its handler once.

    An id already handled is skipped; a handler that raises is retried when the platform hands
    the item over again (the caller polls the same batch again), up to ``max_attempts``, then
    the item is dropped with an error so one bad item cannot stall the channel.
    """

    def __init__(
        self,
        what: str,
        size: int,
        *,
        max_attempts: int = MAX_HANDLE_ATTEMPTS,
        handled: Iterable[K] = (),
    ) -> None:
        self._what = what  # e.g. "Telegram update", as named in the logs
        self._max_attempts = max_attempts
        self._attempts: dict[K, int] = {}
        self.seen: SeenIds[K] = SeenIds(size, handled)

    async def handle(self, key: K, handler: Callable[[], Awaitable[None]]) -> bool:
        """Run ``handler`` unless ``key`` was handled; False when it failed and must come again."""
        if key in self.seen:
            log.debug("skipping %s %s: already handled", self._what, key)
            return True
        try:
            await handler()
        except Exception:
            attempts = self._attempts.get(key, 0) + 1
            if attempts < self._max_attempts:
                self._attempts[key] = attempts
                log.warning("%s %s failed; will retry", self._what, key)
                return False
            log.exception("dropping %s %s after %d tries", self._what, key, attempts)
        self._attempts.pop(key, None)
        self.seen.add(key)
        return True
