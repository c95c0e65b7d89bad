"""The Channel contract (integrations/base.py), one suite run against every implementation.

Each platform gets a harness that starts its channel against the platform (console: nothing;
Slack and Telegram: the loopback fakes in tests/fakes; Matrix: a real Synapse), lets a person
write to the bot as the platform would deliver it, presses approve on a prompt, and reads back
what the platform received. What a platform cannot do is skipped with the reason in the test id
(``console-cannot-inbound``), never passed silently.

The contract, as a user notices it: start() leaves the channel "up"; send() delivers the text to
the target, long text split (or kept whole) per platform, in order; what a person writes reaches
the sink once, even when the platform delivers it twice; an approve press comes back with the
presser's identity; a permanent failure raises PermanentDeliveryError, a transient one
DeliveryError; stop() is prompt and idempotent; an unreachable platform shows "down" with why.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from _pytest.mark.structures import ParameterSet
from nio import AsyncClient, ErrorResponse, RoomCreateResponse, RoomMessagesResponse
from pydantic import SecretStr

from daemon.core.errors import DeliveryError, PermanentDeliveryError
from integrations.base import ApprovalPrompt, Channel, OutgoingMessage
from integrations.console import ConsoleChannel
from integrations.matrix.channel import MatrixChannel
from integrations.matrix.settings import MatrixChannelSettings
from integrations.slack.blocks import APPROVE_ACTION, unescape
from integrations.slack.channel import SlackChannel
from integrations.slack.settings import SlackChannelSettings
from integrations.telegram.channel import TelegramChannel
from integrations.telegram.settings import TelegramChannelSettings
from tests.fakes.slack import APP_TOKEN, BOT_TOKEN, FakeSlack
from tests.fakes.telegram import FakeTelegram
from tests.integrations.sink import RecordingSink, eventually
from tests.peers.synapse import MatrixUser, Synapse, free_port, synapse_available

PLATFORMS = ("console", "slack", "telegram", "matrix")
# What a platform cannot do, by contract case: the reason becomes part of the test id.
CANNOT: dict[str, dict[str, str]] = {
    "console": {
        "inbound": "console input arrives through the local API, not the sink",
        "approvals": "console has no approve button to press",
        "failures": "the console (the daemon log) cannot refuse a message",
        "unreachable": "the console has no remote platform",
        "stopped": "the console (the daemon log) is there while the process is",
    },
    "matrix": {
        "injected_failure": "a real Synapse cannot be told to fail one send",
    },
}
# A hang, not a speed test: a stop that waited out a long poll (25-30 s) would exceed it.
STOP_WITHIN_SECONDS = 8.0
LONG_TEXT = "\n".join(f"line {i}: " + "word " * 17 for i in range(110))  # ~10,000 characters


def platforms(*cases: str) -> list[ParameterSet]:
    """One param per platform; a platform that cannot do a case is skipped with its reason."""
    params = []
    for name in PLATFORMS:
        case, reason = next(
            ((c, CANNOT[name][c]) for c in cases if c in CANNOT.get(name, {})), ("", "")
        )
        if reason:
            mark = pytest.mark.skip(reason=f"{name}: {reason}")
            params.append(pytest.param(name, id=f"{name}-cannot-{case}", marks=mark))
        else:
            params.append(pytest.param(name, id=name))
    return params


class Harness:
    """A started channel plus the platform's side of the conversation."""

    name = ""
    room = ""  # where the person talks to the bot and the bot answers
    person = ("", "")  # (user_id, user_name) of the person who writes and presses
    unknown_target = ""  # a target the platform refuses for good
    limit: int | None = None  # characters per message the platform takes; None: kept whole

    def __init__(self) -> None:
        self.sink = RecordingSink()

    @property
    def channel(self) -> Channel:
        raise NotImplementedError

    async def say(self, text: str) -> None:
        """A person writes ``text`` to the bot in ``room``."""
        raise NotImplementedError

    async def say_twice(self, text: str) -> None:
        """The person writes ``text`` and the platform delivers it a second time."""
        raise NotImplementedError

    async def received(self) -> list[str]:
        """The texts the platform holds from the bot in ``room``, oldest first (no prompts)."""
        raise NotImplementedError

    async def press_approve(self, prompt: ApprovalPrompt, platform_id: str) -> None:
        raise NotImplementedError

    async def fail_next_send(self) -> None:
        """Make the platform fail the next send in a way that may succeed later."""
        raise NotImplementedError

    def unreachable(self) -> Channel:
        """A channel of this kind configured for a platform that does not answer."""
        raise NotImplementedError


