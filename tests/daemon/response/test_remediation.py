"""Remediation: approval (expiry = deny), the allowlist, the loop breaker and verification —
real SQLite, real approval broker and executor, a real privileged tool writing a file."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from daemon.agent.executor import ToolExecutor
from daemon.agent.tools.base import Tier, ToolContext, ToolRegistry, tool
from daemon.chat.approvals import ApprovalBroker
from daemon.config import Settings
from daemon.core.clock import ManualClock
from daemon.incidents.settings import AutoRemediationSettings
from daemon.response.investigation import Proposal
from daemon.response.remediation import Remediator
from memory.audit import AuditRepo
from memory.incidents import IncidentRepo
from memory.store import SqliteStore
from tests.daemon.incidents.test_manager import World

MARKS: list[str] = []


@tool(tier=Tier.PRIVILEGED)
async def bounce(ctx: ToolContext, service: str) -> str:
    """Restart a service (test stand-in that records the call).

    Args:
        service: The service name.
    """
    MARKS.append(service)
    return f"bounced {service}"


@dataclass
class Rig:
    remediator: Remediator
    broker: ApprovalBroker
    incidents: IncidentRepo
    settings: Settings
    world: World


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    MARKS.clear()
    clock = ManualClock()
    store = await SqliteStore.open(tmp_path / "r.db")
    settings = Settings.model_validate({"incidents": {"remediation": {
        "verify_seconds": 0.3, "max_actions": 2, "approval_ttl_seconds": 0.3}}})  # fmt: skip
    world = World(store, clock, tmp_path, group_wait_seconds=0)
    broker = ApprovalBroker(clock)
    incidents = IncidentRepo(store, clock)
    remediator = Remediator(
        lambda: settings,
        executor=ToolExecutor(ToolRegistry([bounce]), audit=AuditRepo(store, clock),
                              approvals=broker),
        approvals=broker, incidents=incidents, poster=world.poster, clock=clock,
    )  # fmt: skip
    yield Rig(remediator, broker, incidents, settings, world)
    await store.close()


PROPOSAL = Proposal(tool="bounce", arguments={"service": "web"}, reason="it is down")


async def open_incident(rig: Rig) -> int:
    await rig.world.fire("WebDown", service="web")
    await rig.world.after(0)
    [incident] = await rig.incidents.listing(state="open")
    return incident.id


async def kinds(rig: Rig, incident_id: int) -> list[str]:
    """The remediation steps of the timeline (messages sent are left out)."""
    timeline = await rig.incidents.timeline(incident_id)
    return [e.kind for e in timeline if e.kind not in ("remediation", "notified")]


async def answer_next(rig: Rig, approved: bool) -> None:
    for _ in range(200):
        for request in rig.broker.pending():  # an answered one lingers until its waiter wakes
            if rig.broker.resolve(request.id, approved=approved, by="chat:ann"):
                return
        await asyncio.sleep(0.01)
    raise AssertionError("no approval was requested")


async def test_an_approved_action_runs_and_unresolved_is_reported(rig: Rig) -> None:
    incident_id = await open_incident(rig)
    work = asyncio.create_task(rig.remediator.handle(incident_id, [PROPOSAL]))
    await answer_next(rig, approved=True)
    await work
    assert MARKS == ["web"]
    assert (await kinds(rig, incident_id))[-4:] == [
        "approval requested", "approved", "action ran", "not fixed"]  # fmt: skip
    texts = await rig.world.new_messages()
    assert any("did not fix it" in text for text in texts)


async def test_expiry_means_deny_and_nothing_runs(rig: Rig) -> None:
    incident_id = await open_incident(rig)
    await rig.remediator.handle(incident_id, [PROPOSAL])  # nobody answers within 0.3 s
    assert MARKS == []
    timeline = await rig.incidents.timeline(incident_id)
    assert timeline[-1].kind == "denied" and timeline[-1].actor == "timeout"


async def test_an_allowlisted_action_runs_without_asking_and_verification_sees_the_fix(
    rig: Rig,
) -> None:
    rig.settings.incidents.remediation.auto = [
        AutoRemediationSettings.model_validate(
            {"matchers": ["alertname=WebDown"], "tool": "bounce", "arguments": {"service": "web"}}
        )
    ]
    rig.settings.incidents.remediation.verify_seconds = 5
    incident_id = await open_incident(rig)
    work = asyncio.create_task(rig.remediator.handle(incident_id, [PROPOSAL]))
    for _ in range(200):
        if MARKS:
            break
        await asyncio.sleep(0.01)
    assert rig.broker.pending() == []  # never asked
    rig.remediator.incident_resolved(incident_id)  # the alert resolves after the action
    await work
    assert (await kinds(rig, incident_id))[-2:] == ["action ran", "verified"]
    other = Proposal(tool="bounce", arguments={"service": "db"}, reason="")
    assert Remediator._allowlisted(other, [], rig.settings.incidents.remediation.auto) is None


async def test_the_budget_stops_repeated_remediation_and_escalates(rig: Rig) -> None:
    incident_id = await open_incident(rig)
    for _ in range(2):
        work = asyncio.create_task(rig.remediator.handle(incident_id, [PROPOSAL]))
        await answer_next(rig, approved=True)
        await work
    await rig.remediator.handle(incident_id, [PROPOSAL])
    assert MARKS == ["web", "web"]
    assert (await kinds(rig, incident_id))[-1] == "escalated"
    texts = await rig.world.new_messages()
    assert any("the limit" in text and "a person needs to look" in text for text in texts)


async def test_a_denied_action_is_recorded_and_the_next_proposal_is_asked(rig: Rig) -> None:
    incident_id = await open_incident(rig)
    second = Proposal(tool="bounce", arguments={"service": "web2"}, reason="")
    work = asyncio.create_task(rig.remediator.handle(incident_id, [PROPOSAL, second]))
    await answer_next(rig, approved=False)
    await answer_next(rig, approved=True)
    await work
    assert MARKS == ["web2"]
    timeline = await rig.incidents.timeline(incident_id)
    assert [(e.kind, e.actor) for e in timeline if e.kind in ("denied", "approved")] == [
        ("denied", "chat:ann"), ("approved", "chat:ann")]  # fmt: skip
