"""OutboxRepo: due order, dedupe, retry schedule, terminal states, queue depth."""

from __future__ import annotations

from datetime import timedelta

import pytest

from daemon.core.clock import ManualClock
from daemon.core.errors import RecordNotFound
from memory.outbox import OutboxRepo
from memory.store import SqliteStore


@pytest.fixture
def repo(store: SqliteStore, clock: ManualClock) -> OutboxRepo:
    return OutboxRepo(store, clock)


async def test_enqueued_messages_are_due_at_once_in_order(
    repo: OutboxRepo, clock: ManualClock
) -> None:
    first = await repo.enqueue("slack", "C1", "disk full on db-1", thread="171.2")
    second = await repo.enqueue("slack", "C2", "resolved")
    await repo.enqueue("telegram", "42", "elsewhere")

    due = await repo.due("slack")

    assert [m.id for m in due] == [first, second]
    message = due[0]
    assert (message.channel, message.target, message.thread) == ("slack", "C1", "171.2")
    assert (message.status, message.attempts, message.text) == ("pending", 0, "disk full on db-1")
    assert message.next_attempt_at == message.created_at == clock.now()
    assert [m.id for m in await repo.due("slack", limit=1)] == [first]


async def test_a_repeated_dedupe_key_queues_nothing_new(repo: OutboxRepo) -> None:
    first = await repo.enqueue("slack", "C1", "alert #7 firing", dedupe_key="alert-7-firing")
    again = await repo.enqueue("slack", "C1", "alert #7 firing", dedupe_key="alert-7-firing")
    await repo.enqueue("slack", "C1", "no key")
    await repo.enqueue("slack", "C1", "no key")

    assert again == first
    assert (await repo.get(first)).dedupe_key == "alert-7-firing"
    assert await repo.depth_by_channel() == {"slack": 3}


async def test_a_retried_message_waits_until_its_next_attempt(
    repo: OutboxRepo, clock: ManualClock
) -> None:
    message_id = await repo.enqueue("slack", "C1", "hello")
    retry_at = clock.now() + timedelta(seconds=30)

    await repo.mark_retry(message_id, "HTTP 503", retry_at)

    assert await repo.due("slack") == []
    assert await repo.due("slack", now=retry_at - timedelta(microseconds=1)) == []
    clock.advance(30)
    [due] = await repo.due("slack")
    assert (due.id, due.attempts, due.error, due.next_attempt_at) == (
        message_id,
        1,
        "HTTP 503",
        retry_at,
    )


async def test_delivered_and_failed_messages_leave_the_queue(
    repo: OutboxRepo, clock: ManualClock
) -> None:
    delivered = await repo.enqueue("slack", "C1", "a")
    failed = await repo.enqueue("slack", "C1", "b")
    pending = await repo.enqueue("slack", "C1", "c")
    clock.advance(2)

    await repo.mark_delivered(delivered, "1700000000.000100")
    await repo.mark_failed(failed, "channel_not_found")

    assert [m.id for m in await repo.due("slack")] == [pending]
    assert await repo.depth_by_channel() == {"slack": 1}
    sent = await repo.get(delivered)
    assert (sent.status, sent.platform_id, sent.delivered_at) == (
        "delivered",
        "1700000000.000100",
        clock.now(),
    )
    dead = await repo.get(failed)
    assert (dead.status, dead.error, dead.attempts) == ("failed", "channel_not_found", 1)


async def test_depth_counts_pending_messages_per_channel(repo: OutboxRepo) -> None:
    for channel in ["slack", "slack", "telegram"]:
        await repo.enqueue(channel, "t", "x")
    done = await repo.enqueue("matrix", "t", "x")
    await repo.mark_delivered(done, None)

    assert await repo.depth_by_channel() == {"slack": 2, "telegram": 1}


async def test_unknown_messages_are_lookup_errors(repo: OutboxRepo, clock: ManualClock) -> None:
    with pytest.raises(RecordNotFound):
        await repo.get(404)
    with pytest.raises(RecordNotFound):
        await repo.mark_delivered(404, "x")
    with pytest.raises(RecordNotFound):
        await repo.mark_retry(404, "e", clock.now())
    with pytest.raises(RecordNotFound):
        await repo.mark_failed(404, "e")
