"""The Alertmanager webhook: payload parsing, and the route's answers on a loopback server."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from daemon.alerting.alertmanager import (
    DISABLED,
    PATH,
    REJECTED_ALERT,
    WebhookStats,
    alertmanager_routes,
    normalize_severity,
    parse_alertmanager,
    parse_rfc3339,
)
from daemon.core.alerts import AlertEvent, fingerprint
from daemon.core.clock import ManualClock
from daemon.core.errors import PayloadError

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
TOKEN = "s3cret-webhook-token-0123456789"

FIRING: dict[str, Any] = {
    "status": "firing",
    "labels": {"alertname": "DiskFull", "instance": "db1", "severity": "critical"},
    "annotations": {"summary": "disk / is 97% full", "runbook_url": "https://example/disk"},
    "startsAt": "2026-11-22T11:58:01.634217013Z",
    "endsAt": "0001-01-01T00:00:00Z",
    "generatorURL": "http://prometheus:9090/graph",
    "fingerprint": "9effc084e637399e",
}
RESOLVED: dict[str, Any] = {
    "status": "resolved",
    "labels": {"alertname": "DiskFull", "instance": "db2", "severity": "page"},
    "annotations": {},
    "startsAt": "2026-11-22T11:50:00Z",
    "endsAt": "2026-11-22T11:59:30.5+01:00",
    "generatorURL": "",
    "fingerprint": "108e9abdc92a7515",
}


def payload(*alerts: dict[str, Any], **top: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "receiver": "nightshift",
        "status": "firing",
        "alerts": [copy.deepcopy(alert) for alert in alerts],
        "groupLabels": {"alertname": "DiskFull"},
        "commonLabels": {"alertname": "DiskFull"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "version": "4",
        "groupKey": '{}:{alertname="DiskFull"}',
        "truncatedAlerts": 0,
    }
    body.update(top)
    return body


def encode(body: Any) -> bytes:
    return json.dumps(body).encode()


# --- parsing ---------------------------------------------------------------------------------


def test_firing_payload_with_a_resolved_alert_inside_maps_both() -> None:
    events = parse_alertmanager(encode(payload(FIRING, RESOLVED)), now=NOW)

    assert [event.status for event in events] == ["firing", "resolved"]
    fired, resolved = events
    assert fired == AlertEvent(
        fingerprint="am:9effc084e637399e",
        status="firing",
        labels={"alertname": "DiskFull", "instance": "db1", "severity": "critical"},
        annotations={"summary": "disk / is 97% full", "runbook_url": "https://example/disk"},
        starts_at=datetime(2026, 11, 22, 11, 58, 1, 634217, tzinfo=UTC),
        ends_at=None,
        at=NOW,
        source="alertmanager",
    )
    assert resolved.fingerprint == "am:108e9abdc92a7515"
    assert resolved.labels["severity"] == "critical"
    assert resolved.labels["am_severity"] == "page"
    assert resolved.ends_at == datetime(2026, 11, 22, 10, 59, 30, 500000, tzinfo=UTC)
    assert resolved.name == "DiskFull"


def test_the_same_alert_twice_in_one_payload_is_kept_twice() -> None:
    events = parse_alertmanager(encode(payload(FIRING, FIRING)), now=NOW)
    assert len(events) == 2


def test_missing_severity_defaults_to_warning_without_am_severity() -> None:
    alert = copy.deepcopy(FIRING)
    del alert["labels"]["severity"]
    (event,) = parse_alertmanager(encode(payload(alert)), now=NOW)
    assert event.severity == "warning"
    assert "am_severity" not in event.labels


def test_missing_fingerprint_falls_back_to_the_label_hash() -> None:
    alert = copy.deepcopy(FIRING)
    del alert["fingerprint"]
    (event,) = parse_alertmanager(encode(payload(alert)), now=NOW)
    assert event.fingerprint == "am:" + fingerprint(FIRING["labels"])


def test_missing_annotations_and_ends_at_are_empty() -> None:
    alert = copy.deepcopy(FIRING)
    del alert["annotations"], alert["endsAt"]
    (event,) = parse_alertmanager(encode(payload(alert)), now=NOW)
    assert event.annotations == {}
    assert event.ends_at is None


def test_an_empty_group_is_no_events() -> None:
    assert parse_alertmanager(encode(payload()), now=NOW) == []


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, "warning"),
        ("critical", "critical"),
        ("warning", "warning"),
        ("info", "info"),
        ("page", "critical"),
        ("error", "critical"),
        ("CRITICAL", "critical"),
        ("warn", "warning"),
        ("minor", "warning"),
        ("none", "info"),
        ("low", "info"),
        ("something-new", "warning"),
    ],
)
def test_severity_is_folded_onto_three_levels(given: str | None, expected: str) -> None:
    assert normalize_severity(given) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-22T11:58:01Z", datetime(2026, 11, 22, 11, 58, 1, tzinfo=UTC)),
        ("2026-11-22T11:58:01.1Z", datetime(2026, 11, 22, 11, 58, 1, 100000, tzinfo=UTC)),
        ("2026-11-22T11:58:01.999999999Z", datetime(2026, 11, 22, 11, 58, 1, 999999, tzinfo=UTC)),
        ("2026-11-22T11:58:01.000000001Z", datetime(2026, 11, 22, 11, 58, 1, tzinfo=UTC)),
        ("2026-11-22t13:58:01.5+02:00", datetime(2026, 11, 22, 11, 58, 1, 500000, tzinfo=UTC)),
        ("2026-11-22T06:28:01-05:30", datetime(2026, 11, 22, 11, 58, 1, tzinfo=UTC)),
        ("0001-01-01T00:00:00Z", datetime(1, 1, 1, tzinfo=UTC)),
    ],
)
def test_rfc3339_with_nanoseconds(text: str, expected: datetime) -> None:
    assert parse_rfc3339(text) == expected


def test_nanosecond_resolve_time_is_parsed() -> None:
    alert = copy.deepcopy(RESOLVED)
    alert["endsAt"] = "2026-11-22T11:59:59.123456789Z"
    (event,) = parse_alertmanager(encode(payload(alert)), now=NOW)
    assert event.ends_at == datetime(2026, 11, 22, 11, 59, 59, 123456, tzinfo=UTC)


def _without(key: str) -> dict[str, Any]:
    alert = copy.deepcopy(FIRING)
    del alert[key]
    return alert


def _with(**changes: Any) -> dict[str, Any]:
    alert = copy.deepcopy(FIRING)
    alert.update(changes)
    return alert


BAD_ALERTS: list[tuple[dict[str, Any], str]] = [
    (_without("status"), 'alerts[1].status: expected "firing" or "resolved", missing'),
    (_with(status="pending"), 'alerts[1].status: expected "firing" or "resolved", got "pending"'),
    (_without("labels"), "alerts[1].labels: missing"),
    (_with(labels=["alertname"]), "alerts[1].labels: expected an object of strings, got list"),
    (_with(labels={"alertname": "X", "port": 22}), "alerts[1].labels.port: expected a string"),
    (_with(labels={"instance": "db1"}), "alerts[1].labels: missing alertname"),
    (_with(labels={"alertname": ""}), "alerts[1].labels: missing alertname"),
    (_with(annotations="text"), "alerts[1].annotations: expected an object of strings, got string"),
    (_with(annotations={"summary": None}), "alerts[1].annotations.summary: expected a string"),
    (_without("startsAt"), "alerts[1].startsAt: missing"),
    (_with(startsAt=1700000000), "alerts[1].startsAt: expected an RFC 3339 string, got number"),
    (_with(startsAt="yesterday"), 'alerts[1].startsAt: not an RFC 3339 time: "yesterday"'),
    (_with(startsAt="2026-11-22 11:58"), "alerts[1].startsAt: not an RFC 3339 time"),
    (_with(startsAt="2026-11-22T11:58:01"), "alerts[1].startsAt: not an RFC 3339 time"),
    (_with(startsAt="2026-13-22T11:58:01Z"), "alerts[1].startsAt: out of range"),
    (_with(endsAt="2026-11-22T11:58:01.1234567890Z"), "alerts[1].endsAt: not an RFC 3339 time"),
    (_with(endsAt="0001-01-01T00:00:00+01:00"), "alerts[1].endsAt: out of range"),
    (_with(fingerprint=12), "alerts[1].fingerprint: expected a string, got number"),
    # JSON "\ud800" decodes to a lone surrogate, which SQLite cannot store: a 400, never a 503
    (
        _with(labels={"alertname": "X", "instance": "db\ud800"}),
        "alerts[1].labels.instance: the value is not valid Unicode: lone surrogate \\ud800 at "
        "character 2",
    ),
    (
        _with(labels={"alertname": "X", "in\udfffst": "db1"}),
        "alerts[1].labels: a label name is not valid Unicode: lone surrogate \\udfff",
    ),
    (
        _with(annotations={"summary": "\udc80"}),
        "alerts[1].annotations.summary: the value is not valid Unicode",
    ),
    (_with(fingerprint="ab\ud83d"), "alerts[1].fingerprint: the fingerprint is not valid Unicode"),
]


@pytest.mark.parametrize(("alert", "message"), BAD_ALERTS, ids=[m for _, m in BAD_ALERTS])
def test_each_bad_alert_is_rejected_naming_where(alert: dict[str, Any], message: str) -> None:
    with pytest.raises(PayloadError) as caught:
        parse_alertmanager(encode(payload(FIRING, alert)), now=NOW)
    assert str(caught.value).startswith(message)
    assert caught.value.location == message.partition(":")[0]


BAD_BODIES: list[tuple[bytes, str]] = [
    (b"{not json", "body: not valid JSON"),
    (b"\xff\xfe", "body: not valid JSON"),
    (
        encode(payload(FIRING)).replace(b"db1", b"db\xff"),
        "body: not valid UTF-8: byte 0xff at offset",
    ),
    (b'{"version": ' + b"9" * 5000 + b"}", "body: not valid JSON (Exceeds the limit"),
    (b"[" * 100_000 + b"]" * 100_000, "body: not valid JSON"),
    (b"[]", "body: expected a JSON object, got list"),
    (encode({k: v for k, v in payload().items() if k != "version"}), "version: missing"),
    (encode(payload(version="3")), 'version: expected "4", got "3"'),
    (encode(payload(version=4)), 'version: expected "4", got 4'),
    (encode({k: v for k, v in payload().items() if k != "alerts"}), "alerts: expected a list"),
    (encode(payload(alerts={"0": FIRING})), "alerts: expected a list, got object"),
    (encode(payload(alerts=["firing"])), "alerts[0]: expected an object, got string"),
]


@pytest.mark.parametrize(("body", "message"), BAD_BODIES, ids=[m for _, m in BAD_BODIES])
def test_each_bad_body_is_rejected(body: bytes, message: str) -> None:
    with pytest.raises(PayloadError) as caught:
        parse_alertmanager(body, now=NOW)
    assert str(caught.value).startswith(message)


def test_payload_error_is_a_value_error() -> None:
    assert issubclass(PayloadError, ValueError)


# --- the route ---------------------------------------------------------------------------------


@dataclass
class RecordingIntake:
    batches: list[list[AlertEvent]] = field(default_factory=list)
    fail: bool = False

    async def accept(self, events: Sequence[AlertEvent]) -> None:
        if self.fail:
            raise RuntimeError("database is locked")
        self.batches.append(list(events))


@dataclass
class Receiver:
    client: TestClient[web.Request, web.Application]
    intake: RecordingIntake
    stats: WebhookStats

    async def post(self, body: bytes | Any, token: str | None = TOKEN, **kw: Any) -> Any:
        headers = {"Content-Type": "application/json", **kw.pop("headers", {})}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data = body if isinstance(body, bytes) else encode(body)
        return await self.client.post(PATH, data=data, headers=headers, **kw)


async def _receiver(token: str | None, max_bytes: int = 1_048_576) -> AsyncIterator[Receiver]:
    intake, stats = RecordingIntake(), WebhookStats()
    app = web.Application()
    app.add_routes(
        alertmanager_routes(intake, token, max_bytes=max_bytes, clock=ManualClock(NOW), stats=stats)
    )
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield Receiver(client, intake, stats)


def taken(receiver: Receiver) -> list[AlertEvent]:
    """Events the intake got from payloads (not the refusal alarm's own)."""
    return [e for b in receiver.intake.batches for e in b if e.name != REJECTED_ALERT]


def alarms(receiver: Receiver) -> list[str]:
    return [e.status for b in receiver.intake.batches for e in b if e.name == REJECTED_ALERT]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async for item in _receiver(TOKEN, max_bytes=4096):
        yield item


async def test_valid_payload_is_accepted_and_handed_to_the_intake(receiver: Receiver) -> None:
    response = await receiver.post(payload(FIRING, RESOLVED))

    assert response.status == 200
    assert await response.json() == {"accepted": 2}
    (batch,) = receiver.intake.batches
    assert [event.fingerprint for event in batch] == ["am:9effc084e637399e", "am:108e9abdc92a7515"]
    assert all(event.at == NOW and event.source == "alertmanager" for event in batch)
    assert receiver.stats.accepted_events == 2


async def test_missing_token_is_401_with_a_challenge(receiver: Receiver) -> None:
    response = await receiver.post(payload(FIRING), token=None)

    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert await response.json() == {"error": "no bearer token"}
    assert taken(receiver) == []  # only our own alarm, no alert of the payload
    assert receiver.stats.auth_failures == 1


async def test_other_auth_schemes_are_401(receiver: Receiver) -> None:
    response = await receiver.post(
        payload(FIRING), token=None, headers={"Authorization": f"Basic {TOKEN}"}
    )
    assert response.status == 401
    assert taken(receiver) == []  # only our own alarm, no alert of the payload


async def test_wrong_token_is_401_and_logged_without_the_token(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="daemon.alerting.alertmanager")
    wrong = "guessed-token-abcdef"

    response = await receiver.post(payload(FIRING), token=wrong)

    assert response.status == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert taken(receiver) == []  # only our own alarm, no alert of the payload
    assert receiver.stats.auth_failures == 1
    assert "127.0.0.1" in caplog.text and "wrong bearer token" in caplog.text
    assert wrong not in caplog.text and TOKEN not in caplog.text


async def test_a_token_prefix_is_not_enough(receiver: Receiver) -> None:
    response = await receiver.post(payload(FIRING), token=TOKEN[:-1])
    assert response.status == 401


async def test_without_a_configured_token_the_route_is_disabled() -> None:
    async for receiver in _receiver(None):
        response = await receiver.post(payload(FIRING), token="anything")
        assert response.status == 503
        assert await response.json() == {"error": DISABLED}
        assert "api.webhook_token" in DISABLED
        assert taken(receiver) == []  # only our own alarm, no alert of the payload


async def test_an_empty_configured_token_also_disables_the_route() -> None:
    async for receiver in _receiver(""):
        response = await receiver.post(payload(FIRING), token=None, headers={})
        assert response.status == 503


async def test_body_over_the_limit_is_413(receiver: Receiver) -> None:
    alert = _with(annotations={"description": "x" * 5000})

    response = await receiver.post(payload(alert))

    assert response.status == 413
    assert "4096" in (await response.json())["error"]
    assert taken(receiver) == []  # only our own alarm, no alert of the payload


async def test_chunked_body_over_the_limit_is_413(receiver: Receiver) -> None:
    big = encode(payload(_with(annotations={"description": "x" * 5000})))

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(big), 1000):
            yield big[start : start + 1000]

    response = await receiver.client.post(
        PATH, data=chunks(), headers={"Authorization": f"Bearer {TOKEN}"}
    )

    assert response.status == 413
    assert taken(receiver) == []  # only our own alarm, no alert of the payload


