"""The API listeners: the socket path is only ever cleared of our own dead socket, and a busy
port or a foreign file is a config error (exit 78) naming the key, never a traceback."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import aiohttp
import pytest

from daemon.config import load_settings
from daemon.core.clock import SystemClock
from daemon.core.errors import ConfigError
from daemon.runtime.api import ApiServer
from tests.support import DaemonProcess, write_config


def server(tmp_path: Path, **api: object) -> ApiServer:
    """An ApiServer on its own; no request reaches the runtime (the webhook needs no intake)."""
    settings = load_settings(None, state_dir=tmp_path, overrides={"api": api} if api else None)
    runtime = SimpleNamespace(
        settings=settings, incident_manager=None, clock=SystemClock(), webhook_stats=None
    )
    return ApiServer(cast(Any, runtime), settings.socket_path)


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


async def test_a_file_at_the_socket_path_is_left_alone_and_named(tmp_path: Path) -> None:
    path = tmp_path / "nightshift.sock"
    path.write_text("someone's notes")
    api = server(tmp_path)
    with pytest.raises(ConfigError) as info:
        await api.start()
    await api.stop()
    assert f"api.socket: {path} exists and is not a socket" in str(info.value)
    assert path.read_text() == "someone's notes"


async def test_a_directory_at_the_socket_path_is_named(tmp_path: Path) -> None:
    (tmp_path / "nightshift.sock").mkdir()
    api = server(tmp_path)
    with pytest.raises(ConfigError, match="exists and is a directory"):
        await api.start()
    await api.stop()
    assert (tmp_path / "nightshift.sock").is_dir()


async def test_a_socket_another_program_listens_on_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "nightshift.sock"
    accepted = asyncio.Event()

    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set()
        writer.close()
        await writer.wait_closed()

    other = await asyncio.start_unix_server(greet, str(path))
    try:
        api = server(tmp_path)
        with pytest.raises(ConfigError) as info:
            await api.start()
        await api.stop()
        assert f"api.socket: another program is listening on {path}" in str(info.value)
        await asyncio.wait_for(accepted.wait(), 10)
        _, writer = await asyncio.open_unix_connection(str(path))  # still theirs, still there
        writer.close()
        await writer.wait_closed()
    finally:
        other.close()
        await other.wait_closed()


async def test_a_stale_socket_is_replaced_and_ours_removed_at_stop(tmp_path: Path) -> None:
    path = tmp_path / "nightshift.sock"
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(path))
    dead.close()  # a crashed daemon's socket: the file stays, nobody listens
    api = server(tmp_path)
    await api.start()
    try:
        connector = aiohttp.UnixConnector(path=str(path))
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get("http://local/nowhere") as response,
        ):
            assert response.status == 404  # our (aiohttp) server answers
    finally:
        await api.stop()
    assert not path.exists()


async def test_stop_never_deletes_a_file_put_in_place_of_our_socket(tmp_path: Path) -> None:
    path = tmp_path / "nightshift.sock"
    api = server(tmp_path)
    await api.start()
    path.unlink()
    path.write_text("not ours")
    await api.stop()
    assert path.read_text() == "not ours"


async def test_a_busy_tcp_port_is_named(tmp_path: Path, busy_port: int) -> None:
    api = server(tmp_path, tcp_port=busy_port)
    with pytest.raises(ConfigError) as info:
        await api.start()
    await api.stop()
    assert f"api.tcp_port: port {busy_port} on 127.0.0.1 is already in use" in str(info.value)
    assert not (tmp_path / "nightshift.sock").exists()  # our socket is cleaned up


async def test_an_address_not_on_this_host_is_named(tmp_path: Path) -> None:
    api = server(tmp_path, tcp_host="192.0.2.1", tcp_port=9)  # TEST-NET-1: never local
    with pytest.raises(ConfigError, match=r"api.tcp_host: cannot listen on 192.0.2.1:9"):
        await api.start()
    await api.stop()


async def test_run_exits_78_when_the_tcp_port_is_in_use(tmp_path: Path, busy_port: int) -> None:
    config = write_config(tmp_path / "config.toml", None, api={"tcp_port": busy_port})
    daemon = DaemonProcess(config, tmp_path / "state")
    await daemon.start(wait_ready=False)
    try:
        assert await daemon.wait() == 78
    finally:
        await daemon.stop()
    output = await daemon.output()
    assert f"api.tcp_port: port {busy_port} on 127.0.0.1 is already in use" in output
    assert "Traceback" not in output


async def test_run_exits_78_rather_than_delete_a_file_at_the_socket_path(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "nightshift.sock").write_text("keep me")
    daemon = DaemonProcess(write_config(tmp_path / "config.toml", None), state)
    await daemon.start(wait_ready=False)
    try:
        assert await daemon.wait() == 78
    finally:
        await daemon.stop()
    assert "api.socket: " in await daemon.output()
    assert (state / "nightshift.sock").read_text() == "keep me"
