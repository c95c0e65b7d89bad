"""End to end, hostile senders against `nightshift run`'s TCP listener (webhook, /healthz).

Text that cannot be stored is a 400 naming it (never a 503 Alertmanager would retry forever); a
malformed Authorization header never reaches the log; connections that never finish their
headers or body are closed; a flood of connections under a low open-file limit is refused with
503s and one warning line, and /healthz answers again once it is over.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from tests.peers.alertmanager import free_port
from tests.support import DaemonProcess

TOKEN = "hunter2-WEBHOOK-9f8e7d6c5b"
PATH = "/v1/webhooks/alertmanager"
GUARD = 30.0  # how long a test waits for what it expects before failing


def config(port: int, api_extra: str = "") -> str:
    return (
        f'[api]\ntcp_port = {port}\nwebhook_token = "{TOKEN}"\n{api_extra}'
        "[incidents]\ngroup_wait_seconds = 0.2\ngroup_interval_seconds = 1.0\n"
        "[watchers.host]\nenabled = false\n"
    )


Start = Callable[..., Awaitable[DaemonProcess]]


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Start]:
    daemons: list[DaemonProcess] = []

    async def run(api_extra: str = "", nofile: int | None = None) -> DaemonProcess:
        port = free_port()
        path = tmp_path / "config.toml"
        path.write_text(config(port, api_extra))
        daemon = DaemonProcess(path, tmp_path / "state", nofile=nofile)
        daemon.port = port  # type: ignore[attr-defined]
        daemons.append(daemon)
        await daemon.start()
        return daemon

    yield run
    for daemon in daemons:
        await daemon.stop()


async def exchange(port: int, raw: bytes) -> bytes:
    """Send raw bytes, return everything the daemon answers until it closes or GUARD passes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), GUARD)
    finally:
        writer.close()


def post(body: bytes, authorization: bytes = b"Bearer " + TOKEN.encode()) -> bytes:
    return (
        b"POST " + PATH.encode() + b" HTTP/1.1\r\nHost: nightshift\r\nConnection: close\r\n"
        b"Authorization: " + authorization + b"\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


def status_and_body(answer: bytes) -> tuple[int, str]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode(errors="replace")


async def healthz(port: int) -> int:
    answer = await exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    return status_and_body(answer)[0]


def alert_payload(**labels: str) -> dict[str, object]:
    return {
        "version": "4",
        "status": "firing",
        "groupKey": "{}:{}",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "DiskFull", "severity": "warning", **labels},
                "annotations": {},
                "startsAt": "2026-11-22T11:58:01Z",
                "endsAt": "0001-01-01T00:00:00Z",
            }
        ],
    }


