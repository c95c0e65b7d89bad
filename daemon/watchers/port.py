"""TCP port checks: one connect per interval, reported as port_open and port_latency_ms.

A refused or timed-out connect is a finding (port_open 0), not a watcher failure; a host name
that does not resolve is both: port_open 0 and a watcher_error naming the reason.
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass

from pydantic import Field, field_validator

from daemon.core.alerts import Observation
from daemon.core.clock import Clock
from daemon.core.section import Section
from daemon.watchers.base import Emit, ErrorReporter
from daemon.watchers.polling import PollingWatcher, Sleep


class PortCheckSettings(Section):
    """A TCP port that should accept connections."""

    name: str  # the "target" label on every observation; unique among port checks
    host: str = "127.0.0.1"  # host name or IP address to connect to
    port: int = Field(ge=1, le=65535)  # TCP port
    interval_seconds: float = Field(default=30.0, ge=0.05)  # pause between checks
    timeout_seconds: float = Field(default=5.0, gt=0)  # per check: name lookup, then connect

    @field_validator("name", "host")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        value = value.strip()
        if not value or any(ch.isspace() for ch in value):
            raise ValueError(f"must be a non-empty word without spaces (got {value!r})")
        return value


@dataclass(frozen=True, kw_only=True, slots=True)
class PortProbe:
    """The outcome of one connect attempt."""

    open: bool
    latency_ms: float | None = None  # connect time, only when open
    reason: str = ""  # why it is not open
    dns_error: str = ""  # set when the host name did not resolve


async def probe_port(host: str, port: int, timeout: float) -> PortProbe:
    """Resolve ``host`` and connect to each address in turn until one accepts."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        reason = f"cannot resolve {host!r}: {exc.strerror}"
        return PortProbe(open=False, reason=reason, dns_error=reason)
    except TimeoutError:
        reason = f"resolving {host!r} timed out after {timeout:g}s"
        return PortProbe(open=False, reason=reason, dns_error=reason)
    reason = f"{host!r} has no address"
    try:
        async with asyncio.timeout(timeout):
            for family, kind, proto, _, address in infos:
                started = time.perf_counter()
                try:
                    await _connect(loop, family, kind, proto, address)
                except OSError as exc:
                    reason = _describe(exc, address)
                    continue
                latency = (time.perf_counter() - started) * 1000
                return PortProbe(open=True, latency_ms=latency)
    except TimeoutError:
        reason = f"connect to {host}:{port} timed out after {timeout:g}s"
    return PortProbe(open=False, reason=reason)


async def _connect(
    loop: asyncio.AbstractEventLoop,
    family: socket.AddressFamily,
    kind: socket.SocketKind,
    proto: int,
    address: tuple[str, int] | tuple[str, int, int, int] | tuple[int, bytes],
) -> None:
    sock = socket.socket(family, kind, proto)
    try:
        sock.setblocking(False)
        await loop.sock_connect(sock, address)
    finally:
        sock.close()


def _describe(exc: OSError, address: object) -> str:
    where = f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused by {where}"
    return f"cannot connect to {where}: {exc.strerror or exc}"


class PortCheckWatcher(PollingWatcher):
    """Connects to ``host:port`` and pauses ``interval_seconds`` between checks."""

    def __init__(
        self, settings: PortCheckSettings, clock: Clock, *, sleep: Sleep | None = None
    ) -> None:
        super().__init__(settings.interval_seconds, clock, sleep)
        self.settings = settings
        self.name = self.source = f"port:{settings.name}"

    async def poll(self, emit: Emit, errors: ErrorReporter) -> None:
        await self.check(emit, errors)

    async def check(self, emit: Emit, reporter: ErrorReporter) -> PortProbe:
        """One probe, turned into observations."""
        s = self.settings
        probe = await probe_port(s.host, s.port, s.timeout_seconds)
        if probe.dns_error:
            reporter.failed(probe.dns_error)
        else:
            reporter.ok()
        emit(self._observation("port_open", 1.0 if probe.open else 0.0, probe.reason))
        if probe.latency_ms is not None:
            emit(self._observation("port_latency_ms", probe.latency_ms))
        return probe

    def _observation(self, metric: str, value: float, text: str = "") -> Observation:
        return Observation(
            source=self.name,
            metric=metric,
            at=self._clock.now(),
            value=value,
            text=text,
            labels={"target": self.settings.name},
        )
