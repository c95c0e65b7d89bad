"""Outbox worker: rows first, delivered in order, retried after a transient failure, once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from daemon.core.clock import ManualClock
from daemon.core.errors import DeliveryError, PermanentDeliveryError
from integrations.base import ApprovalPrompt, ChannelHealth, InboundSink, OutgoingMessage
from integrations.console import ConsoleChannel
from integrations.outbox import OutboxWorker
from memory.outbox import OutboxRepo
from memory.store import SqliteStore


class FlakyChannel:
    """A channel that is down until told otherwise; ``refuse`` fails sends while it is up."""

    name = "flaky"

    def __init__(self) -> None:
        self.up = False
        self.refuse: set[str] = set()  # targets whose sends fail (rate limited) while up
        self.delivered: list[str] = []
        self.threads: list[str | None] = []
        self.sent = asyncio.Event()
        self.asked = asyncio.Event()  # health() was called

    async def start(self, sink: InboundSink) -> None: ...

    async def stop(self) -> None: ...

    def health(self) -> ChannelHealth:
        self.asked.set()
        return ChannelHealth(state="up" if self.up else "down")

    async def send(self, message: OutgoingMessage) -> str:
        if message.text == "poison":
            raise PermanentDeliveryError("rejected by the platform")
        if not self.up:
            raise DeliveryError("connection refused", retry_after=30)
        if message.target in self.refuse:
            raise DeliveryError("429 too many requests", retry_after=30)
        self.delivered.append(message.text)
        self.sent.set()
        self.threads.append(message.thread)
        return f"m{len(self.delivered)}"

    async def edit(self, target: str, platform_id: str, text: str) -> None: ...

    async def ask_approval(self, prompt: ApprovalPrompt) -> str:
        raise PermanentDeliveryError("no approvals here")

    async def close_approval(
        self, prompt: ApprovalPrompt, platform_id: str, outcome: str
    ) -> None: ...


@pytest.fixture
async def repo(tmp_path: Path) -> AsyncIterator[tuple[OutboxRepo, ManualClock]]:
    clock = ManualClock()
    store = await SqliteStore.open(tmp_path / "o.db")
    yield OutboxRepo(store, clock), clock
    await store.close()


async def test_messages_wait_while_the_channel_is_down_then_arrive_in_order_once(
    repo: tuple[OutboxRepo, ManualClock],
) -> None:
    outbox, clock = repo
    channel = FlakyChannel()
    worker = OutboxWorker(outbox, channel, clock)
    ids = [await outbox.enqueue("flaky", "ops", f"message {n}") for n in range(3)]

    assert await worker.flush() == 0
    assert (await outbox.depth_by_channel())["flaky"] == 3
    first = await outbox.get(ids[0])
    assert first.attempts == 1 and "connection refused" in (first.error or "")

    assert await worker.flush() == 0  # still down: the backoff (Retry-After 30 s) holds
    channel.up = True
    assert await worker.flush() == 3  # up again: at once, whatever was left of the backoff
    assert await worker.flush() == 0
    assert channel.delivered == ["message 0", "message 1", "message 2"]
    assert [(await outbox.get(i)).platform_id for i in ids] == ["m1", "m2", "m3"]
    assert (await outbox.depth_by_channel()).get("flaky", 0) == 0


def rate_limited(
    repo: tuple[OutboxRepo, ManualClock],
) -> tuple[OutboxRepo, ManualClock, FlakyChannel, OutboxWorker]:
    """A channel that is up but refuses (rate limits) sends to the target "ops"."""
    outbox, clock = repo
    channel = FlakyChannel()
    channel.up = True
    channel.refuse = {"ops"}
    return outbox, clock, channel, OutboxWorker(outbox, channel, clock)


async def test_a_rate_limit_while_up_keeps_its_retry_after(
    repo: tuple[OutboxRepo, ManualClock],
) -> None:
    outbox, clock, channel, worker = rate_limited(repo)
    await outbox.enqueue("flaky", "ops", "limited")
    assert await worker.flush() == 0
    channel.refuse.clear()
    assert await worker.flush() == 0  # the channel never went down: Retry-After is honoured
    clock.advance(31)
    assert await worker.flush() == 1


async def test_a_message_in_backoff_holds_back_only_its_own_target(
    repo: tuple[OutboxRepo, ManualClock],
) -> None:
    outbox, clock, channel, worker = rate_limited(repo)
    await outbox.enqueue("flaky", "ops", "digest (proactive)", proactive=True)
    assert await worker.flush() == 0
    await outbox.enqueue("flaky", "ops", "second to ops")
    await outbox.enqueue("flaky", "alice", "reply to alice")
    assert await worker.flush() == 1  # alice's reply is not stuck behind ops' retry
    assert channel.delivered == ["reply to alice"]
    channel.refuse.clear()
    clock.advance(31)
    assert await worker.flush() == 2
    assert channel.delivered == ["reply to alice", "digest (proactive)", "second to ops"]


async def test_the_running_worker_delivers_as_soon_as_the_channel_is_up(
    repo: tuple[OutboxRepo, ManualClock],
) -> None:
    """No wake-up and no clock change: the worker sees the recovery by itself."""
    outbox, clock = repo
    channel = FlakyChannel()
    worker = OutboxWorker(outbox, channel, clock)
    runner = asyncio.create_task(worker.run())
    try:
        await outbox.enqueue("flaky", "ops", "disk full")
        worker.wake()
        await asyncio.wait_for(channel.asked.wait(), 5)  # the send failed while it was down
        channel.up = True
        await asyncio.wait_for(channel.sent.wait(), 5)
        assert channel.delivered == ["disk full"]
    finally:
        runner.cancel()


async def test_a_thread_reference_replies_under_the_delivered_first_message(
    repo: tuple[OutboxRepo, ManualClock],
) -> None:
    outbox, clock = repo
    channel = FlakyChannel()
    channel.up = True
    worker = OutboxWorker(outbox, channel, clock)
    await outbox.enqueue("flaky", "ops", "FIRING", dedupe_key="incident:1:notified:1")
    await outbox.enqueue("flaky", "ops", "findings", thread="outbox:incident:1:notified:1")
    await outbox.enqueue("flaky", "ops", "other", thread="outbox:never-sent")
    await outbox.enqueue("flaky", "ops", "plain", thread="1700000000.000100")
    assert await worker.flush() == 4
    assert channel.threads == [None, "m1", None, "1700000000.000100"]


async def test_a_permanently_rejected_message_does_not_block_the_rest(
    repo: tuple[OutboxRepo, ManualClock],
) -> None:
    outbox, clock = repo
    channel = FlakyChannel()
    channel.up = True
    worker = OutboxWorker(outbox, channel, clock)
    bad = await outbox.enqueue("flaky", "ops", "poison")
    await outbox.enqueue("flaky", "ops", "fine")
    assert await worker.flush() == 1
    assert (await outbox.get(bad)).status == "failed"
    assert channel.delivered == ["fine"]


async def test_console_delivery_reaches_attached_chat_sessions(
    repo: tuple[OutboxRepo, ManualClock],
) -> None:
    outbox, clock = repo
    console = ConsoleChannel()
    await console.start()
    session, detach = console.attach()
    worker = OutboxWorker(outbox, console, clock)
    runner = asyncio.create_task(worker.run())
    message_id = await outbox.enqueue("console", "", "disk almost full on /srv")
    worker.wake()
    event = await asyncio.wait_for(session.get(), 5)
    assert event["type"] == "message" and event["text"] == "disk almost full on /srv"
    for _ in range(100):
        delivered = await outbox.get(message_id)
        if delivered.status == "delivered":
            break
        await asyncio.sleep(0.01)
    runner.cancel()
    detach()
    assert delivered.status == "delivered" and delivered.platform_id == event["id"]
