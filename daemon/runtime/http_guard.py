"""Guards for the API's listeners against hostile or broken senders.

    accept() ──▶ gate: over the connection cap? ──▶ 503 + close, one warning per minute
                        │ no
                        ▼
                 aiohttp RequestHandler (headers must arrive within header_timeout; the
                 webhook reads its body within body_timeout) ──▶ routes

- A connection cap below the open-file limit, so sockets can never take the descriptors SQLite,
  the watchers and child commands need; connections over it get a 503 and are closed.
- If descriptors still run out, asyncio's "socket.accept() out of system resource" (logged with a
  traceback at every retry) becomes one warning line per minute; asyncio itself pauses accepting
  for a second and retries, so the API serves again once connections close.
- aiohttp logs a malformed request with a traceback whose message quotes the offending header
  line — a mistyped ``Authorization`` header would put (part of) a token in the journal. Such
  records become one line naming only the problem and the peer.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import re
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.base_protocol import BaseProtocol as _Handler
from aiohttp.http_exceptions import HttpProcessingError

__all__ = [
    "FD_RESERVE",
    "WARN_EVERY_SECONDS",
    "ConnectionGate",
    "QuietRequestHandler",
    "RateLimitedWarning",
    "connection_cap",
    "install_accept_guard",
    "malformed_reason",
    "server_logger",
]

log = logging.getLogger(__name__)

FD_RESERVE = 128  # descriptors kept free of API connections: SQLite, watchers, commands, LLM
MIN_CONNECTIONS = 8
REFUSAL_LINGER_SECONDS = 0.5  # a refused client's request is drained this long at most
MAX_LINGERING = 64  # refusals drained at once; more are closed at once
PENDING_SECONDS = 1.0  # a made protocol counts until its listener lists it, at most this long
WARN_EVERY_SECONDS = 60.0
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Retry-After: 1\r\nConnection: close\r\nContent-Length: 42\r\n\r\n"
    b"too many open connections; retry shortly\r\n"
)
_REASON_END = re.compile(r"[:'\"\n]")


@dataclass
class RateLimitedWarning:
    """Logs a warning at most once per ``every`` seconds, counting the ones held back."""

    every: float = WARN_EVERY_SECONDS
    now: Callable[[], float] = time.monotonic
    _last: float | None = field(default=None, init=False)
    suppressed: int = field(default=0, init=False)

    def __call__(self, msg: str, *args: object) -> bool:
        """Log ``msg % args`` (plus how many were held back) if the last one is old enough."""
        current = self.now()
        if self._last is not None and current - self._last < self.every:
            self.suppressed += 1
            return False
        held, self.suppressed, self._last = self.suppressed, 0, current
        if held:
            msg += " (%d more since the last warning)"
            args = (*args, held)
        log.warning(msg, *args)
        return True


def connection_cap(configured: int, soft_limit: int | None = None) -> int:
    """``configured``, lowered to keep FD_RESERVE descriptors free under the open-file limit."""
    if soft_limit is None:
        soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft_limit == resource.RLIM_INFINITY:
        return configured
    allowed = max(soft_limit - FD_RESERVE, MIN_CONNECTIONS)
    if configured > allowed:
        log.warning(
            "api.max_connections = %d but the open-file limit is %d: serving at most %d "
            "connections at once (raise LimitNOFILE)",
            configured,
            soft_limit,
            allowed,
        )
        return allowed
    return configured


class _Refused(asyncio.Protocol):
    """A connection over the cap: a 503, then close once the client is done sending.

    Closing at once with the request unread would reset the connection and the client would
    never see the 503; so the request is drained for up to REFUSAL_LINGER_SECONDS, for at most
    MAX_LINGERING refusals at a time (beyond those, closed at once: a flood must not pile up).
    """

    lingering = 0

    def __init__(self) -> None:
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(_REFUSAL)
        if _Refused.lingering >= MAX_LINGERING:
            transport.close()
            return
        _Refused.lingering += 1
        self._timer = asyncio.get_running_loop().call_later(REFUSAL_LINGER_SECONDS, transport.close)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        """The request we are refusing: read and dropped."""

    def eof_received(self) -> bool:
        self._transport.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            _Refused.lingering -= 1


class ConnectionGate:
    """Wraps listeners' protocol factories so that at most ``limit`` connections are open.

    A protocol made by the factory is connected (and joins its listener's count) only a loop
    iteration or two later, and a burst of accepts makes many in one go: until a handler is
    connected it counts as pending, for at most PENDING_SECONDS.
    """

    def __init__(self, limit: int, warn: RateLimitedWarning | None = None) -> None:
        self.limit = limit
        self.refused = 0
        self._warn = warn or RateLimitedWarning()
        self._counts: list[Callable[[], int]] = []
        self._pending: dict[_Handler, float] = {}

    @property
    def open(self) -> int:
        now = time.monotonic()
        for handler, made in list(self._pending.items()):
            if handler.connected or now - made >= PENDING_SECONDS:
                del self._pending[handler]
        return sum(count() for count in self._counts) + len(self._pending)

    def wrap(
        self, factory: Callable[[], _Handler], count: Callable[[], int]
    ) -> Callable[[], asyncio.BaseProtocol]:
        """A protocol factory for ``loop.create_server``; ``count`` says how many are open."""
        self._counts.append(count)

        def gated() -> asyncio.BaseProtocol:
            if self.open < self.limit:
                handler = factory()
                self._pending[handler] = time.monotonic()
                return handler
            self.refused += 1
            self._warn(
                "API: %d connections open (the cap, api.max_connections): refusing new ones "
                "with 503 until some close",
                self.limit,
            )
            return _Refused()

        return gated


def install_accept_guard(
    loop: asyncio.AbstractEventLoop, warn: RateLimitedWarning | None = None
) -> Callable[[], None]:
    """Turn asyncio's per-retry accept() EMFILE traceback into one rate-limited line.

    Returns a function that puts the previous exception handler back.
    """
    previous = loop.get_exception_handler()
    say = warn or RateLimitedWarning()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if (
            isinstance(exc, OSError)
            and exc.errno in _OUT_OF_RESOURCES
            and "accept" in str(context.get("message", ""))
        ):
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            say(
                "API: out of file descriptors (%s, open-file limit %d): new connections wait "
                "until some close; raise LimitNOFILE or lower api.max_connections",
                errno.errorcode.get(exc.errno or 0, exc.errno),
                soft,
            )
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
    return lambda: loop.set_exception_handler(previous)


def malformed_reason(exc: HttpProcessingError) -> str:
    """What is wrong with a malformed request, without the request's bytes (they may be a
    token): aiohttp's message quotes the offending line after the first colon or quote."""
    return _REASON_END.split(str(exc.message), maxsplit=1)[0].strip()[:80] or "malformed request"


class QuietRequestHandler(web.RequestHandler):
    """aiohttp's request handler, whose 400 for a malformed request names the problem but does
    not echo the offending line back (a sender that logs our answer would log its own token)."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if isinstance(exc, HttpProcessingError):
            message = f"{status} {malformed_reason(exc)}\n"
        return super().handle_error(request, status, exc, message)


class _MalformedRequestFilter(logging.Filter):
    """Rewrites aiohttp's "Error handling request" records for malformed HTTP into one line."""

    def __init__(self) -> None:
        super().__init__()
        self._warn = RateLimitedWarning(every=10.0)

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        if record.levelno < logging.WARNING:  # e.g. non-HTTP bytes on the port: debug noise
            return False
        reason = malformed_reason(exc)
        peer = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        # Never the record itself: its exception text quotes the offending header line.
        self._warn("refused a malformed HTTP request from %s: %s", peer, reason)
        return False


_FILTER = _MalformedRequestFilter()


def server_logger() -> logging.Logger:
    """The logger for aiohttp's request handlers: malformed requests never show their bytes."""
    logger = logging.getLogger("daemon.runtime.api.http")
    logger.addFilter(_FILTER)  # a no-op when already there
    return logger
