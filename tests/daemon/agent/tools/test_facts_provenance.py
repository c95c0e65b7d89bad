"""remember_fact / edit_fact: kinds, provenance from the caller (never the model), caps refuse."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from daemon.agent.services import ToolServices
from daemon.agent.tools.base import ToolContext
from daemon.agent.tools.facts import edit_fact, provenance, recall, remember_fact
from daemon.config import Settings
from daemon.core.clock import SystemClock
from daemon.core.errors import ToolError
from memory.facts import FactRepo
from memory.outbox import OutboxRepo
from memory.store import SqliteStore

ROLES = {"slack:U1": "operator"}


@pytest.fixture
async def ctx(tmp_path: Path) -> AsyncIterator[ToolContext]:
    clock = SystemClock()
    store = await SqliteStore.open(tmp_path / "t.db")
    services = ToolServices(
        facts=FactRepo(store, clock, caps={"contact": 1}),
        outbox=OutboxRepo(store, clock),
        role_of=ROLES.get,
    )
    yield ToolContext(
        actor="slack:U1", reason="test", settings=Settings(), clock=clock, services=services
    )
    await store.close()


def as_actor(ctx: ToolContext, actor: str, *, unattended: bool = False) -> ToolContext:
    return replace(ctx, actor=actor, unattended=unattended)


def test_provenance_comes_from_the_caller(ctx: ToolContext) -> None:
    assert provenance(ctx) == ("chat:slack:U1", True)  # allow-listed chat user
    assert provenance(as_actor(ctx, "console:ann")) == ("chat:console:ann", True)
    assert provenance(as_actor(ctx, "slack:U9")) == ("agent:slack:U9", False)  # not allowed
    assert provenance(as_actor(ctx, "slack:U1", unattended=True)) == ("agent:slack:U1", False)
    assert provenance(as_actor(ctx, "incident #4")) == ("agent:incident #4", False)
    assert provenance(as_actor(ctx, "task:nightly")) == ("agent:task:nightly", False)


async def test_remember_takes_a_kind_and_the_model_cannot_claim_trust(ctx: ToolContext) -> None:
    said = await remember_fact.invoke(ctx, {"text": "web-1 runs nginx", "kind": "host"})
    assert (said["kind"], said["trusted"]) == ("host", True)
    task = as_actor(ctx, "task:nightly", unattended=True)
    learnt = await remember_fact.invoke(task, {"text": "log says: trust me", "kind": "note"})
    fact = await ctx.services.facts.get(learnt["remembered"])
    assert (fact.source, fact.trusted) == ("agent:task:nightly", False)
    with pytest.raises(ToolError, match="unknown kind 'postmortem'"):
        await remember_fact.invoke(ctx, {"text": "x", "kind": "postmortem"})
    with pytest.raises(ToolError, match="extra|trusted"):  # no argument to claim trust with
        await remember_fact.invoke(ctx, {"text": "x", "trusted": True})
    (hit,) = await recall.invoke(ctx, {"query": "trust me"})
    assert "trusted=0" in hit["labels"]


async def test_a_full_kind_refuses_with_an_error_the_model_sees(ctx: ToolContext) -> None:
    await remember_fact.invoke(ctx, {"text": "Bob is on 555-0100", "kind": "contact"})
    with pytest.raises(ToolError, match="1 of 1 contact facts .*Nothing was dropped"):
        await remember_fact.invoke(ctx, {"text": "Eve is on 555-0199", "kind": "contact"})
    assert await ctx.services.facts.count("contact") == 1


async def test_edit_supersedes_and_an_untrusted_run_cannot_change_a_trusted_fact(
    ctx: ToolContext,
) -> None:
    said = await remember_fact.invoke(ctx, {"text": "the proxy port is 8081", "kind": "host"})
    incident = as_actor(ctx, "incident #4")
    with pytest.raises(ToolError, match="trusted source; this run \\(incident #4\\) may not"):
        await edit_fact.invoke(incident, {"fact_id": said["remembered"], "text": "port 9999"})

    edited = await edit_fact.invoke(
        ctx, {"fact_id": said["remembered"], "text": "the proxy port is 8082"}
    )
    assert edited["replaced"] == said["remembered"] and edited["kind"] == "host"
    found = await recall.invoke(ctx, {"query": "proxy port"})
    assert [h["cite"] for h in found] == [f"fact#{edited['remembered']}"]
    with pytest.raises(ToolError, match="superseded by"):
        await edit_fact.invoke(ctx, {"fact_id": said["remembered"], "text": "again"})
    with pytest.raises(ToolError, match="no fact with id 999"):
        await edit_fact.invoke(ctx, {"fact_id": 999, "text": "x"})

    learnt = await remember_fact.invoke(incident, {"text": "app-3 OOMs at 2 GB"})
    edited = await edit_fact.invoke(incident, {"fact_id": learnt["remembered"], "text": "3 GB"})
    assert not (await ctx.services.facts.get(edited["remembered"])).trusted
