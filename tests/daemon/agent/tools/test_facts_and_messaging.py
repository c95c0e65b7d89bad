"""remember_fact / recall_facts / send_message against a real store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from daemon.agent.services import ToolServices
from daemon.agent.tools.base import ToolContext
from daemon.agent.tools.facts import recall_facts, remember_fact
from daemon.agent.tools.messaging import send_message
from daemon.config import Settings
from daemon.core.clock import SystemClock
from daemon.core.errors import ToolError
from memory.facts import FactRepo
from memory.outbox import OutboxRepo
from memory.store import SqliteStore


@pytest.fixture
async def ctx(tmp_path: Path) -> AsyncIterator[ToolContext]:
    clock = SystemClock()
    store = await SqliteStore.open(tmp_path / "t.db")
    woken: list[bool] = []
    services = ToolServices(
        facts=FactRepo(store, clock),
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
    found = await recall_facts.invoke(ctx, {"query": "where are the nginx logs?"})
    assert found[0]["text"] == "nginx logs live in /srv/logs/nginx"
    stored = await recall_facts.invoke(ctx, {"query": "db backups"})
    assert "hunter2" not in stored[0]["text"]


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