class ConsoleHarness(Harness):
    name = "console"

    def __init__(self) -> None:
        super().__init__()
        self.console = ConsoleChannel()
        self.events, self.detach = self.console.attach()
        self.seen: list[str] = []

    @property
    def channel(self) -> Channel:
        return self.console

    async def received(self) -> list[str]:
        while not self.events.empty():
            event = self.events.get_nowait()
            if event["type"] == "message":
                self.seen.append(str(event["text"]))
        return self.seen


class SlackHarness(Harness):
    name = "slack"
    room = "D1"
    person = ("U1", "ann")
    unknown_target = "C404"
    limit = 4000

    def __init__(self, fake: FakeSlack) -> None:
        super().__init__()
        self.fake = fake
        self.slack = SlackChannel(self.settings(fake.api_url))
        self._ts = 100

    @staticmethod
    def settings(api_url: str) -> SlackChannelSettings:
        return SlackChannelSettings(
            enabled=True,
            bot_token=SecretStr(BOT_TOKEN),
            app_token=SecretStr(APP_TOKEN),
            api_url=api_url,
            default_channel="C1",
            liveness_seconds=5,
        )

    @property
    def channel(self) -> Channel:
        return self.slack

    def _event(self, text: str) -> dict[str, Any]:
        self._ts += 1
        return {
            "type": "message",
            "channel": self.room,
            "channel_type": "im",
            "user": self.person[0],
            "text": text,
            "ts": f"{self._ts}.1",
        }

    async def say(self, text: str) -> None:
        await self.fake.push_event(self._event(text))

    async def say_twice(self, text: str) -> None:
        event = self._event(text)
        event_id = f"Ev-{self._ts}"
        await self.fake.push_event(event, event_id=event_id)
        await self.fake.push_event(event, event_id=event_id, retry_attempt=1)

    async def received(self) -> list[str]:
        posts = [
            (int(ts.split(".")[1]), message)
            for (channel, ts), message in self.fake.messages.items()
            if channel == self.room and not message["blocks"]
        ]
        return [unescape(str(message["text"])) for _, message in sorted(posts)]

    async def press_approve(self, prompt: ApprovalPrompt, platform_id: str) -> None:
        channel, ts = platform_id.split(":")
        await self.fake.push_button(
            action_id=APPROVE_ACTION,
            value=prompt.approval_id,
            user_id=self.person[0],
            channel=channel,
            message_ts=ts,
        )

    async def fail_next_send(self) -> None:
        self.fake.rate_limit(1, retry_after=3)

    def unreachable(self) -> Channel:
        return SlackChannel(self.settings(f"http://127.0.0.1:{free_port()}/api/"))


TELEGRAM_TOKEN = "123456:AAH-contract-token"
ANN = 42


