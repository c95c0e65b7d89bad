"""Approvals: answered by a person, or denied on expiry; never left hanging."""

from __future__ import annotations

import asyncio

from daemon.chat.approvals import ApprovalBroker
from daemon.core.clock import SystemClock
from daemon.core.messages import ApprovalRequest


async def test_approval_granted_by_a_person() -> None:
    broker = ApprovalBroker(SystemClock())
    seen: list[ApprovalRequest] = []
    broker.subscribe(seen.append)
    waiting = asyncio.create_task(
        broker.request(
            tool="run_command",
            arguments={"command": "systemctl restart nginx"},
            actor="console:ann",
            reason="nginx down",
            ttl_seconds=5,
        )
    )
    await asyncio.sleep(0)
    assert [r.tool for r in broker.pending()] == ["run_command"]
    assert broker.resolve(seen[0].id, approved=True, by="console:bob")
    decision = await waiting
    assert decision.approved and decision.by == "console:bob"
    assert broker.pending() == []
    assert not broker.resolve(seen[0].id, approved=False, by="late")  # answered already


async def test_expiry_is_a_denial() -> None:
    broker = ApprovalBroker(SystemClock())
    decision = await broker.request(
        tool="run_command", arguments={}, actor="a", reason="r", ttl_seconds=0.05
    )
    assert not decision.approved and decision.by == "timeout"
    assert broker.pending() == []


async def test_shutdown_denies_open_requests() -> None:
    broker = ApprovalBroker(SystemClock())
    waiting = asyncio.create_task(
        broker.request(tool="t", arguments={}, actor="a", reason="r", ttl_seconds=60)
    )
    await asyncio.sleep(0)
    assert broker.deny_all(by="shutdown") == 1
    decision = await waiting
    assert not decision.approved and decision.by == "shutdown"
