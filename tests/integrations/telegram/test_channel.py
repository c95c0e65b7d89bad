"""The Telegram channel with the real python-telegram-bot against the loopback Bot API fake."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr

from daemon.core.errors import DeliveryError, PermanentDeliveryError
from integrations.base import (
    ApprovalAnswer,
    ApprovalOutcome,
    ApprovalPrompt,
    Channel,
    InboundMessage,
    OutgoingMessage,
)
from integrations.telegram.channel import TOKEN_DETAIL, TelegramChannel
from integrations.telegram.settings import TelegramChannelSettings
from integrations.telegram.updates import split_text
from tests.fakes.telegram import FakeTelegram
from tests.integrations.sink import RecordingSink, eventually

TOKEN = "123456:AAH-test-token-value"
GROUP = -1001234
ANN = 42


def make_channel(api_url: str, token: str = TOKEN, **settings: object) -> TelegramChannel:
    config = TelegramChannelSettings(
        enabled=True,
        bot_token=SecretStr(token),
        api_url=api_url,
        default_chat=str(GROUP),
        **settings,  # type: ignore[arg-type]
    )
    return TelegramChannel(
        config, poll_timeout=1, start_timeout=2.0, backoff_initial=0.05, backoff_max=0.2
    )


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(TOKEN, chats=[GROUP, ANN]) as fake:
        yield fake


@pytest.fixture
async def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture
async def channel(tg: FakeTelegram, sink: RecordingSink) -> AsyncIterator[TelegramChannel]:
    chan = make_channel(tg.api_url)
    await chan.start(sink)
    assert chan.health().state == "up"
    yield chan
    await chan.stop()
    assert chan.health().state == "stopped"


def out(text: str, target: str = "", outbox_id: int = 1) -> OutgoingMessage:
    return OutgoingMessage(outbox_id=outbox_id, target=target, text=text)


# -- inbound ---------------------------------------------------------------------------------


async def test_channel_satisfies_the_protocol(channel: TelegramChannel) -> None:
    assert isinstance(channel, Channel)
    assert channel.health().detail == "polling as @nightshift_bot"


async def test_private_message_reaches_sink_once_even_when_redelivered(
    tg: FakeTelegram, sink: RecordingSink, channel: TelegramChannel
) -> None:
    update_id = tg.push_private("disk full on db1?", user_id=ANN)
    await eventually(lambda: len(sink.messages) == 1)
    tg.redeliver(update_id)
    tg.push_private("second", user_id=ANN)
    tg.push_private("marker", user_id=ANN)  # updates arrive in order: a redelivery came before
    await eventually(lambda: len(sink.messages) == 3)
    first, second, _ = sink.messages
    assert first == InboundMessage(
        channel="telegram",
        sender_id=str(ANN),
        sender_name="@ann",
        room=str(ANN),
        text="disk full on db1?",
        direct=True,
        message_id=first.message_id,
    )
    assert second.text == "second"


async def test_restart_skips_updates_telegram_sends_again(
    tg: FakeTelegram, sink: RecordingSink, channel: TelegramChannel
) -> None:
    """The confirming getUpdates is lost (502) and the channel restarts: no double handling."""

    def outage() -> None:
        tg.outage = 502  # the confirming poll and the confirm at stop both fail

    sink.after_store = outage
    update_id = tg.push_private("only once", user_id=ANN)
    await eventually(lambda: len(sink.messages) == 1)
    sink.after_store = None
    await channel.stop()
    tg.outage = None
    await channel.start(sink)
    tg.push_private("next", user_id=ANN)
    await eventually(lambda: len(sink.messages) == 2)
    assert tg.delivered_update_ids().count(update_id) == 2  # Telegram did send it again
    assert [m.text for m in sink.messages] == ["only once", "next"]
    assert update_id in channel.handled_update_ids


async def test_stop_confirms_handled_updates(
    tg: FakeTelegram, sink: RecordingSink, channel: TelegramChannel
) -> None:
    def outage() -> None:
        tg.fail_next("getUpdates", 502)  # only the confirming poll fails

    sink.after_store = outage
    update_id = tg.push_private("confirm me", user_id=ANN)
    await eventually(lambda: len(sink.messages) == 1)
    await channel.stop()
    await channel.start(RecordingSink())
    assert tg.delivered_update_ids().count(update_id) == 1


async def test_group_needs_a_mention_which_is_stripped(
    tg: FakeTelegram, sink: RecordingSink, channel: TelegramChannel
) -> None:
    tg.push_group("just chatting, no bot here", chat_id=GROUP)
    tg.push_group("@someone_else hi", chat_id=GROUP)
    tg.push_group("@nightshift_bot  why is   nginx down?", chat_id=GROUP)
    tg.push_group("/status@nightshift_bot", chat_id=GROUP)
    tg.push_group("@nightshift_bot loop", chat_id=GROUP, from_bot=True)
    tg.push_group("@nightshift_bot marker", chat_id=GROUP)  # in order: the ignored came before
    await eventually(lambda: len(sink.messages) == 3)
    mention, command, marker = sink.messages
    assert marker.text == "marker"
    assert mention.text == "why is nginx down?"
    assert (mention.room, mention.direct, mention.thread) == (str(GROUP), False, None)
    assert command.text == "/status"


async def test_group_reply_to_bot_and_forum_topic(
    tg: FakeTelegram, sink: RecordingSink, channel: TelegramChannel
) -> None:
    bot_message = int(await channel.send(out("nginx restarted")))
    tg.push_group("thanks, and redis?", chat_id=GROUP, reply_to=bot_message)
    tg.push_group("@nightshift_bot in topic", chat_id=-100777, thread_id=9)
    await eventually(lambda: len(sink.messages) == 2)
    reply, topic = sink.messages
    assert reply.text == "thanks, and redis?"
    assert (topic.room, topic.thread, topic.conversation_key) == ("-100777", "9", "-100777:9")


async def test_group_without_mention_requirement(tg: FakeTelegram, sink: RecordingSink) -> None:
    chan = make_channel(tg.api_url, require_mention_in_groups=False)
    await chan.start(sink)
    try:
        tg.push_group("everyone can talk", chat_id=GROUP)
        await eventually(lambda: len(sink.messages) == 1)
    finally:
        await chan.stop()
    assert sink.messages[0].text == "everyone can talk"


async def test_sink_failure_gets_the_update_again(
    tg: FakeTelegram, sink: RecordingSink, channel: TelegramChannel
) -> None:
    sink.fail = 2
    tg.push_private("keep me", user_id=ANN)
    await eventually(lambda: len(sink.messages) == 1)
    assert sink.messages[0].text == "keep me"


# -- outbound --------------------------------------------------------------------------------


async def test_send_splits_long_text_in_order_as_plain_text(
    tg: FakeTelegram, channel: TelegramChannel
) -> None:
    text = "a" * 4096 + "b" * 4096 + "c" * 808
    first = await channel.send(out(text))
    sends = tg.calls_to("sendMessage")
    assert [s["text"] for s in sends] == ["a" * 4096, "b" * 4096, "c" * 808]
    assert all("parse_mode" not in s for s in sends)
    assert first == str(min(mid for (chat, mid) in tg.messages if chat == GROUP))
    assert "".join(tg.sent_texts(GROUP)) == text


async def test_send_resumes_after_second_part_failed(
    tg: FakeTelegram, channel: TelegramChannel
) -> None:
    original = tg._api_sendMessage
    count = 0

    async def flaky(params: dict[str, object]) -> tuple[int, dict[str, object]]:
        nonlocal count
        count += 1
        if count == 2:
            return 502, {"ok": False, "error_code": 502, "description": "Bad Gateway"}
        return await original(params)

    tg._api_sendMessage = flaky  # type: ignore[method-assign]
    text = "p" * 4096 + "q" * 10
    with pytest.raises(DeliveryError):
        await channel.send(out(text, outbox_id=3))
    first = await channel.send(out(text, outbox_id=3))
    assert tg.sent_texts(GROUP) == ["p" * 4096, "q" * 10]
    assert first == str(min(mid for (chat, mid) in tg.messages if chat == GROUP))


async def test_rate_limit_is_a_delivery_error_with_retry_after(
    tg: FakeTelegram, channel: TelegramChannel
) -> None:
    tg.fail_next("sendMessage", 429, retry_after=7)
    with pytest.raises(DeliveryError) as caught:
        await channel.send(out("hello"))
    assert caught.value.retry_after == 7


async def test_bad_gateway_is_a_delivery_error(tg: FakeTelegram, channel: TelegramChannel) -> None:
    tg.fail_next("sendMessage", 502)
    with pytest.raises(DeliveryError) as caught:
        await channel.send(out("hello"))
    assert caught.value.retry_after is None
    assert await channel.send(out("hello"))  # and the next try works


async def test_unknown_chat_and_blocked_bot_are_permanent(
    tg: FakeTelegram, channel: TelegramChannel
) -> None:
    with pytest.raises(PermanentDeliveryError, match="(?i)chat not found"):
        await channel.send(out("hello", target="555"))
    tg.blocked_chats.add(ANN)
    with pytest.raises(PermanentDeliveryError, match="blocked"):
        await channel.send(out("hello", target=str(ANN)))


async def test_edit_replaces_text(tg: FakeTelegram, channel: TelegramChannel) -> None:
    platform_id = await channel.send(out("CPU at 95%"))
    await channel.edit("", platform_id, "CPU back to 20%")
    await channel.edit("", platform_id, "CPU back to 20%")  # not modified: fine
    assert tg.messages[(GROUP, int(platform_id))]["text"] == "CPU back to 20%"


async def test_group_upgraded_to_supergroup_is_followed(
    tg: FakeTelegram, channel: TelegramChannel
) -> None:
    tg.add_chat(-100999)
    tg.fail_next("sendMessage", 400, description="Bad Request: group upgraded", migrate_to=-100999)
    await channel.send(out("to the old group", target="-555"))
    await channel.send(out("again", target="-555"))
    assert tg.sent_texts(-100999) == ["to the old group", "again"]


async def test_edit_of_unknown_message_is_permanent(channel: TelegramChannel) -> None:
    with pytest.raises(PermanentDeliveryError):
        await channel.edit("", "424242", "nope")


# -- approvals -------------------------------------------------------------------------------


async def test_approval_round_trip(
    tg: FakeTelegram, sink: RecordingSink, channel: TelegramChannel
) -> None:
    prompt = ApprovalPrompt(approval_id="a17", text="restart nginx?", target=str(GROUP))
    platform_id = await channel.ask_approval(prompt)
    stored = tg.messages[(GROUP, int(platform_id))]
    buttons = stored["reply_markup"]["inline_keyboard"][0]
    assert [b["callback_data"] for b in buttons] == ["ns:approve:a17", "ns:deny:a17"]

    tg.push_callback(GROUP, int(platform_id), "ns:approve:a17", user_id=ANN)
    await tg.wait_for("answerCallbackQuery")
    assert sink.answers == [
        ApprovalAnswer(
            channel="telegram", approval_id="a17", approved=True, user_id=str(ANN), user_name="@ann"
        )
    ]
    assert tg.calls_to("answerCallbackQuery")[0]["text"] == "Approved."  # what the sink decided
    sink.outcome = ApprovalOutcome(
        text="Not done: your role (viewer) cannot approve", accepted=False
    )
    tg.push_callback(GROUP, int(platform_id), "ns:approve:a17", user_id=ANN)
    await tg.wait_for("answerCallbackQuery", 2)
    assert "cannot approve" in tg.calls_to("answerCallbackQuery")[1]["text"]  # not "Approved"
    tg.push_callback(GROUP, int(platform_id), "something-else")
    await tg.wait_for("answerCallbackQuery", 3)
    assert len(sink.answers) == 2

    await channel.close_approval(prompt, platform_id, "approved by @ann")
    assert stored["text"] == "restart nginx?\n\napproved by @ann"
    assert "reply_markup" not in stored


# -- health ----------------------------------------------------------------------------------


async def test_api_down_at_start_then_recovers(tg: FakeTelegram, sink: RecordingSink) -> None:
    await tg.pause()
    chan = make_channel(tg.api_url)
    started = time.monotonic()
    await chan.start(sink)
    try:
        assert time.monotonic() - started < 2.5
        assert chan.health().state == "down"
        with pytest.raises(DeliveryError):
            await chan.send(out("queued"))
        await tg.resume()
        tg.push_private("back?", user_id=ANN)
        await eventually(lambda: len(sink.messages) == 1)
        assert chan.health().state == "up"
        assert await chan.send(out("yes"))
    finally:
        await chan.stop()


async def test_bad_gateway_at_start_then_recovers(tg: FakeTelegram, sink: RecordingSink) -> None:
    tg.outage = 502
    chan = make_channel(tg.api_url)
    await chan.start(sink)
    try:
        health = chan.health()
        assert health.state == "down" and "Bad Gateway" in health.detail
        tg.outage = None
        await eventually(lambda: chan.health().state == "up")
    finally:
        await chan.stop()


async def test_revoked_token_shows_down_and_recovers_when_fixed(
    tg: FakeTelegram,
    sink: RecordingSink,
    channel: TelegramChannel,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    tg.revoked = True
    await eventually(lambda: channel.health().state == "down")
    assert channel.health().detail == TOKEN_DETAIL
    with pytest.raises(DeliveryError, match="rotate"):
        await channel.send(out("waits in the outbox"))
    tg.revoked = False
    await eventually(lambda: channel.health().state == "up")
    assert TOKEN not in caplog.text


async def test_wrong_token_at_start(
    tg: FakeTelegram, sink: RecordingSink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    chan = make_channel(tg.api_url, token="999:wrong")
    await chan.start(sink)
    try:
        assert chan.health().state == "down"
        assert chan.health().detail == TOKEN_DETAIL
    finally:
        await chan.stop()
    assert "999:wrong" not in caplog.text


async def test_dead_poll_loop_is_reported(channel: TelegramChannel) -> None:
    assert channel._loop._task is not None
    channel._loop._task.cancel()
    await eventually(lambda: channel.health().state == "down")
    assert "poll loop stopped" in channel.health().detail


async def test_silent_poll_shows_down(channel: TelegramChannel) -> None:
    channel._loop._last_ok = time.monotonic() - 120  # a poll that hangs past its read timeout
    assert channel.health().state == "down"
    assert "no successful getUpdates for 120 s" in channel.health().detail


async def test_no_token_is_down_without_polling(sink: RecordingSink) -> None:
    chan = TelegramChannel(TelegramChannelSettings())
    await chan.start(sink)
    assert chan.health().state == "down"
    with pytest.raises(DeliveryError):
        await chan.send(out("x", target="1"))
    await chan.stop()


# -- pure helpers ----------------------------------------------------------------------------


def test_split_text_prefers_newlines_and_counts_utf16() -> None:
    text = "line\n" * 1000  # 5,000 characters
    parts = split_text(text)
    assert len(parts) == 2 and all(len(p) <= 4096 for p in parts)
    assert parts[0].endswith("line")
    emoji = "😀" * 3000  # 6,000 UTF-16 units
    assert [len(p) for p in split_text(emoji)] == [2048, 952]
    assert split_text("short") == ["short"]