async def test_malformed_json_is_400_with_the_reason(receiver: Receiver) -> None:
    response = await receiver.post(b'{"version": "4", "alerts": [')
    assert response.status == 400
    assert (await response.json())["error"].startswith("body: not valid JSON")
    assert taken(receiver) == []  # only our own alarm, no alert of the payload


async def test_invalid_payload_is_400_naming_the_alert(receiver: Receiver) -> None:
    response = await receiver.post(payload(FIRING, FIRING, FIRING, _with(labels={"a": "b"})))
    assert response.status == 400
    assert await response.json() == {"error": "alerts[3].labels: missing alertname"}
    assert taken(receiver) == []  # only our own alarm, no alert of the payload
    assert receiver.stats.rejected == 1


async def test_a_body_that_never_arrives_is_408_after_the_read_timeout() -> None:
    app = web.Application()
    app.add_routes(
        alertmanager_routes(RecordingIntake(), TOKEN, body_timeout=0.2, clock=ManualClock(NOW))
    )
    async with TestServer(app, host="127.0.0.1") as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            f"POST {PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Content-Length: 1000\r\n\r\n{".encode()
        )
        answer = b""
        async with asyncio.timeout(30):
            while not answer.endswith(b"}"):
                answer += await reader.read(1024)
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408")
    assert b'{"error": "body not received within 0.2 s"}' in answer


