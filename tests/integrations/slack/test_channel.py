"""SlackChannel with the real slack-sdk clients against the loopback FakeSlack."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import SecretStr

from daemon.core.errors import DeliveryError, PermanentDeliveryError
from integrations.base import (
    ApprovalAnswer,
    ApprovalOutcome,
    ApprovalPrompt,
    Channel,
    OutgoingMessage,
)
from integrations.slack.blocks import APPROVE_ACTION, DENY_ACTION, split_text
from integrations.slack.channel import SlackChannel
from integrations.slack.manifest import slack_manifest
from integrations.slack.settings import SlackChannelSettings
from tests.fakes.slack import APP_TOKEN, BOT_TOKEN, FakeSlack
from tests.integrations.sink import RecordingSink, eventually


def settings(slack: FakeSlack, **overrides: Any) -> SlackChannelSettings:
    values: dict[str, Any] = {
        "enabled": True,
        "bot_token": SecretStr(BOT_TOKEN),
        "app_token": SecretStr(APP_TOKEN),
        "api_url": slack.api_url,
        "default_channel": "C1",
        "liveness_seconds": 5,
    }
    values.update(overrides)
    return SlackChannelSettings(**values)


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        yield fake


@pytest.fixture
async def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture
async def channel(slack: FakeSlack, sink: RecordingSink) -> AsyncIterator[SlackChannel]:
    chan = SlackChannel(settings(slack))
    await chan.start(sink)
    try:
        yield chan
    finally:
        await chan.stop()


def dm(text: str, ts: str, user: str = "U1", **extra: Any) -> dict[str, Any]:
    return {
        "type": "message",
        "channel": "D1",
        "channel_type": "im",
        "user": user,
        "text": text,
        "ts": ts,
        **extra,
    }


async def test_starts_up_and_implements_the_contract(channel: SlackChannel) -> None:
    assert isinstance(channel, Channel)
    health = channel.health()
    assert health.state == "up", health
    assert "nightshift" in health.detail


async def test_dm_reaches_the_sink_once_despite_redelivery(
    slack: FakeSlack, channel: SlackChannel, sink: RecordingSink
) -> None:
    first = await slack.push_event(dm("disk full?", "10.1"), event_id="EvA")
    again = await slack.push_event(dm("disk full?", "10.1"), event_id="EvA", retry_attempt=1)
    await slack.push_event(dm("and &lt;now&gt; &amp;?", "10.2"), event_id="EvB")
    await sink.wait(lambda: len(sink.messages) >= 2)
    await slack.wait_ack(first)
    await slack.wait_ack(again)  # the redelivery is acked too, or Slack keeps sending it
    assert [m.text for m in sink.messages] == ["disk full?", "and <now> &?"]
    message = sink.messages[0]
    assert (message.direct, message.room, message.sender_id) == (True, "D1", "U1")
    assert message.sender_name == "ann"
    assert message.thread is None and message.channel == "slack"


async def test_own_posts_edits_and_junk_are_ignored(
    slack: FakeSlack, channel: SlackChannel, sink: RecordingSink
) -> None:
    await slack.push_event(dm("echo of our reply", "11.1", user="UBOT", bot_id="BBOT"))
    await slack.push_event(dm("edited", "11.2", subtype="message_changed"))
    await slack.push_raw({"envelope_id": "junk-1", "type": "events_api", "payload": "nonsense"})
    await slack.push_raw({"envelope_id": "junk-2", "type": "mystery", "payload": {}})
    await slack.push_raw({"type": "events_api"})
    await slack.push_event({"type": "message", "channel": "D1"})  # no user, no ts
    await slack.push_event(dm("real", "11.3"))
    await sink.wait(lambda: len(sink.messages) >= 1)
    await slack.wait_ack("junk-2")
    assert [m.text for m in sink.messages] == ["real"]
    assert channel.health().state == "up"


async def test_app_mention_in_thread_strips_mention_and_keeps_thread(
    slack: FakeSlack, channel: SlackChannel, sink: RecordingSink
) -> None:
    mention = {
        "type": "app_mention",
        "channel": "C1",
        "user": "U2",
        "ts": "12.5",
        "thread_ts": "12.1",
        "text": "<@UBOT> why is nginx down?",
    }
    await slack.push_event(mention)
    # the same post also arrives as a channel message event: still one message
    await slack.push_event({**mention, "type": "message", "channel_type": "channel"})
    # a later reply in that thread, without a mention, belongs to the same conversation
    await slack.push_event(
        {
            "type": "message",
            "channel_type": "channel",
            "channel": "C1",
            "user": "U2",
            "ts": "12.6",
            "thread_ts": "12.1",
            "text": "still?",
        }
    )
    # chatter elsewhere in the channel is not for us
    await slack.push_event(
        {
            "type": "message",
            "channel_type": "channel",
            "channel": "C1",
            "user": "U2",
            "ts": "12.7",
            "text": "lunch?",
        }
    )
    # a later message for us: envelopes are handled in order, so the chatter came before it
    await slack.push_event(dm("marker", "12.8"))
    await sink.wait(lambda: len(sink.messages) >= 3)
    assert [(m.text, m.thread, m.direct) for m in sink.messages] == [
        ("why is nginx down?", "12.1", False),
        ("still?", "12.1", False),
        ("marker", None, True),
    ]
    assert sink.messages[0].conversation_key == sink.messages[1].conversation_key == "C1:12.1"


async def test_send_posts_in_thread_and_returns_the_id(
    slack: FakeSlack, channel: SlackChannel
) -> None:
    platform_id = await channel.send(
        OutgoingMessage(outbox_id=1, target="C2", text="hi", thread="5.5")
    )
    call = slack.calls_to("chat.postMessage")[-1]
    assert call.params["channel"] == "C2" and call.params["thread_ts"] == "5.5"
    room, ts = platform_id.split(":")
    assert room == "C2" and slack.messages[("C2", ts)]["text"] == "hi"
    default_id = await channel.send(OutgoingMessage(outbox_id=2, target="", text="alert"))
    assert default_id.startswith("C1:")
    await channel.edit("", default_id, "alert (resolved)")
    assert slack.messages[("C1", default_id.split(":")[1])]["text"] == "alert (resolved)"


async def test_rate_limit_and_unknown_channel_map_to_delivery_errors(
    slack: FakeSlack, channel: SlackChannel
) -> None:
    slack.rate_limit(1, retry_after=7)
    with pytest.raises(DeliveryError) as caught:
        await channel.send(OutgoingMessage(outbox_id=1, target="", text="x"))
    assert caught.value.retry_after == 7
    assert await channel.send(OutgoingMessage(outbox_id=1, target="", text="x"))
    with pytest.raises(PermanentDeliveryError):
        await channel.send(OutgoingMessage(outbox_id=2, target="C404", text="x"))


async def test_mentions_from_model_output_cannot_ping(
    slack: FakeSlack, channel: SlackChannel
) -> None:
    await channel.send(OutgoingMessage(outbox_id=1, target="", text="<!channel> <@U1> <!here> a&b"))
    text = slack.calls_to("chat.postMessage")[-1].params["text"]
    assert "<" not in text and ">" not in text
    assert text == "&lt;!channel&gt; &lt;@U1&gt; &lt;!here&gt; a&amp;b"


async def test_a_refused_press_is_told_why_only_to_the_presser(
    slack: FakeSlack, channel: SlackChannel, sink: RecordingSink
) -> None:
    sink.outcome = ApprovalOutcome(
        text="Not done: your role (viewer) cannot approve", accepted=False
    )
    prompt = ApprovalPrompt(approval_id="ap-2", text="restart nginx?", target="C1")
    room, ts = (await channel.ask_approval(prompt)).split(":")
    await slack.push_button(
        action_id=APPROVE_ACTION, value="ap-2", user_id="U2", channel=room, message_ts=ts
    )
    await eventually(lambda: bool(slack.calls_to("chat.postEphemeral")))
    [told] = slack.calls_to("chat.postEphemeral")
    assert told.params["user"] == "U2" and told.params["channel"] == room
    assert "cannot approve" in told.params["text"]


async def test_long_messages_are_split(slack: FakeSlack, channel: SlackChannel) -> None:
    body = "\n".join(f"line {i} " + "x" * 80 for i in range(100))  # ~8,800 characters
    platform_id = await channel.send(OutgoingMessage(outbox_id=1, target="", text=body))
    posts = slack.calls_to("chat.postMessage")
    assert len(posts) == 3 and all(len(p.params["text"]) <= 4000 for p in posts)
    assert slack.messages[("C1", platform_id.split(":")[1])]["text"] == posts[0].params["text"]
    huge = split_text("y" * 100_000)
    assert len(huge) == 10 and huge[-1].endswith("(truncated)")


async def test_approval_buttons_answer_and_close(
    slack: FakeSlack, channel: SlackChannel, sink: RecordingSink
) -> None:
    prompt = ApprovalPrompt(approval_id="ap-1", text="restart <nginx>?", target="C1")
    platform_id = await channel.ask_approval(prompt)
    room, ts = platform_id.split(":")
    blocks = slack.messages[(room, ts)]["blocks"]
    buttons = [e for b in blocks if b["type"] == "actions" for e in b["elements"]]
    assert [(b["action_id"], b["value"]) for b in buttons] == [
        (APPROVE_ACTION, "ap-1"),
        (DENY_ACTION, "ap-1"),
    ]
    await slack.push_button(
        action_id=APPROVE_ACTION, value="ap-1", user_id="U2", channel=room, message_ts=ts
    )
    await slack.push_button(
        action_id=DENY_ACTION, value="ap-1", user_id="U1", channel=room, message_ts=ts
    )
    await sink.wait(lambda: len(sink.answers) >= 2)
    assert sink.answers[0] == ApprovalAnswer(
        channel="slack", approval_id="ap-1", approved=True, user_id="U2", user_name="bob", room=room
    )
    assert sink.answers[1].approved is False
    assert slack.calls_to("chat.postEphemeral") == []  # accepted: the prompt shows it
    await channel.close_approval(prompt, platform_id, "approved by @bob")
    closed = slack.messages[(room, ts)]
    assert not [b for b in closed["blocks"] if b["type"] == "actions"]
    assert "approved by @bob" in str(closed["blocks"])


async def test_disconnect_envelope_reconnects(
    slack: FakeSlack, channel: SlackChannel, sink: RecordingSink
) -> None:
    await slack.disconnect()
    await slack.wait_connections(2)
    await slack.push_event(dm("after reconnect", "20.1"))
    await sink.wait(lambda: len(sink.messages) >= 1)
    assert sink.messages[0].text == "after reconnect"


async def test_silent_socket_is_noticed_and_rebuilt(
    slack: FakeSlack, channel: SlackChannel, sink: RecordingSink
) -> None:
    await slack.wait_connections(1)
    slack.go_silent()
    await slack.wait_connections(2, timeout=8)  # liveness_seconds is 5
    await slack.push_event(dm("back again", "21.1"))
    await sink.wait(lambda: len(sink.messages) >= 1)
    assert channel.health().state == "up"


async def test_dead_socket_url_makes_the_watchdog_rebuild(
    slack: FakeSlack, channel: SlackChannel, sink: RecordingSink
) -> None:
    """The SDK retries a refused URL forever; our watchdog asks for a new one."""
    slack.refuse_sockets = True
    conn = slack.go_silent()
    await conn.ws.close()
    await eventually(lambda: channel.health().state == "down", timeout=10)
    slack.refuse_sockets = False
    await slack.wait_connections(2, timeout=8)
    await slack.push_event(dm("healed", "22.1"))
    await sink.wait(lambda: len(sink.messages) >= 1)
    assert channel.health().state == "up"
    assert channel.rebuilds == 1


async def test_revoked_bot_token_is_down_with_a_clear_detail(
    slack: FakeSlack, sink: RecordingSink
) -> None:
    slack.revoke(BOT_TOKEN)
    chan = SlackChannel(settings(slack))
    await chan.start(sink)
    try:
        assert [call.method for call in slack.calls] == ["auth.test"]  # asked once, no retries
        health = chan.health()
        assert health.state == "down"
        assert "rejected the bot token (token_revoked)" in health.detail
        assert "channels.slack.bot_token" in health.detail
        with pytest.raises(DeliveryError):  # waits for a fixed token, never dropped
            await chan.send(OutgoingMessage(outbox_id=1, target="", text="x"))
    finally:
        await chan.stop()
    assert chan.health().state == "stopped"


async def test_wrong_app_token_is_down_and_start_returns(
    slack: FakeSlack, sink: RecordingSink
) -> None:
    chan = SlackChannel(settings(slack, app_token=SecretStr("xapp-wrong")))
    await chan.start(sink)
    try:
        health = chan.health()
        assert health.state == "down" and "channels.slack.app_token" in health.detail
        assert "xapp-wrong" not in health.detail
    finally:
        await chan.stop()


async def test_unreachable_slack_does_not_hang_start(sink: RecordingSink) -> None:
    async with FakeSlack() as gone:
        url = gone.api_url
    chan = SlackChannel(
        SlackChannelSettings(
            enabled=True,
            bot_token=SecretStr(BOT_TOKEN),
            app_token=SecretStr(APP_TOKEN),
            api_url=url,
            liveness_seconds=5,
        )
    )
    await chan.start(sink)
    try:
        health = chan.health()
        assert health.state == "down" and "cannot connect" in health.detail
    finally:
        await chan.stop()


def test_manifest_has_socket_mode_events_and_scopes() -> None:
    text = slack_manifest("nightshift-test")
    for needle in (
        "socket_mode_enabled: true",
        "app_mention",
        "message.im",
        "chat:write",
        "im:history",
        "is_enabled: true",
        "nightshift-test",
    ):
        assert needle in text


async def test_bot_token_revoked_while_running_then_fixed(
    slack: FakeSlack, channel: SlackChannel
) -> None:
    slack.revoke(BOT_TOKEN)
    with pytest.raises(DeliveryError) as caught:
        await channel.send(OutgoingMessage(outbox_id=1, target="", text="x"))
    assert caught.value.retry_after and not isinstance(caught.value, PermanentDeliveryError)
    assert channel.health().state == "down"
    assert "channels.slack.bot_token" in channel.health().detail
    slack.revoked.clear()  # the operator rotated it
    assert await channel.send(OutgoingMessage(outbox_id=1, target="", text="x"))
    assert channel.health().state == "up"


async def test_app_token_revoked_while_running_is_reported(
    slack: FakeSlack, channel: SlackChannel
) -> None:
    """The SDK would retry apps.connections.open forever in silence; health says why."""
    slack.revoke(APP_TOKEN)
    await slack.disconnect()
    for _ in range(60):  # health() is a plain getter: poll it
        if "app_token" in channel.health().detail:
            break
        await asyncio.sleep(0.1)
    assert channel.health().state == "down"
    assert "token_revoked" in channel.health().detail


async def test_a_bot_token_revoked_while_idle_shows_down_and_a_fixed_one_up_again(
    slack: FakeSlack, sink: RecordingSink
) -> None:
    chan = SlackChannel(settings(slack), probe_seconds=0.2, token_check_seconds=0.5)
    await chan.start(sink)
    try:
        assert chan.health().state == "up"
        slack.revoke(BOT_TOKEN)  # nothing is sent meanwhile: only a check can notice
        await eventually(lambda: chan.health().state == "down", timeout=10)
        assert "channels.slack.bot_token" in chan.health().detail
        slack.revoked.clear()  # rotated: taken at the next probe, not after a long backoff
        await eventually(lambda: chan.health().state == "up", timeout=10)
    finally:
        await chan.stop()


async def test_after_an_outage_the_socket_is_rebuilt_as_soon_as_slack_answers(
    slack: FakeSlack, sink: RecordingSink, caplog: pytest.LogCaptureFixture
) -> None:
    """The rebuild backoff grows during an outage (5, 10, 20 s …); it must not outlast it."""
    chan = SlackChannel(settings(slack), probe_seconds=0.2)
    await chan.start(sink)
    caplog.set_level(logging.INFO, logger="integrations.slack.channel")
    try:
        slack.outage = True
        await slack.disconnect()

        def failed_rebuilds() -> int:  # logged once a rebuild has failed, not when it starts
            return sum("cannot connect to Slack" in r.getMessage() for r in caplog.records)

        # the third failure sets the next try 20 s away; Slack must not come back before it
        # has failed, or that rebuild itself succeeds and no probe is needed
        await eventually(lambda: failed_rebuilds() >= 3, timeout=60)
        slack.outage = False
        await eventually(lambda: chan.health().state == "up", timeout=60)
        assert "Slack answers again: rebuilding the socket now" in caplog.text
        assert failed_rebuilds() == 3  # up through the probe, not after another failed try
    finally:
        await chan.stop()
