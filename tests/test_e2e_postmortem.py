"""The postmortem waits for the investigation: an incident that resolves while the agent is
still investigating gets a postmortem written from the finished findings, not "not
investigated"."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.fakes.chat_completions import FakeChatServer, Reply
from tests.test_e2e_investigation_limits import (
    FINDINGS,
    payload,
    query,
    send_payload,
    wait_until,
    webhook_daemon,
)


async def test_a_postmortem_waits_for_the_running_investigation(
    tmp_path: Path, fake_llm: FakeChatServer
) -> None:
    release = asyncio.Event()
    postmortem_prompts: list[str] = []

    async def model(body: dict[str, Any]) -> Reply:
        if body.get("tools"):  # the investigation: still running when the alert resolves
            await release.wait()
            return Reply(content=FINDINGS, prompt_tokens=100, completion_tokens=20)
        postmortem_prompts.append(str(body["messages"]))
        return Reply(content="Cause: load\nFix: none\nFollow-ups: none")

    fake_llm.responder = model
    daemon, port = await webhook_daemon(
        tmp_path, llm_url=fake_llm.base_url, incidents='investigate = ["critical"]\n'
    )
    db = daemon.state_dir / "nightshift.db"
    try:
        firing = payload(["DbDown"])
        await send_payload(port, firing, 1)
        await wait_until(lambda: fake_llm.in_flight == 1, "the investigation at the model", db)
        resolved = {**firing, "status": "resolved"}
        resolved["alerts"] = [
            {**a, "status": "resolved", "endsAt": "2026-11-22T12:01:00Z"} for a in firing["alerts"]
        ]
        await send_payload(port, resolved, 1)
        states = "SELECT state FROM incidents"
        await wait_until(lambda: query(db, states) == [("resolved",)], "the incident resolved", db)
        release.set()
        done = "SELECT id FROM incident_events WHERE detail = 'stored in memory'"
        await wait_until(lambda: len(query(db, done)) == 1, "the postmortem written", db)
        [prompt] = postmortem_prompts
        assert "findings" in prompt  # the timeline it was given has the finished investigation
        [(text,)] = query(db, "SELECT postmortem FROM incidents")
        assert "Cause: load" in text
    finally:
        await daemon.stop()