class TelegramHarness(Harness):
    name = "telegram"
    room = str(ANN)
    person = (str(ANN), "@ann")
    unknown_target = "555"
    limit = 4096

    def __init__(self, fake: FakeTelegram) -> None:
        super().__init__()
        self.fake = fake
        self.telegram = self.make(fake.api_url)

    @staticmethod
    def make(api_url: str) -> TelegramChannel:
        settings = TelegramChannelSettings(
            enabled=True, bot_token=SecretStr(TELEGRAM_TOKEN), api_url=api_url
        )
        # the real long poll (25 s): stop() must not wait it out
        return TelegramChannel(settings, start_timeout=5, backoff_initial=0.05, backoff_max=0.2)

    @property
    def channel(self) -> Channel:
        return self.telegram

    async def say(self, text: str) -> None:
        self.fake.push_private(text, user_id=ANN)

    async def say_twice(self, text: str) -> None:
        update_id = self.fake.push_private(text, user_id=ANN)
        await self.sink.wait(lambda: text in self.sink.texts())
        self.fake.redeliver(update_id)

    async def received(self) -> list[str]:
        return [
            str(message["text"])
            for (chat, _), message in sorted(self.fake.messages.items())
            if chat == ANN and "reply_markup" not in message
        ]

    async def press_approve(self, prompt: ApprovalPrompt, platform_id: str) -> None:
        data = f"ns:approve:{prompt.approval_id}"
        self.fake.push_callback(ANN, int(platform_id), data, user_id=ANN)

    async def fail_next_send(self) -> None:
        self.fake.fail_next("sendMessage", 502)

    def unreachable(self) -> Channel:
        return self.make(f"http://127.0.0.1:{free_port()}/bot")


class TokenStore:
    """A sync token store whose saves can be made to fail (the token stays where it was)."""

    def __init__(self) -> None:
        self.token: str | None = None
        self.failing = False

    async def load(self) -> str | None:
        return self.token

    async def save(self, token: str) -> None:
        if self.failing:
            raise OSError("disk full")
        self.token = token


class Peers:
    """A Synapse with the bot and ann (allowed to talk to it)."""

    def __init__(self, server: Synapse) -> None:
        self.server = server
        self.bot = server.register("bot")
        self.ann = server.register("ann")


class MatrixHarness(Harness):
    name = "matrix"
    unknown_target = "!nowhere:localhost"

    def __init__(self, peers: Peers, ann: AsyncClient) -> None:
        super().__init__()
        self.peers, self.ann = peers, ann
        self.person = (peers.ann.user_id, "ann")
        self.store = TokenStore()
        self.matrix = self.make(peers.server.url, peers.bot)

    def make(self, url: str, bot: MatrixUser) -> MatrixChannel:
        settings = MatrixChannelSettings(
            enabled=True,
            homeserver=url,
            user_id=bot.user_id,
            access_token=SecretStr(bot.access_token),
            users={self.peers.ann.user_id: "operator"},
        )
        # the real long poll (30 s): stop() must not wait it out
        return MatrixChannel(
            settings,
            sync_token_store=self.store,
            start_timeout=5,
            backoff_initial=0.1,
            backoff_max=0.5,
        )

    @property
    def channel(self) -> Channel:
        return self.matrix

    async def open_room(self) -> None:
        """ann opens a DM with the bot, which joins on her invite."""
        response = await self.ann.room_create(is_direct=True, invite=[self.peers.bot.user_id])
        assert isinstance(response, RoomCreateResponse), response
        self.room = str(response.room_id)
        deadline = time.monotonic() + 10
        while True:
            members = await self.ann.joined_members(self.room)
            if self.peers.bot.user_id in [m.user_id for m in getattr(members, "members", [])]:
                return
            assert time.monotonic() < deadline, "the bot did not join on ann's invite"
            await asyncio.sleep(0.05)

    async def say(self, text: str) -> None:
        content = {"msgtype": "m.text", "body": text}
        response = await self.ann.room_send(self.room, "m.room.message", content)
        assert not isinstance(response, ErrorResponse), response

    async def say_twice(self, text: str) -> None:
        """The sync token is not saved (disk full), the channel restarts: /sync from the saved
        token hands the message over again."""
        self.store.failing = True
        await self.say(text)
        await self.sink.wait(lambda: text in self.sink.texts())
        await self.matrix.stop()
        self.store.failing = False
        await self.matrix.start(self.sink)

    async def received(self) -> list[str]:
        response = await self.ann.room_messages(self.room, limit=100)
        assert isinstance(response, RoomMessagesResponse), response
        texts = []
        for event in reversed(response.chunk):  # newest first from the server
            content = event.source.get("content", {})
            if event.sender != self.peers.bot.user_id or content.get("msgtype") != "m.text":
                continue
            if "m.relates_to" in content or "org.nightshift.approval_id" in content:
                continue
            texts.append(str(content["body"]))
        return texts

    async def press_approve(self, prompt: ApprovalPrompt, platform_id: str) -> None:
        relation = {"rel_type": "m.annotation", "event_id": platform_id, "key": "👍"}
        response = await self.ann.room_send(self.room, "m.reaction", {"m.relates_to": relation})
        assert not isinstance(response, ErrorResponse), response

    def unreachable(self) -> Channel:
        return self.make(f"http://127.0.0.1:{free_port()}", self.peers.bot)


