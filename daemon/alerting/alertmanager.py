"""The Alertmanager webhook receiver: payload version "4" → AlertEvents → the incident intake.

    Alertmanager ── POST /v1/webhooks/alertmanager (bearer token) ──▶ parse ──▶ intake.accept

Each notification is a full snapshot of one alert group, not a delta: the same firing alert
comes again whenever its group changes, and a "firing" payload can carry alerts that are already
resolved. Nothing is deduplicated or dropped here; the incident layer tracks by fingerprint.

Answers: 200 once the intake has committed the events; 503 when no token is configured (the route
never accepts unauthenticated alerts) or the intake failed (Alertmanager retries 5xx); 401 for a
missing or wrong token; 413 over the size limit; 408 when the body does not arrive within the read
timeout; 400 with ``{"error": ...}`` naming what is wrong with the payload — including text that
is not valid Unicode (a lone surrogate such as ``"\\ud800"``), which could never be stored and so
must not be answered with a 5xx that Alertmanager would retry forever. Alertmanager does not retry
a 4xx within one send, but sends the unacknowledged group again at each group_interval tick
(seen with 0.25).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Protocol

from aiohttp import web

from daemon.core.alerts import AlertEvent, AlertStatus, fingerprint
from daemon.core.clock import Clock
from daemon.core.errors import PayloadError

__all__ = [
    "BODY_TIMEOUT_SECONDS",
    "PATH",
    "AlertIntake",
    "PayloadError",
    "WebhookStats",
    "alertmanager_routes",
    "normalize_severity",
    "parse_alertmanager",
    "parse_rfc3339",
]

log = logging.getLogger(__name__)

PATH = "/v1/webhooks/alertmanager"
MAX_BYTES = 1_048_576
PARSE_ON_LOOP_BYTES = 262_144  # larger bodies are parsed in a worker thread
BODY_TIMEOUT_SECONDS = 10.0  # a sender that trickles its body is cut off (slowloris)
DISABLED = "webhook disabled: set api.webhook_token"
_CHUNK = 64 * 1024
_GO_ZERO_TIME = datetime(1, 1, 1, tzinfo=UTC)  # Go's time.Time{}: "no end" on a firing alert
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})"  # date, time
    r"(?:\.(\d{1,9}))?"  # fraction: Go emits up to 9 digits
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))"  # Z or offset
)

# Severity words seen in the wild, folded onto nightshift's three (unknown words → warning).
_SEVERITY_WORDS = {
    "critical": "critical crit page pager emergency emerg alert fatal error err disaster high "
    "major urgent p0 p1 sev0 sev1 s1",
    "warning": "warning warn medium moderate minor average p2 p3 sev2 sev3 s2 s3",
    "info": "info information informational notice low debug none ok p4 p5 sev4 sev5 s4",
}
_SEVERITY_MAP = {word: level for level, words in _SEVERITY_WORDS.items() for word in words.split()}


class AlertIntake(Protocol):
    """Where parsed alert events go; ``accept`` returns once they are durably stored."""

    async def accept(self, events: Sequence[AlertEvent]) -> None: ...


@dataclass(slots=True)
class WebhookStats:
    """Counters for the route, for status and metrics."""

    requests: int = 0
    accepted_events: int = 0
    auth_failures: int = 0
    rejected: int = 0  # 400 and 413
    intake_failures: int = 0
    disabled: int = 0  # answered 503 because no token is configured


def normalize_severity(value: str | None) -> str:
    """Map an Alertmanager ``severity`` label onto info|warning|critical (default warning)."""
    if value is None:
        return "warning"
    return _SEVERITY_MAP.get(value.strip().lower(), "warning")


def parse_rfc3339(text: str) -> datetime:
    """Parse an RFC 3339 time with up to 9 fractional digits (Go's RFC3339Nano), as aware UTC.

    Digits past microseconds are truncated. Raises ValueError for anything else.
    """
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError("not an RFC 3339 time")
    year, month, day, hour, minute, second = (int(part) for part in match.group(1, 2, 3, 4, 5, 6))
    micros = int((match.group(7) or "0").ljust(6, "0")[:6])
    tz = UTC
    if match.group(9):
        offset = timedelta(hours=int(match.group(10)), minutes=int(match.group(11)))
        if offset >= timedelta(hours=24):
            raise ValueError("offset out of range")
        tz = timezone(offset if match.group(9) == "+" else -offset)
    if second == 60:  # a leap second; Python has none
        second = 59
        micros = 999_999
    try:
        parsed = datetime(year, month, day, hour, minute, second, micros, tzinfo=tz)
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"out of range ({exc})") from None


def parse_alertmanager(payload: bytes, *, now: datetime) -> list[AlertEvent]:
    """Validate a webhook payload (version "4") and map each alert to an AlertEvent."""
    try:
        body = json.loads(payload)
    except UnicodeDecodeError as exc:
        raise PayloadError(
            "body",
            f"not valid UTF-8: byte 0x{exc.object[exc.start]:02x} at offset {exc.start}; "
            "send the JSON as UTF-8",
        ) from None
    except (ValueError, RecursionError) as exc:  # bad JSON, a 5,000-digit number, deep nesting
        raise PayloadError("body", f"not valid JSON ({_clip(str(exc))})") from None
    if not isinstance(body, dict):
        raise PayloadError("body", f"expected a JSON object, got {_kind(body)}")
    if "version" not in body:
        raise PayloadError("version", 'missing (Alertmanager webhook payloads carry version "4")')
    if body["version"] != "4":
        raise PayloadError("version", f'expected "4", got {_show(body["version"])}')
    alerts = body.get("alerts")
    if not isinstance(alerts, list):
        raise PayloadError("alerts", f"expected a list, got {_kind(alerts)}")
    truncated = body.get("truncatedAlerts")
    if isinstance(truncated, int) and truncated > 0:
        log.warning(
            "Alertmanager truncated %d alert(s) of group %s: raise max_alerts on its webhook",
            truncated,
            _show(body.get("groupKey")),
        )
    return [_event(alert, f"alerts[{index}]", now) for index, alert in enumerate(alerts)]


def _event(alert: object, where: str, now: datetime) -> AlertEvent:
    if not isinstance(alert, dict):
        raise PayloadError(where, f"expected an object, got {_kind(alert)}")
    status = alert.get("status")
    if status not in ("firing", "resolved"):
        problem = "missing" if status is None else f"got {_show(status)}"
        raise PayloadError(f"{where}.status", f'expected "firing" or "resolved", {problem}')
    labels = _strings(alert, "labels", where, required=True)
    if not labels.get("alertname"):
        raise PayloadError(f"{where}.labels", "missing alertname")
    annotations = _strings(alert, "annotations", where, required=False)
    starts_at = _time(alert, "startsAt", where, required=True)
    assert starts_at is not None
    ends_at = _time(alert, "endsAt", where, required=False)
    am_fingerprint = alert.get("fingerprint")
    if am_fingerprint is not None and not isinstance(am_fingerprint, str):
        raise PayloadError(
            f"{where}.fingerprint", f"expected a string, got {_kind(am_fingerprint)}"
        )
    if am_fingerprint is not None:
        _check_text(am_fingerprint, f"{where}.fingerprint", "the fingerprint")
    key = am_fingerprint or fingerprint(labels)
    out = dict(labels)
    original = labels.get("severity")
    out["severity"] = normalize_severity(original)
    if original is not None and original != out["severity"]:
        out["am_severity"] = original
    status_: AlertStatus = "firing" if status == "firing" else "resolved"
    return AlertEvent(
        fingerprint=f"am:{key}",
        status=status_,
        labels=out,
        annotations=annotations,
        starts_at=starts_at,
        ends_at=ends_at,
        at=now,
        source="alertmanager",
    )


def _strings(alert: Mapping[str, Any], key: str, where: str, *, required: bool) -> dict[str, str]:
    value = alert.get(key)
    if value is None:
        if required:
            raise PayloadError(f"{where}.{key}", "missing")
        return {}
    if not isinstance(value, dict):
        raise PayloadError(f"{where}.{key}", f"expected an object of strings, got {_kind(value)}")
    for name, item in value.items():
        _check_text(name, f"{where}.{key}", "a label name")
        if not isinstance(item, str):
            raise PayloadError(
                f"{where}.{key}.{_clip(name)}", f"expected a string, got {_kind(item)}"
            )
        _check_text(item, f"{where}.{key}.{_clip(name)}", "the value")
    return dict(value)


def _check_text(text: str, where: str, what: str) -> None:
    """Refuse text that cannot be stored as UTF-8 (a lone UTF-16 surrogate from a JSON escape)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start]
        raise PayloadError(
            where,
            f"{what} is not valid Unicode: lone surrogate \\u{ord(bad):04x} at character "
            f"{exc.start}; send UTF-8 text (escape pairs must be complete)",
        ) from None


