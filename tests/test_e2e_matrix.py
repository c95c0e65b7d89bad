"""End to end over Matrix: `nightshift run` with matrix-nio against a real Synapse homeserver
and the fake Kimi server: a DM from an allowed user is answered; after a restart the sync token
from the database keeps old messages from being answered twice."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from nio import AsyncClient, RoomCreateResponse, RoomMessagesResponse

from tests.fakes.chat_completions import FakeChatServer, Reply
from tests.peers.synapse import MatrixUser, Synapse, synapse_available
from tests.support import DaemonProcess, write_config


@pytest.fixture(scope="module")
def synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synapse]:
    if not synapse_available():
        pytest.skip("Synapse not installed: run .ci/install-synapse")
    with Synapse(tmp_path_factory.mktemp("synapse")) as server:
        yield server


@pytest.fixture
def users(synapse: Synapse) -> tuple[MatrixUser, MatrixUser]:
    suffix = str(int(time.monotonic() * 1000))
    return synapse.register(f"bot{suffix}"), synapse.register(f"ann{suffix}")


@pytest.fixture
async def ann(synapse: Synapse, users: tuple[MatrixUser, MatrixUser]) -> AsyncIterator[AsyncClient]:
    user = users[1]
    client = AsyncClient(synapse.url, user.user_id, device_id=user.device_id)
    client.access_token = user.access_token
    yield client
    await client.close()


def matrix_config(
    tmp_path: Path, llm: FakeChatServer, synapse: Synapse, users: tuple[MatrixUser, MatrixUser]
) -> Path:
    bot, ann = users
    config = write_config(tmp_path / "config.toml", llm.base_url)
    config.write_text(
        config.read_text() + f'[channels.matrix]\nenabled = true\nhomeserver = "{synapse.url}"\n'
        f'user_id = "{bot.user_id}"\naccess_token = "{bot.access_token}"\n'
        f'[channels.matrix.users]\n"{ann.user_id}" = "operator"\n'
    )
    return config


async def texts_in(client: AsyncClient, room: str) -> list[str]:
    response = await client.room_messages(room, start="", limit=50)
    assert isinstance(response, RoomMessagesResponse), response
    return [
        str(event.source["content"].get("body", ""))
        for event in reversed(response.chunk)
        if event.source.get("type") == "m.room.message"
    ]


async def wait_for_text(client: AsyncClient, room: str, needle: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(needle in text for text in await texts_in(client, room)):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{needle!r} never appeared: {await texts_in(client, room)}")


async def test_a_dm_is_answered_and_a_restart_does_not_answer_it_again(
    tmp_path: Path,
    fake_llm: FakeChatServer,
    synapse: Synapse,
    users: tuple[MatrixUser, MatrixUser],
    ann: AsyncClient,
) -> None:
    config = matrix_config(tmp_path, fake_llm, synapse, users)
    daemon = DaemonProcess(config, tmp_path / "state")
    await daemon.start()
    try:
        created = await ann.room_create(is_direct=True, invite=[users[0].user_id])
        assert isinstance(created, RoomCreateResponse), created
        room = str(created.room_id)
        fake_llm.script(Reply(content="Matrix says hello."))
        await ann.room_send(room, "m.room.message", {"msgtype": "m.text", "body": "hi bot"})
        await wait_for_text(ann, room, "Matrix says hello.")
        code, out, _ = await daemon.cli("status", "--json")
        assert json.loads(out)["channels"]["matrix"]["state"] == "up"
    finally:
        assert await daemon.stop() == 0

    again = DaemonProcess(config, tmp_path / "state")
    await again.start()
    try:
        fake_llm.script(Reply(content="Second answer."))
        await ann.room_send(room, "m.room.message", {"msgtype": "m.text", "body": "again"})
        await wait_for_text(ann, room, "Second answer.")
        texts = await texts_in(ann, room)
        assert texts.count("Matrix says hello.") == 1  # the old DM was not answered twice
        assert fake_llm.calls == 2
    finally:
        assert await again.stop() == 0
