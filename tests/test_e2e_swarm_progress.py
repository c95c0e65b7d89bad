"""A swarm run asked for in Slack keeps ONE progress message, edited (throttled) as the run goes
and ending with the final counts; the agent's answer is the normal reply. `nightshift run` with
the real slack-sdk against the loopback Slack and the fake Kimi server's SwarmScript."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fakes.chat_completions import FakeChatServer, Reply, SwarmScript
from tests.fakes.slack import APP_TOKEN, BOT_TOKEN, FakeSlack
from tests.support import DaemonProcess, eventually, write_config

THROTTLE = 0.25
CHILDREN = 20


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(users={"U1": "ann"}) as fake:
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
        f"[agent.swarm]\nconcurrency = 4\nprogress_edit_seconds = {THROTTLE}\n"
    )
    process = DaemonProcess(config, tmp_path / "state")
    await process.start()
    await slack.wait_connections(1, timeout=20)
    yield process
    await process.stop()


def swarm_run(fake_llm: FakeChatServer, answer: str, delay: float = 0.2) -> SwarmScript:
    tasks = [{"goal": f"behave=ok steps=0 delay={delay} id=h{i}"} for i in range(CHILDREN - 1)]
    tasks.append({"goal": "behave=fail id=broken"})
    call = Reply(tool_calls=[("delegate", json.dumps({"tasks": tasks}))])
    script = SwarmScript([call, Reply(content=answer)])
    fake_llm.responder = script
    return script


async def ask(slack: FakeSlack, text: str, ts: str) -> None:
    event = {"type": "message", "channel": "D1", "channel_type": "im", "user": "U1"}
    await slack.push_event({**event, "text": text, "ts": ts})


def texts(slack: FakeSlack, needle: str) -> list[tuple[tuple[str, str], str]]:
    return [(k, str(m.get("text"))) for k, m in slack.messages.items() if needle in str(m["text"])]


async def test_a_swarm_run_keeps_one_progress_message_edited_to_the_final_counts(
    daemon: DaemonProcess, slack: FakeSlack, fake_llm: FakeChatServer
) -> None:
    swarm_run(fake_llm, "All hosts checked; one check failed.")
    started = time.monotonic()
    await ask(slack, "check all the hosts", "500.000001")
    await eventually(
        lambda: texts(slack, "All hosts checked"), timeout=30, what="the agent's answer"
    )
    await eventually(lambda: texts(slack, "finished in"), timeout=10, what="the final summary")
    elapsed = time.monotonic() - started

    progress = texts(slack, "swarm #")
    assert len(progress) == 1, progress  # one message, never one per step
    (key, final) = progress[0]
    assert f"{CHILDREN} sub-agents — {CHILDREN - 1} done, 1 failed" in final
    assert "failed 1: model API" in final
    posts = [c for c in slack.calls_to("chat.postMessage") if "swarm #" in str(c.params)]
    assert len(posts) == 1
    edits = [c for c in slack.calls_to("chat.update") if c.params.get("ts") == key[1]]
    assert 1 <= len(edits) <= elapsed / THROTTLE + 2, (len(edits), elapsed)
    assert "finished in" in str(edits[-1].params.get("text"))
    print(f"{len(edits)} edits in {elapsed:.1f} s; final:\n{final}")


async def test_a_deleted_progress_message_does_not_break_the_run(
    daemon: DaemonProcess, slack: FakeSlack, fake_llm: FakeChatServer
) -> None:
    swarm_run(fake_llm, "Checked them all despite everything.", delay=0.3)
    await ask(slack, "check all the hosts", "600.000001")
    await eventually(lambda: texts(slack, "swarm #"), timeout=30, what="the progress message")
    (key, _), *_ = texts(slack, "swarm #")
    del slack.messages[key]  # someone deleted it: every edit now fails (message_not_found)

    await eventually(
        lambda: texts(slack, "Checked them all despite everything."), timeout=30, what="answer"
    )
    await eventually(lambda: "finished in" in daemon.log_path.read_text(), what="the summary log")
    assert not texts(slack, "swarm #")  # not re-posted: no spam
    edits = [c for c in slack.calls_to("chat.update") if c.params.get("ts") == key[1]]
    assert len(edits) <= 1  # the first failure ends the editing (message gone for good)
    log = daemon.log_path.read_text()
    assert log.count("progress message on slack not updated") == 1, log[-3000:]