def _clip(text: str, limit: int = 60) -> str:
    """Text short enough for an error message, with anything unprintable escaped."""
    shown = ascii(text)[1:-1]
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def _time(alert: Mapping[str, Any], key: str, where: str, *, required: bool) -> datetime | None:
    value = alert.get(key)
    if value is None:
        if required:
            raise PayloadError(f"{where}.{key}", "missing")
        return None
    if not isinstance(value, str):
        raise PayloadError(f"{where}.{key}", f"expected an RFC 3339 string, got {_kind(value)}")
    try:
        parsed = parse_rfc3339(value)
    except ValueError as exc:
        raise PayloadError(f"{where}.{key}", f"{exc}: {_show(value)}") from None
    if parsed == _GO_ZERO_TIME and not required:
        return None
    return parsed


def _kind(value: object) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def _show(value: object) -> str:
    text = json.dumps(value) if isinstance(value, str | int | float | bool | None) else _kind(value)
    return text if len(text) <= 60 else text[:57] + "..."


def alertmanager_routes(
    intake: AlertIntake,
    token: str | None,
    *,
    max_bytes: int = MAX_BYTES,
    body_timeout: float = BODY_TIMEOUT_SECONDS,
    clock: Clock,
    stats: WebhookStats | None = None,
) -> list[web.RouteDef]:
    """The route ``POST /v1/webhooks/alertmanager``, for a TCP-facing aiohttp application.

    ``token`` is the bearer token Alertmanager sends (``http_config.authorization``); None
    disables the route (503). A body not received within ``body_timeout`` seconds is answered
    408. ``stats`` (optional) is updated per request.
    """
    counts = stats if stats is not None else WebhookStats()
    expected = token.encode() if token else None
    alarm = RejectionAlarm(intake, clock)

    async def receive(request: web.Request) -> web.Response:
        counts.requests += 1
        if expected is None:
            counts.disabled += 1
            return _error(503, DISABLED)
        denied = _check_bearer(request, expected)
        if denied is not None:
            counts.auth_failures += 1
            log.warning("alertmanager webhook from %s refused: %s", request.remote, denied)
            await alarm.refused(401, f"{denied} (check webhook_token on both sides)")
            challenge = 'Bearer realm="nightshift"'
            if denied != "no bearer token":
                challenge += ', error="invalid_token"'
            return _error(401, denied, headers={"WWW-Authenticate": challenge})
        try:
            async with asyncio.timeout(body_timeout):
                body = await _read_limited(request, max_bytes)
        except TimeoutError:
            counts.rejected += 1
            log.warning(
                "alertmanager webhook from %s refused: body not received within %gs",
                request.remote,
                body_timeout,
            )
            await alarm.refused(408, f"body not received within {body_timeout:g} s")
            return _error(408, f"body not received within {body_timeout:g} s", close=True)
        if body is None:
            counts.rejected += 1
            log.warning(
                "alertmanager webhook from %s refused: over %d bytes", request.remote, max_bytes
            )
            await alarm.refused(413, f"over {max_bytes} bytes (raise api.webhook_max_bytes)")
            return _error(413, f"payload larger than {max_bytes} bytes")
        try:
            if len(body) > PARSE_ON_LOOP_BYTES:  # a big snapshot is parsed off the event loop
                events = await asyncio.to_thread(parse_alertmanager, body, now=clock.now())
            else:
                events = parse_alertmanager(body, now=clock.now())
        except PayloadError as exc:
            counts.rejected += 1
            log.warning("alertmanager webhook from %s rejected: %s", request.remote, exc)
            await alarm.refused(400, str(exc))
            return _error(400, str(exc))
        try:
            await intake.accept(events)
        except Exception:  # noqa: BLE001 - answer 503 so Alertmanager retries; nothing is lost
            counts.intake_failures += 1
            log.exception("alertmanager webhook: storing %d event(s) failed", len(events))
            return _error(503, "could not store the alerts; retry later")
        counts.accepted_events += len(events)
        await alarm.accepted()
        log.debug("alertmanager webhook from %s: %d event(s)", request.remote, len(events))
        return web.json_response({"accepted": len(events)})

    return [web.post(PATH, receive)]


