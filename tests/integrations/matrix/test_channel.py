"""The Matrix channel with the real matrix-nio against a REAL Synapse (``.ci/install-synapse``).

One homeserver per module (~4 s to generate and start); users ``bot`` (the channel), ``ann``
(allowed) and ``eve`` (a stranger) act through their own nio clients.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from nio import (
    AsyncClient,
    ErrorResponse,
    RoomCreateResponse,
    RoomGetEventResponse,
    RoomMessagesResponse,
    RoomSendError,
)
from pydantic import SecretStr

from daemon.core.errors import DeliveryError, PermanentDeliveryError
from integrations.base import (
    ApprovalAnswer,
    ApprovalOutcome,
    ApprovalPrompt,
    Channel,
    OutgoingMessage,
)
from integrations.matrix.channel import TOKEN_DETAIL, MatrixChannel
from integrations.matrix.events import FileSyncTokenStore, addressed_text, reaction_vote
from integrations.matrix.settings import MatrixChannelSettings
from tests.integrations.sink import RecordingSink, eventually
from tests.peers.synapse import MatrixUser, Synapse, free_port, synapse_available


class DictTokenStore:
    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    async def load(self) -> str | None:
        return self.data.get("token")

    async def save(self, token: str) -> None:
        self.data["token"] = token


class Peers:
    def __init__(self, server: Synapse) -> None:
        self.server = server
        self.bot = server.register("bot")
        self.ann = server.register("ann")
        self.eve = server.register("eve")


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peers]:
    if not synapse_available():
        pytest.skip("Synapse not installed: run .ci/install-synapse")
    with Synapse(tmp_path_factory.mktemp("synapse")) as server:
        yield Peers(server)


def settings(peers: Peers, *, token: str | None = None, url: str | None = None) -> Any:
    return MatrixChannelSettings(
        enabled=True,
        homeserver=url or peers.server.url,
        user_id=peers.bot.user_id,
        access_token=SecretStr(token or peers.bot.access_token),
        users={peers.ann.user_id: "operator"},
    )


def make_channel(peers: Peers, store: DictTokenStore | None = None, **kw: Any) -> MatrixChannel:
    return MatrixChannel(
        settings(peers, **kw),
        sync_token_store=store,
        sync_timeout=5,
        start_timeout=5,
        backoff_initial=0.1,
        backoff_max=0.5,
    )


@pytest.fixture
async def channel(peers: Peers) -> AsyncIterator[tuple[MatrixChannel, RecordingSink]]:
    sink = RecordingSink()
    chan = make_channel(peers, DictTokenStore())
    await chan.start(sink)
    assert chan.health().state == "up", chan.health()
    try:
        yield chan, sink
    finally:
        await chan.stop()


async def as_user(peers: Peers, user: MatrixUser) -> AsyncClient:
    client = AsyncClient(peers.server.url, user.user_id, device_id=user.device_id)
    client.access_token = user.access_token
    return client


@pytest.fixture
async def ann(peers: Peers) -> AsyncIterator[AsyncClient]:
    client = await as_user(peers, peers.ann)
    yield client
    await client.close()


@pytest.fixture
async def eve(peers: Peers) -> AsyncIterator[AsyncClient]:
    client = await as_user(peers, peers.eve)
    yield client
    await client.close()


async def create_room(client: AsyncClient, *invite: str, direct: bool = True) -> str:
    response = await client.room_create(is_direct=direct, invite=list(invite))
    assert isinstance(response, RoomCreateResponse), response
    return str(response.room_id)


async def say(client: AsyncClient, room: str, text: str, **extra: Any) -> str:
    content = {"msgtype": "m.text", "body": text, **extra}
    response = await client.room_send(room, "m.room.message", content)
    assert not isinstance(response, ErrorResponse), response
    return str(response.event_id)


async def until_joined(client: AsyncClient, room: str, user_id: str) -> None:
    deadline = time.monotonic() + 10
    while True:
        response = await client.joined_members(room)
        if user_id in [member.user_id for member in getattr(response, "members", [])]:
            return
        assert time.monotonic() < deadline, f"{user_id} did not join {room}"
        await asyncio.sleep(0.05)


async def content_of(client: AsyncClient, room: str, event_id: str) -> dict[str, Any]:
    response = await client.room_get_event(room, event_id)
    assert isinstance(response, RoomGetEventResponse), response
    return dict(response.event.source["content"])


async def test_dm_from_ann_reaches_the_sink_and_the_reply_appears(
    peers: Peers, channel: tuple[MatrixChannel, RecordingSink], ann: AsyncClient
) -> None:
    chan, sink = channel
    assert isinstance(chan, Channel)
    room = await create_room(ann, peers.bot.user_id)
    sent = await say(ann, room, "disk full on web1?")
    await eventually(lambda: len(sink.messages) == 1)
    message = sink.messages[0]
    assert (message.channel, message.sender_id, message.room) == ("matrix", "@ann:localhost", room)
    assert (message.text, message.direct, message.message_id) == ("disk full on web1?", True, sent)
    assert message.sender_name == "ann" and message.thread is None

    event_id = await chan.send(OutgoingMessage(outbox_id=1, target=room, text="checking"))
    assert (await content_of(ann, room, event_id))["body"] == "checking"

    threaded = OutgoingMessage(outbox_id=2, target=room, text="in thread", thread=sent)
    reply = await chan.send(threaded)
    relation = (await content_of(ann, room, reply))["m.relates_to"]
    assert relation["rel_type"] == "m.thread" and relation["event_id"] == sent

    in_thread = {"m.relates_to": {"rel_type": "m.thread", "event_id": sent}}
    await say(ann, room, "thanks", **in_thread)
    await eventually(lambda: len(sink.messages) == 2)
    assert sink.messages[1].thread == sent and sink.messages[1].conversation_key == f"{room}:{sent}"

    await chan.edit(room, event_id, "checked: 91% used")
    assert sink.texts() == ["disk full on web1?", "thanks"]  # our own events never come back


async def test_group_rooms_need_a_mention(
    peers: Peers, channel: tuple[MatrixChannel, RecordingSink], ann: AsyncClient, eve: AsyncClient
) -> None:
    _, sink = channel
    room = await create_room(ann, peers.bot.user_id, peers.eve.user_id, direct=False)
    assert not isinstance(await eve.join(room), ErrorResponse)
    await say(ann, room, "lunch anyone?")
    await say(ann, room, "bot: status please")
    await say(eve, room, "@bot:localhost uptime?")
    await say(ann, room, "bot: marker")  # the timeline is in order: ignored ones came before
    await eventually(lambda: len(sink.messages) >= 3)
    assert sink.texts() == ["status please", "uptime?", "marker"]
    assert [m.direct for m in sink.messages] == [False, False, False]
    assert sink.messages[1].sender_id == "@eve:localhost"


async def test_invites_from_strangers_are_rejected(
    peers: Peers, channel: tuple[MatrixChannel, RecordingSink], eve: AsyncClient
) -> None:
    _, sink = channel
    room = await create_room(eve, peers.bot.user_id)
    await say(eve, room, "let me in")

    async def membership() -> str:
        response = await eve.room_get_state_event(room, "m.room.member", peers.bot.user_id)
        return str(getattr(response, "content", {}).get("membership"))

    deadline = time.monotonic() + 10
    while await membership() != "leave":
        assert time.monotonic() < deadline, "the invite was not rejected"
        await asyncio.sleep(0.05)
    assert sink.messages == []


async def test_a_reaction_on_an_approval_prompt_answers_it(
    peers: Peers, channel: tuple[MatrixChannel, RecordingSink], ann: AsyncClient
) -> None:
    chan, sink = channel
    room = await create_room(ann, peers.bot.user_id)
    await say(ann, room, "restart nginx")
    await eventually(lambda: len(sink.messages) == 1)
    prompt = ApprovalPrompt(
        approval_id="ap-7", text="Restart nginx? reply approve ap-7 or deny ap-7", target=room
    )
    event_id = await chan.ask_approval(prompt)
    assert "approve ap-7" in (await content_of(ann, room, event_id))["body"]

    reaction = {"m.relates_to": {"rel_type": "m.annotation", "event_id": event_id, "key": "👍️"}}
    assert not isinstance(await ann.room_send(room, "m.reaction", reaction), ErrorResponse)
    await eventually(lambda: len(sink.answers) == 1)
    assert sink.answers == [
        ApprovalAnswer(
            channel="matrix",
            approval_id="ap-7",
            approved=True,
            user_id="@ann:localhost",
            user_name="ann",
        )
    ]
    await chan.close_approval(prompt, event_id, "approved by ann")


async def test_reactions_count_after_a_restart_and_a_failing_sink_gets_the_batch_again(
    peers: Peers, ann: AsyncClient
) -> None:
    store, sink = DictTokenStore(), RecordingSink()
    chan = make_channel(peers, store)
    await chan.start(sink)
    try:
        room = await create_room(ann, peers.bot.user_id)
        await until_joined(ann, room, peers.bot.user_id)
        prompt = ApprovalPrompt(approval_id="ap-9", text="Reboot? approve ap-9", target=room)
        event_id = await chan.ask_approval(prompt)
    finally:
        await chan.stop()

    chan = make_channel(peers, store)  # a new process: the prompt id is read from the event
    await chan.start(sink)
    try:
        sink.fail = 2
        await say(ann, room, "wait")
        reaction = {"m.relates_to": {"rel_type": "m.annotation", "event_id": event_id, "key": "❌"}}
        assert not isinstance(await ann.room_send(room, "m.reaction", reaction), ErrorResponse)
        await eventually(lambda: len(sink.answers) == 1 and len(sink.messages) == 1)
        await say(ann, room, "marker")  # after it, a redelivery would have shown
        await eventually(lambda: len(sink.messages) == 2)
        assert sink.texts() == ["wait", "marker"]
        assert [(a.approval_id, a.approved) for a in sink.answers] == [("ap-9", False)]
    finally:
        await chan.stop()


async def test_restart_resumes_from_the_saved_sync_token_exactly_once(
    peers: Peers, ann: AsyncClient
) -> None:
    store, sink = DictTokenStore(), RecordingSink()
    chan = make_channel(peers, store)
    await chan.start(sink)
    try:
        room = await create_room(ann, peers.bot.user_id)
        await say(ann, room, "one")
        await eventually(lambda: sink.texts() == ["one"])
        token = store.data["token"]
    finally:
        await chan.stop()
    await say(ann, room, "two (while away)")

    chan = make_channel(peers, store)
    await chan.start(sink)
    try:
        await eventually(lambda: len(sink.messages) >= 2)
        await say(ann, room, "three")
        await say(ann, room, "marker")  # after it, a redelivery would have shown
        await eventually(lambda: len(sink.messages) >= 4)
        assert sink.texts() == ["one", "two (while away)", "three", "marker"]
        assert store.data["token"] != token
    finally:
        await chan.stop()


async def test_first_start_without_a_token_skips_the_backlog(
    peers: Peers, ann: AsyncClient
) -> None:
    room = await create_room(ann, peers.bot.user_id)
    chan = make_channel(peers, DictTokenStore())
    await chan.start(RecordingSink())  # joins on ann's invite
    try:
        await until_joined(ann, room, peers.bot.user_id)
    finally:
        await chan.stop()
    await say(ann, room, "old news")
    sink = RecordingSink()
    chan = make_channel(peers, DictTokenStore())
    await chan.start(sink)
    try:
        await say(ann, room, "new")
        await eventually(lambda: sink.texts() == ["new"])
    finally:
        await chan.stop()


async def test_a_bad_token_shows_in_health_and_start_returns(peers: Peers) -> None:
    chan = make_channel(peers, token="syt_not_a_real_token")
    started = time.monotonic()
    await chan.start(RecordingSink())
    try:
        assert time.monotonic() - started < 5
        assert chan.health().state == "down"
        assert chan.health().detail == TOKEN_DETAIL
        with pytest.raises(DeliveryError):
            await chan.send(OutgoingMessage(outbox_id=1, target="!x:localhost", text="hi"))
        assert chan.health().detail == TOKEN_DETAIL
    finally:
        await chan.stop()
    assert chan.health().state == "stopped"


async def test_a_homeserver_that_is_down_keeps_start_bounded(peers: Peers) -> None:
    chan = make_channel(peers, url=f"http://127.0.0.1:{free_port()}")
    started = time.monotonic()
    await chan.start(RecordingSink())
    try:
        assert time.monotonic() - started < 5
        health = chan.health()
        assert health.state == "down" and "cannot reach" in health.detail
        with pytest.raises(DeliveryError) as caught:
            await chan.send(OutgoingMessage(outbox_id=1, target="!x:localhost", text="hi"))
        assert not isinstance(caught.value, PermanentDeliveryError)
    finally:
        await chan.stop()


async def test_delivery_errors_follow_the_contract(
    peers: Peers, channel: tuple[MatrixChannel, RecordingSink]
) -> None:
    chan, _ = channel
    with pytest.raises(PermanentDeliveryError):
        await chan.send(OutgoingMessage(outbox_id=1, target="!nowhere:localhost", text="hi"))
    with pytest.raises(PermanentDeliveryError, match="default_room"):
        await chan.send(OutgoingMessage(outbox_id=2, target="", text="hi"))
    limited = RoomSendError("Too many requests", "M_LIMIT_EXCEEDED", retry_after_ms=1500)
    error = chan._delivery_error(limited, "m.room.message")
    assert isinstance(error, DeliveryError)
    with pytest.raises(DeliveryError) as caught:
        raise error
    assert caught.value.retry_after == 1.5
    assert chan.health().state == "up"


def test_mentions_and_reactions_are_parsed() -> None:
    me = "@bot:localhost"
    assert addressed_text("Nightshift: df -h?", {}, me, ["Nightshift"]) == "df -h?"
    assert addressed_text("hey @bot:localhost, ping", {}, me, ["bot"]) == "hey ping"
    assert addressed_text("robots are fine", {}, me, ["bot"]) is None
    mentions = {"m.mentions": {"user_ids": [me]}}
    assert addressed_text("status?", mentions, me, []) == "status?"
    assert [reaction_vote(k) for k in ("👍🏽", "✅", "👎", "❌", "🎉")] == [
        True, True, False, False, None,
    ]  # fmt: skip


async def test_file_token_store_round_trips(tmp_path: Path) -> None:
    store = FileSyncTokenStore(tmp_path / "state" / "matrix.sync")
    assert await store.load() is None
    await store.save("s72_1")
    assert await store.load() == "s72_1"


async def test_a_refused_reaction_is_told_why_once_in_the_room(
    peers: Peers, channel: tuple[MatrixChannel, RecordingSink], ann: AsyncClient
) -> None:
    chan, sink = channel
    sink.outcome = ApprovalOutcome(text="Not done: viewers cannot approve", accepted=False)
    room = await create_room(ann, peers.bot.user_id)
    await say(ann, room, "restart nginx")
    await eventually(lambda: len(sink.messages) == 1)
    prompt = ApprovalPrompt(approval_id="ap-8", text="Restart? approve ap-8", target=room)
    event_id = await chan.ask_approval(prompt)
    for key in ("👍️", "❌"):  # two presses, one notice
        reaction = {"m.relates_to": {"rel_type": "m.annotation", "event_id": event_id, "key": key}}
        assert not isinstance(await ann.room_send(room, "m.reaction", reaction), ErrorResponse)
    await eventually(lambda: len(sink.answers) == 2)

    async def notices() -> list[str]:
        response = await ann.room_messages(room, limit=50)
        assert isinstance(response, RoomMessagesResponse), response
        return [
            e.source["content"]["body"]
            for e in response.chunk
            if e.source.get("content", {}).get("msgtype") == "m.notice"
        ]

    for _ in range(100):
        if await notices():
            break
        await asyncio.sleep(0.05)
    assert await notices() == ["@ann:localhost: Not done: viewers cannot approve"]