def stored_events(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        # payload events only, not the refusal alarm of our own (source 'nightshift')
        sql = "SELECT count(*) FROM alert_events WHERE source != 'nightshift'"
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


async def test_text_that_cannot_be_stored_is_a_400_naming_it_not_a_503(start: Start) -> None:
    daemon = await start()
    port = daemon.port  # type: ignore[attr-defined]

    surrogate = json.dumps(alert_payload(instance="\ud800")).encode()  # JSON "\ud800"
    status, body = status_and_body(await exchange(port, post(surrogate)))
    assert status == 400, body
    assert "alerts[0].labels.instance" in body and "lone surrogate" in body

    bad_utf8 = json.dumps(alert_payload(instance="db1")).encode().replace(b"db1", b"db\xff")
    status, body = status_and_body(await exchange(port, post(bad_utf8)))
    assert status == 400, body
    assert "not valid UTF-8" in body and "0xff" in body

    huge_number = b'{"version": ' + b"9" * 5000 + b"}"
    status, body = status_and_body(await exchange(port, post(huge_number)))
    assert status == 400, body

    good = json.dumps(alert_payload(instance="db1")).encode()
    status, body = status_and_body(await exchange(port, post(good)))
    assert (status, json.loads(body)) == (200, {"accepted": 1})
    assert stored_events(daemon.state_dir / "nightshift.db") == 1
    assert await healthz(port) == 200


async def test_a_malformed_authorization_header_is_never_logged(start: Start) -> None:
    daemon = await start()
    port = daemon.port  # type: ignore[attr-defined]
    body = json.dumps(alert_payload()).encode()
    malformed = [
        b"Bearer " + TOKEN.encode() + b"\x01",  # control character
        b"Bearer " + TOKEN.encode() + b"\rx",  # bare CR
        b"Bearer " + TOKEN.encode()[:-1] + b"\xff",  # not ASCII
        b"Basic " + TOKEN.encode(),  # wrong scheme
    ]
    requests = [post(body, auth) for auth in malformed]
    requests.append(post(body).replace(b"Authorization: ", b"Authorization "))  # no colon
    answers = [status_and_body(await exchange(port, raw)) for raw in requests]

    assert [status for status, _ in answers] == [400, 400, 401, 401, 400]
    assert "Invalid header value char" in answers[0][1]  # the problem, named
    assert await healthz(port) == 200
    log = await daemon.output()
    assert "refused a malformed HTTP request from 127.0.0.1" in log
    for fragment in ("hunter2", "WEBHOOK", "9f8e7d6c5b", "9f8e7d"):
        assert fragment not in log, log
        for _, text in answers:  # nor echoed to a sender that might log our answer
            assert fragment not in text, text
    assert "Traceback" not in log


async def test_connections_that_never_finish_headers_or_body_are_closed(start: Start) -> None:
    daemon = await start("header_timeout_seconds = 0.5\nbody_timeout_seconds = 0.5\n")
    port = daemon.port  # type: ignore[attr-defined]

    silent = await exchange(port, b"")  # connects, says nothing
    partial_headers = await exchange(port, b"POST " + PATH.encode() + b" HTTP/1.1\r\nHost: x\r\n")
    assert silent == b"" and partial_headers == b""  # closed without an answer

    full = post(b"x" * 5000)
    status, body = status_and_body(await exchange(port, full[: len(full) - 4900]))
    assert status == 408 and "body not received within 0.5 s" in body

    # the CLI's unix socket too: a local client that stalls mid-body does not hold a handler
    reader, writer = await asyncio.open_unix_connection(daemon.state_dir / "nightshift.sock")
    writer.write(b'POST /v1/command HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"te')
    status, body = status_and_body(await asyncio.wait_for(reader.read(), GUARD))
    writer.close()
    assert status == 408 and "body not received within 0.5 s" in body

    assert await healthz(port) == 200


async def test_by_default_unfinished_headers_are_closed_within_the_header_timeout(
    start: Start,
) -> None:
    daemon = await start()  # the defaults: aiohttp alone would wait 3630 s
    port = daemon.port  # type: ignore[attr-defined]
    partial = b"POST " + PATH.encode() + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bear"
    assert list(await asyncio.gather(exchange(port, b""), exchange(port, partial))) == [b"", b""]


async def test_a_connection_flood_under_a_low_fd_limit_is_refused_cleanly(start: Start) -> None:
    """Over the cap every connection gets a 503 and is closed; the daemon never runs out of
    descriptors for its own work. The flood comes in waves: one burst of 300 overflows the
    kernel's listen queue, and when those clients get through (SYN-ACK retries, seconds later)
    depends on the machine's speed, not on nightshift."""
    daemon = await start(nofile=256)  # cap: 256 - FD_RESERVE = 128 connections
    port = daemon.port  # type: ignore[attr-defined]
    flood, cap, wave = 300, 128, 43  # more than the daemon has descriptors, in 4 waves

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", port)

    held = await asyncio.gather(*(connect() for _ in range(cap)))
    for _ in range(int(GUARD / 0.05)):  # the daemon holds them all: the next one is refused
        if await healthz(port) == 503:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"the daemon never held {cap} connections")
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    refused = 0
    try:
        for _ in range(0, flood - cap, wave):
            batch = await asyncio.gather(*(connect() for _ in range(wave)))
            conns += batch
            async with asyncio.timeout(GUARD):
                answers = await asyncio.gather(*(reader.read(12) for reader, _ in batch))
            refused += sum(answer.startswith(b"HTTP/1.1 503") for answer in answers)
    finally:
        for _, writer in held + conns:
            writer.close()
    assert refused == len(conns) == 172

    for _ in range(int(GUARD / 0.05)):  # the held connections close; the API serves again
        if await healthz(port) == 200:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("/healthz never answered 200 after the flood")
    log = await daemon.output()
    assert "Traceback" not in log, log
    assert log.count("refusing new ones with 503") == 1, log