REJECTED_ALERT = "NightshiftWebhookRejected"


class RejectionAlarm:
    """A refused Alertmanager payload is lost (Alertmanager retries no 4xx), so it raises an
    alert of our own: firing at the first refusal, resolved by the next accepted payload. Only
    state changes are written, so a flood of bad requests costs one row."""

    def __init__(self, intake: AlertIntake, clock: Clock) -> None:
        self._intake = intake
        self._clock = clock
        self._since: datetime | None = None
        self._labels = {"alertname": REJECTED_ALERT, "severity": "critical", "source": "webhook"}

    async def refused(self, status: int, reason: str) -> None:
        if self._since is not None:
            return
        self._since = now = self._clock.now()
        annotations = {
            "summary": f"an Alertmanager payload was refused ({status}): {reason[:300]}",
            "description": "Alertmanager does not retry a 4xx answer: the alerts in that "
            "payload were not taken. Fix the cause; the next accepted payload resolves this.",
        }
        await self._send("firing", annotations, now, None)

    async def accepted(self) -> None:
        if self._since is None:
            return
        now, self._since = self._clock.now(), None
        await self._send("resolved", {"summary": "Alertmanager payloads are accepted again"},
                         now, now)  # fmt: skip

    async def _send(
        self, status: AlertStatus, annotations: dict[str, str], at: datetime, ends: datetime | None
    ) -> None:
        event = AlertEvent(
            fingerprint=fingerprint(self._labels), status=status, labels=self._labels,
            annotations=annotations, starts_at=at, at=at, ends_at=ends, source="nightshift",
        )  # fmt: skip
        try:
            await self._intake.accept([event])
        except Exception:  # noqa: BLE001 - the refusal is logged either way
            log.exception("could not raise the %s alert", REJECTED_ALERT)


def _check_bearer(request: web.Request, expected: bytes) -> str | None:
    """None when the request carries the expected bearer token, else why not (no secrets)."""
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return "no bearer token"
    if not hmac.compare_digest(given.strip().encode(errors="replace"), expected):
        return "wrong bearer token"
    return None


async def _read_limited(request: web.Request, max_bytes: int) -> bytes | None:
    """The body, or None when it is (or claims to be) larger than ``max_bytes``."""
    if request.content_length is not None and request.content_length > max_bytes:
        return None
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(_CHUNK):
        size += len(chunk)
        if size > max_bytes:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _error(
    status: int, message: str, headers: Mapping[str, str] | None = None, *, close: bool = False
) -> web.Response:
    response = web.json_response({"error": message}, status=status, headers=headers)
    if close:  # the rest of the body may never come: do not wait for it to reuse the connection
        response.force_close()
    return response
