"""SystemdNotifier against a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.runtime.sdnotify import SystemdNotifier


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket and the NOTIFY_SOCKET value that reaches it."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(2)
        yield sock, str(path)


def receive(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


def drain(sock: socket.socket) -> None:
    sock.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        while True:
            sock.recv(4096)


def assert_nothing_queued(sock: socket.socket) -> None:
    sock.setblocking(False)
    with pytest.raises(BlockingIOError):
        sock.recv(4096)


def test_without_notify_socket_everything_is_a_no_op() -> None:
    notifier = SystemdNotifier({"WATCHDOG_USEC": "30000000"})

    assert not notifier.enabled
    assert notifier.ready("up") is False
    assert notifier.status("x") is False
    assert notifier.watchdog() is False
    assert notifier.watchdog_interval() is None


async def test_run_watchdog_returns_at_once_without_a_watchdog(
    notify_socket: tuple[socket.socket, str],
) -> None:
    sock, address = notify_socket

    await asyncio.wait_for(SystemdNotifier({"NOTIFY_SOCKET": address}).run_watchdog(), 1)

    assert_nothing_queued(sock)


def test_ready_status_stopping_and_watchdog_arrive_as_datagrams(
    notify_socket: tuple[socket.socket, str],
) -> None:
    sock, address = notify_socket
    notifier = SystemdNotifier({"NOTIFY_SOCKET": address})

    assert notifier.enabled
    assert notifier.ready()
    assert receive(sock) == "READY=1"
    assert notifier.ready("watching 3 services")
    assert receive(sock) == "READY=1\nSTATUS=watching 3 services"
    assert notifier.status("draining 2 runs")
    assert receive(sock) == "STATUS=draining 2 runs"
    assert notifier.stopping()
    assert receive(sock) == "STOPPING=1"
    assert notifier.watchdog()
    assert receive(sock) == "WATCHDOG=1"
    assert notifier.extend_timeout(30)
    assert receive(sock) == "EXTEND_TIMEOUT_USEC=30000000"


def test_reloading_carries_the_monotonic_clock(notify_socket: tuple[socket.socket, str]) -> None:
    sock, address = notify_socket
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000

    assert SystemdNotifier({"NOTIFY_SOCKET": address}).reloading()

    lines = receive(sock).split("\n")
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert lines[0] == "RELOADING=1"
    key, value = lines[1].split("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after


def test_raw_message_is_sent_verbatim(notify_socket: tuple[socket.socket, str]) -> None:
    sock, address = notify_socket

    assert SystemdNotifier({"NOTIFY_SOCKET": address}).notify("STATUS=a\nERRNO=5")

    assert receive(sock) == "STATUS=a\nERRNO=5"


def test_a_newline_in_a_value_cannot_inject_a_field(
    notify_socket: tuple[socket.socket, str],
) -> None:
    sock, address = notify_socket

    SystemdNotifier({"NOTIFY_SOCKET": address}).status("bad\nREADY=1")

    assert receive(sock) == "STATUS=bad READY=1"


def test_abstract_namespace_socket() -> None:
    name = f"nightshift-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(2)

        assert SystemdNotifier({"NOTIFY_SOCKET": f"@{name}"}).ready()

        assert receive(sock) == "READY=1"


def test_send_failure_returns_false_and_logs_at_debug(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})

    with caplog.at_level(logging.DEBUG, logger="daemon.runtime.sdnotify"):
        assert notifier.ready() is False

    assert notifier.enabled
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]
    assert "nobody-listens" in caplog.text


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        ({"WATCHDOG_USEC": "500"}, 0.00025),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "x"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "thirty"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_the_timeout_and_only_for_this_process(
    environ: dict[str, str], expected: float | None
) -> None:
    notifier = SystemdNotifier({"NOTIFY_SOCKET": "/run/systemd/notify", **environ})

    assert notifier.watchdog_interval() == expected


async def test_run_watchdog_pings_every_interval(notify_socket: tuple[socket.socket, str]) -> None:
    sock, address = notify_socket
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    notifier = SystemdNotifier({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "40000"})  # 20 ms

    task = asyncio.create_task(notifier.run_watchdog())
    try:
        pings = [await asyncio.wait_for(loop.sock_recv(sock, 4096), 2) for _ in range(3)]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    assert pings == [b"WATCHDOG=1"] * 3


async def test_a_blocked_event_loop_stops_the_pings(
    notify_socket: tuple[socket.socket, str],
) -> None:
    sock, address = notify_socket
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    notifier = SystemdNotifier({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "20000"})  # 10 ms

    task = asyncio.create_task(notifier.run_watchdog())
    try:
        await asyncio.wait_for(loop.sock_recv(sock, 4096), 2)
        drain(sock)  # no await from here on: the watchdog task cannot run
        time.sleep(0.1)  # noqa: ASYNC251 -- a stuck loop, on purpose: ten intervals pass
        assert_nothing_queued(sock)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