async def test_intake_failure_is_503_so_alertmanager_retries(receiver: Receiver) -> None:
    receiver.intake.fail = True
    response = await receiver.post(payload(FIRING))
    assert response.status == 503
    assert receiver.stats.intake_failures == 1

    receiver.intake.fail = False
    response = await receiver.post(payload(FIRING))
    assert response.status == 200
    assert len(receiver.intake.batches) == 1


async def test_only_post_is_served(receiver: Receiver) -> None:
    response = await receiver.client.get(PATH, headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status == 405


async def test_a_refused_payload_raises_one_alarm_until_one_is_accepted_again(
    receiver: Receiver,
) -> None:
    """Alertmanager retries no 4xx: the refused alerts are lost, so people must hear of it."""
    big = payload(_with(annotations={"description": "x" * 5000}))
    for _ in range(3):
        assert (await receiver.post(big)).status == 413
    assert (await receiver.post(payload(FIRING), token="wrong")).status == 401
    [firing] = [e for b in receiver.intake.batches for e in b if e.name == REJECTED_ALERT]
    assert firing.severity == "critical" and "413" in firing.annotations["summary"]
    assert "webhook_max_bytes" in firing.annotations["summary"]
    assert (await receiver.post(payload(FIRING))).status == 200
    assert alarms(receiver) == ["firing", "resolved"]
