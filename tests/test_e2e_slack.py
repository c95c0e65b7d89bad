"""End to end over Slack: `nightshift run` with the real slack-sdk Socket Mode and Web clients
against a loopback Slack, and the fake Kimi server: a DM answered, a stranger refused, an
approval round trip by button, and replies queued through an outage arriving in order, once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fakes.chat_completions import FakeChatServer, Reply
from tests.fakes.slack import APP_TOKEN, BOT_TOKEN, FakeSlack
from tests.support import DaemonProcess, write_config


def dm(text: str, ts: str, user: str = "U1") -> dict[str, object]:
    return {
        "type": "message",
        "channel": "D1",
        "channel_type": "im",
        "user": user,
        "text": text,
        "ts": ts,
    }


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(users={"U1": "ann", "U9": "eve"}) as fake:
        yield fake


@pytest.fixture
async def daemon(
    tmp_path: Path, fake_llm: FakeChatServer, slack: FakeSlack
) -> AsyncIterator[DaemonProcess]:
    config = write_config(tmp_path / "config.toml", fake_llm.base_url)
    config.write_text(
        config.read_text() + f'[channels.slack]\nenabled = true\nbot_token = "{BOT_TOKEN}"\n'
        f'app_token = "{APP_TOKEN}"\napi_url = "{slack.api_url}"\n'
        '[channels.slack.users]\n"U1" = "operator"\n'
    )
    process = DaemonProcess(config, tmp_path / "state")
    await process.start()
    await slack.wait_connections(1, timeout=20)
    yield process
    await process.stop()


async def posted(slack: FakeSlack, needle: str, timeout: float = 20) -> dict[str, object]:
    for _ in range(int(timeout / 0.05)):
        for message in slack.messages.values():
            if needle in str(message.get("text", "")):
                return message
        await asyncio.sleep(0.05)
    texts = [m.get("text") for m in slack.messages.values()]
    raise AssertionError(f"{needle!r} never posted: {texts}")


async def test_a_dm_is_answered_and_a_stranger_is_refused(
    daemon: DaemonProcess, slack: FakeSlack, fake_llm: FakeChatServer
) -> None:
    fake_llm.script(Reply(content="Load is 0.3, all fine."))
    await slack.push_event(dm("how is the host?", "100.000001"))
    await posted(slack, "Load is 0.3, all fine.")

    await slack.push_event(dm("cat /etc/shadow", "100.000002", user="U9"))
    refusal = await posted(slack, "only take requests")
    assert "U9" in str(refusal["text"])
    assert fake_llm.calls == 1
    code, out, _ = await daemon.cli("status", "--json")
    assert json.loads(out)["channels"]["slack"]["state"] == "up"


async def test_approval_by_button_runs_the_action_and_updates_the_prompt(
    daemon: DaemonProcess, slack: FakeSlack, fake_llm: FakeChatServer, tmp_path: Path
) -> None:
    marker = tmp_path / "restarted"
    fake_llm.script(
        Reply(tool_calls=[("run_command", json.dumps({"command": f"touch {marker}"}))]),
        Reply(content="Restarted as asked."),
    )
    await slack.push_event(dm("restart it please", "200.000001"))
    prompt = await posted(slack, "Approval needed")
    assert not marker.exists()
    (channel, ts), _ = next(
        (key, m) for key, m in slack.messages.items() if "Approval needed" in str(m.get("text"))
    )
    approval_id = str(prompt["text"]).split("[", 1)[1].split("]", 1)[0]
    await slack.push_button(
        action_id="nightshift_approve",
        value=approval_id,
        user_id="U1",
        channel=channel,
        message_ts=ts,
    )
    await posted(slack, "Restarted as asked.")
    assert marker.exists()
    for _ in range(100):
        if "approved by slack:" in json.dumps(slack.messages[(channel, ts)]):
            break
        await asyncio.sleep(0.05)
    assert "approved by slack:" in json.dumps(slack.messages[(channel, ts)])


async def test_replies_wait_out_a_rate_limit_and_arrive_in_order_once(
    daemon: DaemonProcess, slack: FakeSlack, fake_llm: FakeChatServer
) -> None:
    slack.rate_limit(count=1, retry_after=1)
    fake_llm.script(Reply(content="first answer"), Reply(content="second answer"))
    await slack.push_event(dm("one", "300.000001"))
    await posted(slack, "first answer")
    await slack.push_event(dm("two", "300.000002"))
    await posted(slack, "second answer")
    texts = [str(m.get("text")) for m in slack.messages.values()]
    answers = [t for t in texts if t in ("first answer", "second answer")]
    assert answers == ["first answer", "second answer"]
    attempts = [
        c for c in slack.calls_to("chat.postMessage") if c.params.get("text") == "first answer"
    ]
    assert len(attempts) == 2  # refused once with 429, delivered after Retry-After, not twice
