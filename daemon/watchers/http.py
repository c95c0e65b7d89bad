"""HTTP(S) checks: status, latency, an optional body match and the days left on the certificate.

Per interval: http_status (0 when no response), http_latency_ms (when a response came), http_up
(1 when the status is expected and body_regex, if any, matches the first 1 MB of the body) and,
over TLS, tls_days_left. A refused connection, a timeout or a TLS verification failure is a
finding (http_up 0, the reason as text); a host name that does not resolve is also a
watcher_error. Each check opens a fresh connection, so a renewed certificate is seen at once.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator, model_validator

from daemon.core.alerts import Observation
from daemon.core.clock import Clock
from daemon.core.patterns import compile_pattern, search_text
from daemon.core.section import Section, check_regex
from daemon.watchers.base import Emit, ErrorReporter
from daemon.watchers.polling import PollingWatcher, Sleep

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger(__name__)

BODY_LIMIT = 1024 * 1024  # never read more of a body than this
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
USER_AGENT = "nightshift-http-check"


class HttpCheckSettings(Section):
    """An HTTP(S) endpoint that should answer with an expected status (and body)."""

    name: str  # the "target" label on every observation; unique among http checks
    url: str  # http:// or https:// URL to request
    method: str = "GET"  # one of GET HEAD POST PUT PATCH DELETE OPTIONS
    expect_status: int | list[int] = 200  # the status (or statuses) that count as up
    body_regex: str | None = None  # if set, must match within the first 1 MB of the body
    timeout_seconds: float = Field(default=10.0, gt=0)  # whole request, body included
    interval_seconds: float = Field(default=60.0, ge=0.05)  # pause between checks
    verify_tls: bool = True  # verify the certificate chain and host name
    ca_file: Path | None = None  # PEM bundle to trust instead of the system CAs (private CA)
    headers: dict[str, str] = Field(default_factory=dict)  # extra request headers

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        value = value.strip()
        if not value or any(ch.isspace() for ch in value):
            raise ValueError(f"must be a non-empty word without spaces (got {value!r})")
        return value

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        from yarl import URL

        try:
            url = URL(value.strip())
        except ValueError as exc:
            raise ValueError(f"invalid URL {value!r}: {exc}") from None
        if url.scheme not in ("http", "https"):
            raise ValueError(f"URL must start with http:// or https:// (got {value!r})")
        if not url.host:
            raise ValueError(f"URL has no host name, e.g. https://example.org/ (got {value!r})")
        return str(url)

    @field_validator("method")
    @classmethod
    def _check_method(cls, value: str) -> str:
        method = value.strip().upper()
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)} (got {value!r})")
        return method

    @field_validator("expect_status")
    @classmethod
    def _check_status(cls, value: int | list[int]) -> int | list[int]:
        codes = [value] if isinstance(value, int) else value
        if not codes:
            raise ValueError("expect_status must name at least one status, e.g. [200, 204]")
        bad = [code for code in codes if not 100 <= code <= 599]
        if bad:
            raise ValueError(f"HTTP statuses are 100..599 (got {bad})")
        return value

    @field_validator("body_regex")
    @classmethod
    def _check_regex(cls, value: str | None) -> str | None:
        return None if value is None else check_regex(value)

    @field_validator("ca_file")
    @classmethod
    def _check_ca_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"CA file {str(value)!r} does not exist or is not a file")
        return value

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for key, text in value.items():
            if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", key):
                raise ValueError(f"invalid header name {key!r}")
            if "\r" in text or "\n" in text:
                raise ValueError(f"header {key!r} must not contain a line break")
        return value

    @model_validator(mode="after")
    def _check_combination(self) -> HttpCheckSettings:
        if self.ca_file is not None and not self.verify_tls:
            raise ValueError("ca_file is only used when verify_tls = true: set one or the other")
        if self.body_regex is not None and self.method == "HEAD":
            raise ValueError("body_regex needs a body: HEAD responses have none, use GET")
        return self

    @property
    def expected(self) -> frozenset[int]:
        codes = self.expect_status
        return frozenset([codes] if isinstance(codes, int) else codes)


@dataclass(frozen=True, kw_only=True, slots=True)
class HttpProbe:
    """The outcome of one request."""

    status: int  # 0: no response
    up: bool
    latency_ms: float | None = None  # until the headers (and, with body_regex, the body) arrived
    reason: str = ""  # why it is not up
    not_after: datetime | None = None  # the server certificate's expiry, over TLS
    dns_error: str = ""  # set when the host name did not resolve


def make_ssl_context(settings: HttpCheckSettings) -> ssl.SSLContext:
    """The TLS context for a check (reads CA files: call it off the event loop)."""
    if not settings.verify_tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    cafile = str(settings.ca_file) if settings.ca_file else None
    return ssl.create_default_context(cafile=cafile)


def cert_not_after(der: bytes) -> datetime:
    """The notAfter time of a DER X.509 certificate (no third-party parser needed)."""
    _, cert, _ = _tlv(der, 0)  # Certificate ::= SEQUENCE
    _, tbs, _ = _tlv(cert, 0)  # tbsCertificate ::= SEQUENCE
    pos = 0
    tag, _, end = _tlv(tbs, pos)
    if tag == 0xA0:  # [0] version, optional
        pos = end
    for _ in range(3):  # serialNumber, signature, issuer
        pos = _tlv(tbs, pos)[2]
    _, validity, _ = _tlv(tbs, pos)
    after = _tlv(validity, _tlv(validity, 0)[2])  # notBefore, then notAfter
    tag, value, _ = after
    text = value.decode("ascii")
    if tag == 0x17:  # UTCTime YYMMDDHHMMSSZ
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
    elif tag != 0x18:  # GeneralizedTime YYYYMMDDHHMMSSZ
        raise ValueError(f"unexpected time tag 0x{tag:02x} in certificate")
    return datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=UTC)


def _tlv(data: bytes, pos: int) -> tuple[int, bytes, int]:
    """(tag, value, end) of the DER element at ``pos``."""
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + length > len(data):
        raise ValueError("truncated DER certificate")
    return tag, data[pos : pos + length], pos + length


async def _read_limited(content: aiohttp.StreamReader, limit: int = BODY_LIMIT) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await content.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _decode(body: bytes, charset: str | None) -> str:
    try:
        return body.decode(charset or "utf-8", errors="replace")
    except LookupError:
        return body.decode("utf-8", errors="replace")


def _response_class() -> type[aiohttp.ClientResponse]:
    import aiohttp

    class PeerCertResponse(aiohttp.ClientResponse):
        """Keeps the server certificate (DER) before the connection can be released."""

        peer_cert: bytes | None = None

        async def start(self, connection: Any) -> aiohttp.ClientResponse:
            transport = connection.transport
            tls = transport.get_extra_info("ssl_object") if transport is not None else None
            if tls is not None:
                self.peer_cert = tls.getpeercert(binary_form=True)
            return await super().start(connection)

    return PeerCertResponse


async def probe_http(session: aiohttp.ClientSession, settings: HttpCheckSettings) -> HttpProbe:
    """One request with ``session`` (see HttpCheckWatcher for how it is built)."""
    import aiohttp

    started = time.perf_counter()
    try:
        async with session.request(
            settings.method, settings.url, headers=settings.headers
        ) as response:
            cert = getattr(response, "peer_cert", None)
            body = b""
            if settings.body_regex is not None:
                body = await _read_limited(response.content)
            latency = (time.perf_counter() - started) * 1000
            status, charset = response.status, response.charset
    except aiohttp.ClientConnectorDNSError as exc:
        reason = f"cannot resolve {exc.host!r}: {exc.os_error.strerror or exc.os_error}"
        return HttpProbe(status=0, up=False, reason=reason, dns_error=reason)
    except aiohttp.ClientConnectorCertificateError as exc:
        return HttpProbe(status=0, up=False, reason=f"TLS error: {exc.certificate_error}")
    except aiohttp.ClientSSLError as exc:
        return HttpProbe(status=0, up=False, reason=f"TLS error: {exc.os_error}")
    except TimeoutError:
        reason = f"no complete answer within {settings.timeout_seconds:g}s"
        return HttpProbe(status=0, up=False, reason=reason)
    except aiohttp.ClientConnectorError as exc:
        where = f"{exc.host}:{exc.port}"
        if isinstance(exc.os_error, ConnectionRefusedError):
            reason = f"connection refused by {where}"
        else:
            reason = f"cannot connect to {where}: {exc.os_error.strerror or exc.os_error}"
        return HttpProbe(status=0, up=False, reason=reason)
    except aiohttp.ClientError as exc:
        return HttpProbe(status=0, up=False, reason=f"request failed: {exc!r}")
    not_after = None
    if cert:
        try:
            not_after = cert_not_after(cert)
        except (ValueError, IndexError):
            log.warning("%s: cannot read the server certificate's expiry", settings.url)
    reason = ""
    if status not in settings.expected:
        reason = f"status {status}, expected {' or '.join(map(str, sorted(settings.expected)))}"
    elif settings.body_regex is not None and not search_text(
        compile_pattern(settings.body_regex), _decode(body, charset)
    ):
        reason = f"body does not match {settings.body_regex!r}"
    return HttpProbe(
        status=status, up=not reason, latency_ms=latency, reason=reason, not_after=not_after
    )


class HttpCheckWatcher(PollingWatcher):
    """Requests ``url``, pausing ``interval_seconds`` between checks; one aiohttp session per
    run, closed when it ends."""

    def __init__(
        self, settings: HttpCheckSettings, clock: Clock, *, sleep: Sleep | None = None
    ) -> None:
        super().__init__(settings.interval_seconds, clock, sleep)
        self.settings = settings
        self.name = self.source = f"http:{settings.name}"
        self.session: aiohttp.ClientSession | None = None  # while running; closed on cancel

    async def poll(self, emit: Emit, errors: ErrorReporter) -> None:
        if self.session is None:
            self.session = await self._session(errors)
        if self.session is not None:
            await self.check(self.session, emit, errors)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None  # a restarted run() opens a new one

    async def _session(self, reporter: ErrorReporter) -> aiohttp.ClientSession | None:
        """The watcher's session, or None (reported) while its CA file cannot be loaded."""
        import aiohttp

        try:
            context = await asyncio.to_thread(make_ssl_context, self.settings)
        except (OSError, ssl.SSLError) as exc:
            reporter.failed(f"cannot load ca_file {str(self.settings.ca_file)!r}: {exc}")
            return None
        connector = aiohttp.TCPConnector(
            ssl=context, force_close=True, resolver=aiohttp.ThreadedResolver()
        )
        return aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.settings.timeout_seconds),
            headers={"User-Agent": USER_AGENT},
            response_class=_response_class(),
        )

    async def check(
        self, session: aiohttp.ClientSession, emit: Emit, reporter: ErrorReporter
    ) -> HttpProbe:
        """One probe, turned into observations."""
        probe = await probe_http(session, self.settings)
        if probe.dns_error:
            reporter.failed(probe.dns_error)
        else:
            reporter.ok()
        emit(self._observation("http_status", float(probe.status)))
        if probe.latency_ms is not None:
            emit(self._observation("http_latency_ms", probe.latency_ms))
        emit(self._observation("http_up", 1.0 if probe.up else 0.0, probe.reason))
        if probe.not_after is not None:
            days = (probe.not_after - self._clock.now()).total_seconds() / 86400
            emit(self._observation("tls_days_left", days))
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
