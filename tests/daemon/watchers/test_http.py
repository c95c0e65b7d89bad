"""HttpCheckWatcher against real aiohttp servers (plain and TLS) on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from pydantic import ValidationError

from daemon.core.alerts import Observation
from daemon.core.clock import ManualClock
from daemon.watchers.http import (
    BODY_LIMIT,
    HttpCheckSettings,
    HttpCheckWatcher,
    cert_not_after,
)
from daemon.watchers.port import PortCheckSettings, PortCheckWatcher
from tests.daemon.watchers.recorder import Recorder, running

UNRESOLVABLE = "-nightshift-test"  # glibc rejects the name itself: no DNS query leaves the host


def check_of(recorder: Recorder, observation: Observation) -> dict[str, Observation]:
    """The observations of the check that emitted ``observation``, by metric."""
    start = next(i for i, seen in enumerate(recorder.seen) if seen is observation)
    while recorder.seen[start].metric != "http_status":
        start -= 1
    group: dict[str, Observation] = {}
    for seen in recorder.seen[start:]:
        if not seen.metric.startswith(("http_", "tls_")) or seen.metric in group:
            break
        group[seen.metric] = seen
    return group


def value_is(value: float) -> Callable[[Observation], bool]:
    return lambda o: o.value == value


@dataclass
class Target:
    """A real aiohttp server on 127.0.0.1 whose answer the test changes between requests."""

    status: int = 200
    body: bytes = b"status: ok"
    delay: float = 0.0
    port: int = 0
    _runner: web.AppRunner | None = None
    _released: asyncio.Event | None = None

    async def handle(self, request: web.Request) -> web.Response:
        if self.delay and self._released is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._released.wait(), self.delay)
        return web.Response(status=self.status, body=self.body)

    async def start(self, tls: ssl.SSLContext | None = None) -> None:
        self._released = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock, ssl_context=tls).start()

    async def stop(self) -> None:
        if self._released is not None:
            self._released.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def url(self, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}/health"


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    server = Target()
    await server.start()
    yield server
    await server.stop()


@dataclass(frozen=True)
class Cert:
    cert: Path
    key: Path


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> Cert:
    """A self-signed certificate valid for 10 days, made with the openssl CLI."""
    folder = tmp_path_factory.mktemp("tls")
    made = Cert(cert=folder / "cert.pem", key=folder / "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "10"]
        + ["-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"]
        + ["-keyout", str(made.key), "-out", str(made.cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return made


@pytest.fixture
async def tls_target(cert: Cert) -> AsyncIterator[Target]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert.cert, cert.key)
    server = Target()
    await server.start(tls=context)
    yield server
    await server.stop()


def settings(url: str, **extra: object) -> HttpCheckSettings:
    values: dict[str, object] = {"name": "web", "url": url, "interval_seconds": 0.05}
    return HttpCheckSettings.model_validate(values | extra)


async def test_up_then_down_when_the_server_starts_answering_500(target: Target) -> None:
    clock = ManualClock(datetime(2026, 3, 1, 12, tzinfo=UTC))
    recorder = Recorder()
    async with running(HttpCheckWatcher(settings(target.url()), clock), recorder):
        up = check_of(recorder, await recorder.wait_for("http_up", value_is(1.0)))
        target.status = 500
        down = check_of(recorder, await recorder.wait_for("http_up", value_is(0.0)))
    assert up["http_status"].value == 200
    assert up["http_up"].labels == {"target": "web"} and up["http_up"].source == "http:web"
    assert up["http_up"].at == clock.now()
    assert (up["http_latency_ms"].value or 0) > 0
    assert "tls_days_left" not in up  # plain http has no certificate
    assert down["http_status"].value == 500
    assert down["http_up"].text == "status 500, expected 200"
    assert not [o for o in recorder.seen if o.metric == "watcher_error"]


async def test_expect_status_list_accepts_any_of_them(target: Target) -> None:
    target.status = 204
    target.body = b""
    recorder = Recorder()
    watcher = HttpCheckWatcher(settings(target.url(), expect_status=[200, 204]), ManualClock())
    async with running(watcher, recorder):
        check = check_of(recorder, await recorder.wait_for("http_up", value_is(1.0)))
    assert check["http_status"].value == 204


async def test_body_regex_mismatch_is_down_with_status_200(target: Target) -> None:
    target.body = b"status: degraded"
    recorder = Recorder()
    watcher = HttpCheckWatcher(settings(target.url(), body_regex=r"status: ok"), ManualClock())
    async with running(watcher, recorder):
        down = check_of(recorder, await recorder.wait_for("http_up", value_is(0.0)))
        target.body = b"<p>status: ok</p>"
        await recorder.wait_for("http_up", value_is(1.0))
    assert down["http_status"].value == 200
    assert down["http_up"].text == "body does not match 'status: ok'"


async def test_body_regex_only_searches_the_first_megabyte(target: Target) -> None:
    target.body = b"x" * BODY_LIMIT + b"MARKER" + b"y" * BODY_LIMIT
    recorder = Recorder()
    watcher = HttpCheckWatcher(settings(target.url(), body_regex="MARKER"), ManualClock())
    async with running(watcher, recorder):
        beyond = await recorder.wait_for("http_up", value_is(0.0))
        target.body = b"MARKER" + b"y" * 3 * BODY_LIMIT
        await recorder.wait_for("http_up", value_is(1.0))
    assert "does not match" in beyond.text


async def test_stopped_server_gives_status_0_down_and_port_closed(target: Target) -> None:
    recorder = Recorder()
    http = HttpCheckWatcher(settings(target.url()), ManualClock())
    port = PortCheckWatcher(
        PortCheckSettings(name="web", port=target.port, interval_seconds=0.05), ManualClock()
    )
    async with running(http, recorder), running(port, recorder):
        await recorder.wait_for("http_up", value_is(1.0))
        await recorder.wait_for("port_open", value_is(1.0))
        await target.stop()
        down = check_of(recorder, await recorder.wait_for("http_up", value_is(0.0)))
        closed = await recorder.wait_for("port_open", value_is(0.0))
    assert down["http_status"].value == 0
    assert "http_latency_ms" not in down
    assert down["http_up"].text == f"connection refused by 127.0.0.1:{target.port}"
    assert "connection refused" in closed.text


async def test_slow_answer_beyond_the_timeout_is_down(target: Target) -> None:
    target.delay = 30
    recorder = Recorder()
    watcher = HttpCheckWatcher(settings(target.url(), timeout_seconds=0.3), ManualClock())
    async with running(watcher, recorder):
        down = check_of(recorder, await recorder.wait_for("http_up", value_is(0.0)))
    assert down["http_status"].value == 0
    assert down["http_up"].text == "no complete answer within 0.3s"


async def test_unresolvable_host_is_a_watcher_error() -> None:
    recorder = Recorder()
    watcher = HttpCheckWatcher(settings(f"http://{UNRESOLVABLE}:9/"), ManualClock())
    async with running(watcher, recorder):
        error = await recorder.wait_for("watcher_error", value_is(1.0))
        down = check_of(recorder, await recorder.wait_for("http_up", value_is(0.0)))
    assert f"cannot resolve '{UNRESOLVABLE}'" in error.text
    assert error.labels == {"watcher": "http:web"}
    assert down["http_status"].value == 0


async def test_tls_days_left_without_verification(tls_target: Target) -> None:
    clock = ManualClock(datetime.now(UTC))
    recorder = Recorder()
    watcher = HttpCheckWatcher(settings(tls_target.url("https"), verify_tls=False), clock)
    async with running(watcher, recorder):
        first = check_of(recorder, await recorder.wait_for("http_up", value_is(1.0)))
        clock.advance(timedelta(days=4).total_seconds())
        mark = len(recorder.seen)
        later = check_of(recorder, await recorder.wait_for("http_up", value_is(1.0), after=mark))
    assert 9 <= (first["tls_days_left"].value or 0) <= 10
    assert 5 <= (later["tls_days_left"].value or 0) <= 6  # computed from the injected clock


async def test_self_signed_certificate_fails_verification(tls_target: Target) -> None:
    recorder = Recorder()
    watcher = HttpCheckWatcher(settings(tls_target.url("https")), ManualClock())
    async with running(watcher, recorder):
        down = check_of(recorder, await recorder.wait_for("http_up", value_is(0.0)))
    assert down["http_status"].value == 0
    assert down["http_up"].text.startswith("TLS error:")
    assert "certificate verify failed" in down["http_up"].text, down["http_up"].text
    assert not [o for o in recorder.seen if o.metric == "watcher_error"]


async def test_ca_file_trusts_the_private_certificate(tls_target: Target, cert: Cert) -> None:
    clock = ManualClock(datetime.now(UTC))
    recorder = Recorder()
    watcher = HttpCheckWatcher(settings(tls_target.url("https"), ca_file=cert.cert), clock)
    async with running(watcher, recorder):
        up = check_of(recorder, await recorder.wait_for("http_up", value_is(1.0)))
    assert up["http_status"].value == 200
    assert 9 <= (up["tls_days_left"].value or 0) <= 10


async def test_ca_file_that_disappears_is_a_watcher_error(tmp_path: Path, cert: Cert) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(cert.cert.read_bytes())
    watcher = HttpCheckWatcher(settings("https://127.0.0.1:9/", ca_file=ca), ManualClock())
    ca.unlink()
    recorder = Recorder()
    async with running(watcher, recorder):
        error = await recorder.wait_for("watcher_error", value_is(1.0))
    assert "cannot load ca_file" in error.text and str(ca) in error.text


async def test_session_is_closed_when_the_watcher_is_cancelled(target: Target) -> None:
    recorder = Recorder()
    watcher = HttpCheckWatcher(settings(target.url()), ManualClock())
    async with running(watcher, recorder):
        await recorder.wait_for("http_up", value_is(1.0))
        session = watcher.session
    assert session is not None and session.closed


def test_cert_not_after_matches_openssl(cert: Cert) -> None:
    der = ssl.PEM_cert_to_DER_cert(cert.cert.read_text())
    shown = subprocess.run(
        ["openssl", "x509", "-enddate", "-noout", "-in", str(cert.cert)],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.strip()  # notAfter=Mar 11 12:00:00 2026 GMT
    expected = datetime.strptime(shown.removeprefix("notAfter="), "%b %d %H:%M:%S %Y %Z")
    assert cert_not_after(der) == expected.replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"url": "ftp://example.org/"}, "must start with http:// or https://"),
        ({"url": "example.org/health"}, "must start with http:// or https://"),
        ({"url": "http:///health"}, "no host name"),
        ({"url": "http://x/", "method": "FETCH"}, "method must be one of"),
        ({"url": "http://x/", "expect_status": 99}, "100..599"),
        ({"url": "http://x/", "expect_status": []}, "at least one status"),
        ({"url": "http://x/", "body_regex": "("}, "invalid regular expression"),
        ({"url": "http://x/", "method": "HEAD", "body_regex": "ok"}, "HEAD responses"),
        ({"url": "https://x/", "ca_file": "/nonexistent/ca.pem"}, "does not exist"),
        ({"url": "http://x/", "headers": {"X Bad": "1"}}, "invalid header name"),
        ({"url": "http://x/", "headers": {"X-A": "1\r\nX-B: 2"}}, "line break"),
        ({"url": "http://x/", "interval_seconds": 0.01}, "greater than or equal to 0.05"),
    ],
)
def test_bad_settings_are_rejected_with_a_clear_reason(
    values: dict[str, object], needle: str
) -> None:
    with pytest.raises(ValidationError, match=needle):
        HttpCheckSettings.model_validate({"name": "web"} | values)


def test_ca_file_with_verification_off_is_rejected(cert: Cert) -> None:
    with pytest.raises(ValidationError, match="only used when verify_tls = true"):
        HttpCheckSettings(name="web", url="https://x/", verify_tls=False, ca_file=cert.cert)


def test_defaults_and_normalisation() -> None:
    s = HttpCheckSettings(name="web", url="https://example.org/health", method="get")
    assert (s.method, s.expect_status, s.expected) == ("GET", 200, frozenset({200}))
    assert (s.timeout_seconds, s.interval_seconds, s.verify_tls) == (10.0, 60.0, True)
    assert s.body_regex is None and s.ca_file is None and s.headers == {}
