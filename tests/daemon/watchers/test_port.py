"""PortCheckWatcher against real sockets on loopback."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from daemon.core.clock import ManualClock
from daemon.watchers.port import PortCheckSettings, PortCheckWatcher
from tests.daemon.watchers.recorder import Recorder, running

UNRESOLVABLE = "-nightshift-test"  # glibc rejects the name itself: no DNS query leaves the host


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A real listening TCP socket on loopback (the kernel completes connects for it)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield sock
    sock.close()


def settings(port: int, **extra: object) -> PortCheckSettings:
    values: dict[str, object] = {"name": "db", "port": port, "interval_seconds": 0.05}
    return PortCheckSettings.model_validate(values | extra)


async def test_open_port_reports_open_with_latency_then_closed_when_it_stops_listening(
    listener: socket.socket,
) -> None:
    clock = ManualClock(datetime(2026, 3, 1, 12, tzinfo=UTC))
    recorder = Recorder()
    port = listener.getsockname()[1]
    async with running(PortCheckWatcher(settings(port), clock), recorder):
        opened = await recorder.wait_for("port_open", lambda o: o.value == 1)
        latency = await recorder.wait_for("port_latency_ms")
        listener.close()
        closed = await recorder.wait_for("port_open", lambda o: o.value == 0)
    assert opened.labels == {"target": "db"} and opened.source == "port:db"
    assert opened.at == clock.now()
    assert latency.value is not None and 0 < latency.value < 5000
    assert "connection refused" in closed.text
    # a closed port is a finding, not a broken watcher; and closed checks carry no latency
    assert not [o for o in recorder.seen if o.metric == "watcher_error"]
    pairs = zip(recorder.seen, recorder.seen[1:], strict=False)
    assert not [1 for a, b in pairs if a.value == 0 and b.metric == "port_latency_ms"]


async def test_connect_that_hangs_is_reported_closed_after_the_timeout() -> None:
    # listen(0) with a full accept queue: Linux drops further SYNs, so connect() hangs
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    recorder = Recorder()
    watcher = PortCheckWatcher(settings(port, timeout_seconds=0.3), ManualClock())
    try:
        async with running(watcher, recorder):
            closed = await recorder.wait_for("port_open", lambda o: o.value == 0)
    finally:
        for sock in [server, *fillers]:
            sock.close()
    assert "timed out after 0.3s" in closed.text
    assert not [o for o in recorder.seen if o.metric == "watcher_error"]


async def test_unresolvable_host_is_a_watcher_error_and_port_closed_until_it_resolves(
    listener: socket.socket,
) -> None:
    recorder = Recorder()
    watcher = PortCheckWatcher(
        settings(listener.getsockname()[1], host=UNRESOLVABLE), ManualClock()
    )
    async with running(watcher, recorder):
        error = await recorder.wait_for("watcher_error", lambda o: o.value == 1)
        closed = await recorder.wait_for("port_open", lambda o: o.value == 0)
        watcher.settings.host = "127.0.0.1"  # the name is fixed (config reload)
        await recorder.wait_for("watcher_error", lambda o: o.value == 0)
        await recorder.wait_for("port_open", lambda o: o.value == 1)
    assert UNRESOLVABLE in error.text and "cannot resolve" in error.text
    assert error.labels == {"watcher": "port:db"}
    assert "cannot resolve" in closed.text
    # reported once per change, not once per check
    assert len([o for o in recorder.seen if o.metric == "watcher_error"]) == 2


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"name": "db", "port": 0}, "greater than or equal to 1"),
        ({"name": "db", "port": 65536}, "less than or equal to 65535"),
        ({"name": "db", "port": 80, "interval_seconds": 0.01}, "greater than or equal to 0.05"),
        ({"name": "db", "port": 80, "timeout_seconds": 0}, "greater than 0"),
        ({"name": " ", "port": 80}, "non-empty"),
        ({"name": "db", "port": 80, "hots": "x"}, "Extra inputs are not permitted"),
    ],
)
def test_bad_settings_are_rejected_with_a_clear_reason(
    values: dict[str, object], needle: str
) -> None:
    with pytest.raises(ValidationError, match=needle):
        PortCheckSettings.model_validate(values)


def test_defaults() -> None:
    s = PortCheckSettings(name="ssh", port=22)
    assert (s.host, s.interval_seconds, s.timeout_seconds) == ("127.0.0.1", 30.0, 5.0)
