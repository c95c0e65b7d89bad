"""remember_fact / recall / send_message against a real store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from daemon.agent.services import ToolServices
from daemon.agent.tools.base import ToolContext
from daemon.agent.tools.facts import recall, remember_fact
from daemon.agent.tools.messaging import send_message
from daemon.config import Settings
from daemon.core.clock import SystemClock
from daemon.core.errors import ToolError
from memory.conversations import ConversationRepo
from memory.facts import FactRepo
from memory.outbox import OutboxRepo
from memory.recall import RecallRepo
from memory.store import SqliteStore


@pytest.fixture
async def ctx(tmp_path: Path) -> AsyncIterator[ToolContext]:
    clock = SystemClock()
    store = await SqliteStore.open(tmp_path / "t.db")
    woken: list[bool] = []
    services = ToolServices(
        facts=FactRepo(store, clock),
        recall=RecallRepo(store, clock),
        outbox=OutboxRepo(store, clock),
        channels=("console",),
        wake_outbox=lambda: woken.append(True),
    )
    yield ToolContext(
        actor="console:ann", reason="test", settings=Settings(), clock=clock, services=services
    )
    await store.close()


async def test_a_remembered_fact_is_recalled_later_without_its_secret(ctx: ToolContext) -> None:
    await remember_fact.invoke(ctx, {"text": "nginx logs live in /srv/logs/nginx", "tags": "nginx"})
    await remember_fact.invoke(ctx, {"text": "the db password is password=hunter2 for backups"})
    found = await recall.invoke(ctx, {"query": "where are the nginx logs?"})
    assert found[0]["text"] == "nginx logs live in /srv/logs/nginx"
    stored = await recall.invoke(ctx, {"query": "db backups"})
    assert "hunter2" not in stored[0]["text"]
    assert stored[0]["cite"].startswith("fact#")


async def test_recall_searches_conversations_too_and_checks_its_filters(
    ctx: ToolContext, tmp_path: Path
) -> None:
    store = await SqliteStore.open(tmp_path / "t.db")  # the same file the services use
    try:
        conversations = ConversationRepo(store, ctx.clock)
        conv = await conversations.get_or_create("slack", "C1:1")
        said = await conversations.append(conv.id, "user", "the cache lives in /srv/redis/dump.rdb")
    finally:
        await store.close()
    await remember_fact.invoke(ctx, {"text": "redis is restarted with systemctl"})
    found = await recall.invoke(ctx, {"query": "redis/dump", "since": "1h"})
    assert [f["cite"] for f in found] == [f"message#{said}"]
    assert "/srv/redis/dump.rdb" in found[0]["text"]
    assert {f["cite"].split("#")[0] for f in await recall.invoke(ctx, {"query": "redis"})} == {
        "message",
        "fact",
    }
    only = await recall.invoke(ctx, {"query": "redis", "sources": "fact"})
    assert [f["cite"].split("#")[0] for f in only] == ["fact"]
    with pytest.raises(ToolError, match="unknown source"):
        await recall.invoke(ctx, {"query": "redis", "sources": "fact,nope"})
    with pytest.raises(ToolError, match="since"):
        await recall.invoke(ctx, {"query": "redis", "since": "soon"})


async def test_send_message_queues_durably_and_wakes_the_outbox(ctx: ToolContext) -> None:
    result = await send_message.invoke(ctx, {"text": "backup finished", "target": "ops"})
    row = await ctx.services.outbox.get(result["queued"])
    assert (row.channel, row.target, row.text, row.status) == (
        "console",
        "ops",
        "backup finished",
        "pending",
    )


async def test_send_message_to_an_unknown_channel_says_which_exist(ctx: ToolContext) -> None:
    with pytest.raises(ToolError, match="unknown channel 'slack'; configured channels: console"):
        await send_message.invoke(ctx, {"text": "hi", "channel": "slack"})
