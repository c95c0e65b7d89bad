"""Durable delivery: every outbound message is a row first; a worker per channel sends it.

Order is kept per target (room, chat): a message waiting for its retry holds back the ones
behind it to the same target, not the others. A failure while the channel was not up (an
outage) is retried as soon as the channel's health turns up again, whatever the backoff; a
failure while it was up (a rate limit, a bad gateway) keeps its backoff and Retry-After.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from datetime import UTC, datetime, timedelta

from daemon.core.clock import Clock
from daemon.core.errors import DeliveryError, PermanentDeliveryError
from integrations.base import Channel, OutgoingMessage
from memory.outbox import OutboxRepo

log = logging.getLogger(__name__)

IDLE_POLL_SECONDS = 60.0
HEALTH_POLL_SECONDS = 0.25  # while an outage holds messages back: how soon recovery is seen
MAX_BACKOFF_SECONDS = 600.0
MAX_ATTEMPTS = 50
FAR_FUTURE = datetime(9999, 1, 1, tzinfo=UTC)
THREAD_REF = "outbox:"  # a thread given as outbox:KEY replies under that delivered message


class OutboxWorker:
    """Delivers one channel's pending messages in order, with retry and backoff."""

    def __init__(self, repo: OutboxRepo, channel: Channel, clock: Clock) -> None:
        self._repo = repo
        self._channel = channel
        self._clock = clock
        self._wake = asyncio.Event()
        self._retry_at: datetime | None = None
        self._watching = False  # a delivery failed: watch the channel's health for a recovery
        self._outage = False  # ... and it has been seen not up since

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Deliver forever; sleeps until woken, the next retry is due, or (after a failure)
        the channel's health shows it recovered — checked in memory, every 0.25 s."""
        while True:
            self._wake.clear()  # before flushing, so a wake during the flush is not lost
            await self.flush()
            timeout = IDLE_POLL_SECONDS
            if self._retry_at is not None:
                until_retry = (self._retry_at - self._clock.now()).total_seconds()
                timeout = max(0.0, min(timeout, until_retry))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while not self._wake.is_set():
                step = deadline - loop.time()
                if self._watching:
                    step = min(step, HEALTH_POLL_SECONDS)
                if step <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=step)
                if self._watching and self._recovered():
                    break

    def _recovered(self) -> bool:
        """After a failure: True once the channel, seen not up since, is up again."""
        if self._channel.health().state != "up":
            self._outage = True
            return False
        return self._outage

    async def _thread(self, thread: str | None) -> str | None:
        """``outbox:KEY`` threads under the message queued as KEY (once it was delivered)."""
        if thread is None or not thread.startswith(THREAD_REF):
            return thread
        return await self._repo.platform_id(thread.removeprefix(THREAD_REF))

    async def flush(self) -> int:
        """Send everything due now, in order per target; stop at the first transient failure."""
        if self._watching and self._recovered():  # down since the failure, up now
            self._watching = self._outage = False
            again = await self._repo.retry_now(self._channel.name)
            log.info("%s is up again: retrying %d message(s) now", self._channel.name, again)
        self._retry_at = None
        sent = 0
        held: set[str] = set()  # targets whose oldest message waits for its retry
        after = 0
        while True:
            # every pending message in order, due or not: a message waiting for its retry holds
            # back the ones behind it to the same target, so people read them in order
            batch = await self._repo.due(self._channel.name, FAR_FUTURE, limit=50, after_id=after)
            if not batch:
                if not held:  # nothing waits for a retry: no failure to watch
                    self._watching = self._outage = False
                return sent
            for row in batch:
                after = row.id
                if row.target in held:
                    continue
                if row.next_attempt_at is not None and row.next_attempt_at > self._clock.now():
                    held.add(row.target)
                    if self._retry_at is None or row.next_attempt_at < self._retry_at:
                        self._retry_at = row.next_attempt_at
                    continue
                message = OutgoingMessage(
                    outbox_id=row.id,
                    target=row.target,
                    text=row.text,
                    thread=await self._thread(row.thread),
                )
                try:
                    platform_id = await self._channel.send(message)
                except PermanentDeliveryError as exc:
                    log.error("outbox %s to %s failed for good: %s", row.id, row.channel, exc)
                    await self._repo.mark_failed(row.id, str(exc))
                    continue
                except (DeliveryError, OSError, TimeoutError) as exc:
                    self._watching = True
                    self._outage = self._outage or self._channel.health().state != "up"
                    await self._retry(row.id, row.attempts, exc)
                    return sent
                await self._repo.mark_delivered(row.id, platform_id)
                sent += 1

    async def _retry(self, message_id: int, attempts: int, exc: Exception) -> None:
        if attempts + 1 >= MAX_ATTEMPTS:
            await self._repo.mark_failed(
                message_id, f"gave up after {MAX_ATTEMPTS} attempts: {exc}"
            )
            return
        delay = getattr(exc, "retry_after", None) or min(
            MAX_BACKOFF_SECONDS, 2**attempts * (1 + random.random())
        )
        when_up = " (or as soon as the channel is up)" if self._outage else ""
        log.warning(
            "outbox %s: delivery failed (%s); retrying in %.0fs%s", message_id, exc, delay, when_up
        )
        retry_at = self._clock.now() + timedelta(seconds=delay)
        if self._retry_at is None or retry_at < self._retry_at:
            self._retry_at = retry_at
        await self._repo.mark_retry(message_id, str(exc), retry_at)
