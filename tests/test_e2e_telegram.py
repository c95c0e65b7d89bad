"""End to end over Telegram: `nightshift run` with the real python-telegram-bot against a loopback
Bot API, and the fake Kimi server: answers, default deny, and an approval round trip."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.chat_completions import FakeChatServer, Reply
from tests.fakes.telegram import FakeTelegram
from tests.support import DaemonProcess, write_config

TOKEN = "123456:TEST-token-for-nightshift-e2e-000000"
ANN = 111  # operator
EVE = 999  # stranger


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(TOKEN) as fake:
        yield fake


@pytest.fixture
async def daemon(
    tmp_path: Path, fake_llm: FakeChatServer, telegram: FakeTelegram
) -> AsyncIterator[DaemonProcess]:
    config = write_config(tmp_path / "config.toml", fake_llm.base_url)
    config.write_text(
        config.read_text() + f'[channels.telegram]\nenabled = true\nbot_token = "{TOKEN}"\n'
        f'api_url = "{telegram.api_url}"\n'
        f'[channels.telegram.users]\n"{ANN}" = "operator"\n'
    )
    process = DaemonProcess(config, tmp_path / "state")
    await process.start()
    yield process
    await process.stop()


async def wait_for_text(telegram: FakeTelegram, chat: int, needle: str, timeout: float = 20) -> str:
    for _ in range(int(timeout / 0.05)):
        for text in telegram.sent_texts(chat):
            if needle in text:
                return text
        await asyncio.sleep(0.05)
    raise AssertionError(f"{needle!r} never sent to {chat}: {telegram.sent_texts(chat)}")


async def test_an_allowed_user_gets_an_answer_and_a_stranger_is_refused(
    daemon: DaemonProcess, telegram: FakeTelegram, fake_llm: FakeChatServer
) -> None:
    fake_llm.script(Reply(content="All quiet on this host."))
    telegram.push_private("how is the host?", user_id=ANN)
    await wait_for_text(telegram, ANN, "All quiet on this host.")

    telegram.push_private("run rm -rf / now", user_id=EVE, first_name="Eve", username="eve")
    refusal = await wait_for_text(telegram, EVE, "only take requests")
    assert str(EVE) in refusal
    assert fake_llm.calls == 1  # the stranger's message never reached the model
    code, out, _ = await daemon.cli("status", "--json")
    report = json.loads(out)
    assert report["channels"]["telegram"]["state"] == "up"
    assert report["outbox"].get("telegram", 0) == 0


async def test_an_approval_round_trip_in_telegram_runs_the_action(
    daemon: DaemonProcess, telegram: FakeTelegram, fake_llm: FakeChatServer, tmp_path: Path
) -> None:
    marker = tmp_path / "restarted"
    fake_llm.script(
        Reply(tool_calls=[("run_command", json.dumps({"command": f"touch {marker}"}))]),
        Reply(content="Done, the service was restarted."),
    )
    telegram.push_private("please restart it", user_id=ANN)
    await telegram.wait_for("sendMessage", 1, timeout=20)
    prompt = next(
        params for params in telegram.calls_to("sendMessage") if params.get("reply_markup")
    )
    assert "Approval needed" in prompt["text"]
    assert not marker.exists()
    prompt_id = next(
        message_id
        for (chat, message_id), message in telegram.messages.items()
        if chat == ANN and "Approval needed" in message["text"]
    )
    keyboard = (
        json.loads(prompt["reply_markup"])
        if isinstance(prompt["reply_markup"], str)
        else prompt["reply_markup"]
    )
    approve = keyboard["inline_keyboard"][0][0]["callback_data"]
    telegram.push_callback(ANN, prompt_id, approve, user_id=ANN)

    await wait_for_text(telegram, ANN, "Done, the service was restarted.")
    assert marker.exists()
    closed = telegram.messages[(ANN, prompt_id)]["text"]
    assert "approved by telegram:" in closed


async def test_nightshift_pair_binds_a_new_telegram_user(
    daemon: DaemonProcess, telegram: FakeTelegram, fake_llm: FakeChatServer
) -> None:
    code, out, _ = await daemon.cli("pair", "--role", "viewer")
    assert code == 0
    pairing_code = next(
        line.split()[1] for line in out.splitlines() if line.strip().startswith("pair ")
    )
    telegram.push_private(f"pair {pairing_code}", user_id=EVE, first_name="Eve", username="eve")
    await wait_for_text(telegram, EVE, "is now viewer on telegram")
    fake_llm.script(Reply(content="Hello Eve."))
    telegram.push_private("hi", user_id=EVE, first_name="Eve", username="eve")
    await wait_for_text(telegram, EVE, "Hello Eve.")


async def test_sigterm_while_answering_still_delivers_the_answer(
    daemon: DaemonProcess, telegram: FakeTelegram, fake_llm: FakeChatServer
) -> None:
    import signal

    fake_llm.script(Reply(content="Answer that outlives the shutdown.", delay=1.0))
    telegram.push_private("slow question", user_id=ANN)
    for _ in range(200):
        if fake_llm.calls:
            break
        await asyncio.sleep(0.02)
    daemon.signal(signal.SIGTERM)
    assert await daemon.wait() == 0
    assert any("outlives the shutdown" in text for text in telegram.sent_texts(ANN))


async def test_status_is_degraded_while_the_only_chat_platform_is_down(
    daemon: DaemonProcess, telegram: FakeTelegram, fake_llm: FakeChatServer
) -> None:
    async def health() -> dict[str, Any]:
        code, out, _ = await daemon.cli("status", "--json")
        return dict(json.loads(out))

    assert (await health())["health"] == "ok"
    telegram.outage = 502  # Bad Gateway from now on
    fake_llm.script(Reply(content="noted"))
    telegram.push_private("wake the long poll", user_id=ANN)  # its next poll meets the outage
    for _ in range(200):
        report = await health()
        if report["channels"]["telegram"]["state"] != "up":
            break
        await asyncio.sleep(0.05)
    assert report["channels"]["telegram"]["state"] == "down"
    assert report["health"] == "degraded"
    code, text, _ = await daemon.cli("status")
    assert "degraded" in text.splitlines()[0]
    telegram.outage = None
