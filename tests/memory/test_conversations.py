"""ConversationRepo: conversations per (channel, key) and exact message history."""

from __future__ import annotations

import pytest

from daemon.core.clock import ManualClock
from daemon.core.errors import RecordNotFound
from memory.conversations import ConversationRepo
from memory.store import SqliteStore

TOOL_CALLS = [
    {
        "id": "call_0",
        "type": "function",
        "function": {"name": "disk_usage", "arguments": '{"path": "/var", "depth": 2}'},
    },
    {
        "id": "functions.read_log:1",
        "type": "function",
        "function": {"name": "read_log", "arguments": '{"unit": "nginx", "note": "naïve ✓"}'},
    },
]


@pytest.fixture
def repo(store: SqliteStore, clock: ManualClock) -> ConversationRepo:
    return ConversationRepo(store, clock)


async def test_get_or_create_returns_one_conversation_per_channel_and_key(
    repo: ConversationRepo, clock: ManualClock
) -> None:
    first = await repo.get_or_create("slack", "C1:1700000000.1", title="disk alert")
    again = await repo.get_or_create("slack", "C1:1700000000.1", title="ignored")
    other = await repo.get_or_create("telegram", "C1:1700000000.1")

    assert again == first
    assert first.title == "disk alert" and first.summary == ""
    assert first.created_at == clock.now()
    assert other.id != first.id
    assert await repo.get(first.id) == first


async def test_unknown_conversation_is_a_lookup_error(repo: ConversationRepo) -> None:
    with pytest.raises(RecordNotFound) as caught:
        await repo.get(404)
    assert isinstance(caught.value, LookupError)
    assert caught.value.record_id == 404
    with pytest.raises(RecordNotFound):
        await repo.append(404, "user", "hello")


async def test_messages_round_trip_exactly(repo: ConversationRepo, clock: ManualClock) -> None:
    conv = await repo.get_or_create("slack", "C1")
    await repo.append(conv.id, "user", "why is /var full?")
    call_id = await repo.append(
        conv.id,
        "assistant",
        None,
        reasoning_content="Check disk usage first.\nThen logs.",
        tool_calls=TOOL_CALLS,
    )
    await repo.append(conv.id, "tool", '{"used": "97%"}', tool_call_id="call_0", name="disk_usage")

    messages = await repo.recent(conv.id)

    assert [m.role for m in messages] == ["user", "assistant", "tool"]
    assistant = messages[1]
    assert assistant.id == call_id
    assert assistant.content is None
    assert assistant.reasoning_content == "Check disk usage first.\nThen logs."
    assert assistant.tool_calls == TOOL_CALLS
    assert messages[0].tool_calls is None and messages[0].reasoning_content is None
    assert (messages[2].tool_call_id, messages[2].name) == ("call_0", "disk_usage")
    assert messages[2].content == '{"used": "97%"}'
    assert all(m.created_at == clock.now() and not m.summarized for m in messages)


async def test_recent_returns_the_latest_messages_oldest_first(repo: ConversationRepo) -> None:
    conv = await repo.get_or_create("slack", "C1")
    for i in range(10):
        await repo.append(conv.id, "user", f"m{i}")

    assert [m.content for m in await repo.recent(conv.id, limit=3)] == ["m7", "m8", "m9"]


async def test_recent_never_starts_with_an_orphaned_tool_result(repo: ConversationRepo) -> None:
    conv = await repo.get_or_create("slack", "C1")
    await repo.append(conv.id, "assistant", None, tool_calls=TOOL_CALLS)
    await repo.append(conv.id, "tool", "a", tool_call_id="call_0")
    await repo.append(conv.id, "tool", "b", tool_call_id="functions.read_log:1")
    await repo.append(conv.id, "assistant", "done")

    assert [m.content for m in await repo.recent(conv.id, limit=3)] == ["done"]


async def test_mark_summarized_folds_old_messages_into_the_summary(
    repo: ConversationRepo,
) -> None:
    conv = await repo.get_or_create("slack", "C1")
    other = await repo.get_or_create("slack", "C2")
    ids = [await repo.append(conv.id, "user", f"m{i}") for i in range(5)]
    await repo.append(other.id, "user", "elsewhere")

    marked = await repo.mark_summarized(conv.id, ids[2], "User asked about m0..m2.")

    assert marked == 3
    assert [m.content for m in await repo.recent(conv.id)] == ["m3", "m4"]
    assert (await repo.get(conv.id)).summary == "User asked about m0..m2."
    assert [m.content for m in await repo.recent(other.id)] == ["elsewhere"]
    with pytest.raises(RecordNotFound):
        await repo.mark_summarized(404, 1, "nothing")


async def test_list_shows_most_recently_active_first(
    repo: ConversationRepo, clock: ManualClock
) -> None:
    old = await repo.get_or_create("slack", "old")
    clock.advance(60)
    new = await repo.get_or_create("slack", "new")
    clock.advance(60)
    await repo.append(old.id, "user", "bump")

    assert [c.key for c in await repo.list()] == ["old", "new"]
    assert [c.id for c in await repo.list(limit=1)] == [old.id]
    assert new in await repo.list()