@pytest.fixture(scope="module")
def synapse_peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peers]:
    if not synapse_available():
        pytest.skip("Synapse not installed: run .ci/install-synapse")
    with Synapse(tmp_path_factory.mktemp("synapse")) as server:
        yield Peers(server)


@contextlib.asynccontextmanager
async def platform(request: pytest.FixtureRequest, name: str) -> AsyncIterator[Harness]:
    """The platform side for ``name``, before the channel starts."""
    if name == "console":
        harness = ConsoleHarness()
        yield harness
        harness.detach()
    elif name == "slack":
        async with FakeSlack() as slack:
            yield SlackHarness(slack)
    elif name == "telegram":
        async with FakeTelegram(TELEGRAM_TOKEN, chats=[ANN]) as telegram:
            yield TelegramHarness(telegram)
    else:
        peers: Peers = request.getfixturevalue("synapse_peers")
        ann = AsyncClient(peers.server.url, peers.ann.user_id, device_id=peers.ann.device_id)
        ann.access_token = peers.ann.access_token
        try:
            yield MatrixHarness(peers, ann)
        finally:
            await ann.close()


@pytest.fixture
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    """A started channel of the platform named by the param (stopped afterwards)."""
    async with platform(request, str(request.param)) as side:
        await side.channel.start(side.sink)
        try:
            if isinstance(side, MatrixHarness):
                await side.open_room()
            yield side
        finally:
            await side.channel.stop()


def out(text: str, target: str, outbox_id: int = 1) -> OutgoingMessage:
    return OutgoingMessage(outbox_id=outbox_id, target=target, text=text)


async def received_at_least(side: Harness, count: int) -> list[str]:
    """What the platform holds from the bot, once it holds ``count`` messages."""
    texts: list[str] = []

    async def enough() -> bool:
        texts[:] = await side.received()
        return len(texts) >= count

    deadline = time.monotonic() + 10
    while not await enough():
        assert time.monotonic() < deadline, f"the platform holds {texts}, expected {count}"
        await asyncio.sleep(0.05)
    return texts


# -- lifecycle -------------------------------------------------------------------------------


@pytest.mark.parametrize("harness", platforms(), indirect=True)
async def test_start_leaves_the_channel_up(harness: Harness) -> None:
    assert isinstance(harness.channel, Channel)
    health = harness.channel.health()
    assert health.state == "up", health


@pytest.mark.parametrize("harness", platforms(), indirect=True)
async def test_stop_is_prompt_and_idempotent(harness: Harness) -> None:
    async with asyncio.timeout(STOP_WITHIN_SECONDS):
        await harness.channel.stop()
    assert harness.channel.health().state == "stopped"
    async with asyncio.timeout(STOP_WITHIN_SECONDS):
        await harness.channel.stop()
    assert harness.channel.health().state == "stopped"


@pytest.mark.parametrize("harness", platforms("stopped"), indirect=True)
async def test_a_stopped_channel_refuses_to_send_and_the_outbox_keeps_it(
    harness: Harness,
) -> None:
    await harness.channel.stop()
    with pytest.raises(DeliveryError) as caught:
        await harness.channel.send(out("after stop", harness.room))
    assert not isinstance(caught.value, PermanentDeliveryError)
    assert "after stop" not in await harness.received()


@pytest.mark.parametrize("name", platforms("unreachable"))
async def test_an_unreachable_platform_is_down_with_a_reason(
    request: pytest.FixtureRequest, name: str
) -> None:
    async with platform(request, name) as side:
        channel = side.unreachable()
        sink = RecordingSink()
        try:
            await channel.start(sink)  # returns, bounded, with the loop retrying behind it
            await eventually(lambda: channel.health().state == "down")
            assert channel.health().detail, "down without a reason"
            with pytest.raises(DeliveryError) as caught:
                await channel.send(out("queued", side.room or "somewhere"))
            assert not isinstance(caught.value, PermanentDeliveryError)
        finally:
            async with asyncio.timeout(STOP_WITHIN_SECONDS):
                await channel.stop()
        assert channel.health().state == "stopped"


# -- outbound --------------------------------------------------------------------------------


@pytest.mark.parametrize("harness", platforms(), indirect=True)
async def test_send_delivers_to_the_target_in_order(harness: Harness) -> None:
    for number, text in enumerate(["first", "second", "third"], start=1):
        assert await harness.channel.send(out(text, harness.room, number))
    assert await received_at_least(harness, 3) == ["first", "second", "third"]


@pytest.mark.parametrize("harness", platforms(), indirect=True)
async def test_long_text_is_split_or_kept_whole_in_order(harness: Harness) -> None:
    await harness.channel.send(out(LONG_TEXT, harness.room))
    parts = await received_at_least(harness, 1)
    if harness.limit is None:
        assert parts == [LONG_TEXT]
    else:
        assert len(parts) > 1 and all(len(part) <= harness.limit for part in parts)
        assert " ".join(parts).split() == LONG_TEXT.split()


@pytest.mark.parametrize("harness", platforms("failures"), indirect=True)
async def test_a_refused_target_is_a_permanent_failure(harness: Harness) -> None:
    with pytest.raises(PermanentDeliveryError):
        await harness.channel.send(out("hello", harness.unknown_target))
    assert harness.channel.health().state == "up"


@pytest.mark.parametrize("harness", platforms("failures", "injected_failure"), indirect=True)
async def test_a_transient_failure_is_a_delivery_error_and_the_retry_arrives(
    harness: Harness,
) -> None:
    await harness.fail_next_send()
    with pytest.raises(DeliveryError) as caught:
        await harness.channel.send(out("retry me", harness.room))
    assert not isinstance(caught.value, PermanentDeliveryError)
    await harness.channel.send(out("retry me", harness.room))
    assert await received_at_least(harness, 1) == ["retry me"]


# -- inbound ---------------------------------------------------------------------------------


@pytest.mark.parametrize("harness", platforms("inbound"), indirect=True)
async def test_a_message_from_a_person_reaches_the_sink(harness: Harness) -> None:
    await harness.say("disk full on db1?")
    await harness.sink.wait(lambda: len(harness.sink.messages) >= 1)
    [message] = harness.sink.messages
    assert message.text == "disk full on db1?"
    assert (message.channel, message.room, message.direct) == (harness.name, harness.room, True)
    assert (message.sender_id, message.sender_name) == harness.person
    assert message.message_id


@pytest.mark.parametrize("harness", platforms("inbound"), indirect=True)
async def test_a_redelivered_message_reaches_the_sink_once(harness: Harness) -> None:
    await harness.say_twice("only once")
    await harness.say("next")  # comes after the redelivery: once it is in, so would be a copy
    await harness.sink.wait(lambda: "next" in harness.sink.texts())
    assert harness.sink.texts() == ["only once", "next"]


@pytest.mark.parametrize("harness", platforms("approvals"), indirect=True)
async def test_an_approve_press_comes_back_with_the_pressers_identity(harness: Harness) -> None:
    prompt = ApprovalPrompt(approval_id="ap-c1", text="restart nginx?", target=harness.room)
    platform_id = await harness.channel.ask_approval(prompt)
    assert platform_id
    await harness.press_approve(prompt, platform_id)
    await harness.sink.wait(lambda: len(harness.sink.answers) >= 1)
    [answer] = harness.sink.answers
    assert (answer.channel, answer.approval_id, answer.approved) == (harness.name, "ap-c1", True)
    assert (answer.user_id, answer.user_name) == harness.person
    await harness.channel.close_approval(prompt, platform_id, "approved by ann")
