"""Fuzz the Alertmanager webhook of a running `nightshift run` (hypothesis).

Mutated v4 payloads (fields deleted or replaced by values of the wrong type, huge strings, deep
nesting, lone surrogates), random JSON and random bytes: every answer is a 2xx, or a 4xx with a
JSON reason; never a 5xx. Afterwards the daemon still serves, every alert it accepted is a
committed row, and the incident manager has handled each of them (none stuck or crashing it).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.peers.alertmanager import free_port
from tests.support import NIGHTSHIFT, ROOT

TOKEN = "fuzz-webhook-token-5d4c3b2a"
PATH = "/v1/webhooks/alertmanager"
EXAMPLES = 250
GUARD = 60.0


@dataclass
class Daemon:
    port: int
    db: Path
    log: Path


def request(port: int, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=GUARD)
    try:
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def scalar(db: Path, sql: str) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


def poll(check: Any, what: str) -> None:
    deadline = time.monotonic() + GUARD
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"never: {what}")
        time.sleep(0.1)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    port = free_port()
    config = tmp_path / "config.toml"
    config.write_text(
        f'[api]\ntcp_port = {port}\nwebhook_token = "{TOKEN}"\n'
        "[incidents]\ngroup_wait_seconds = 0.2\ngroup_interval_seconds = 1.0\n"
        "[watchers.host]\nenabled = false\n"
    )
    state, log = tmp_path / "state", tmp_path / "daemon.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name in ("NOTIFY_SOCKET", "CREDENTIALS_DIRECTORY"):
        env.pop(name, None)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*NIGHTSHIFT, "run", "--config", str(config), "--state-dir", str(state)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:

        def ready() -> bool:
            assert process.poll() is None, log.read_text()
            try:
                return request(port, "GET", "/healthz")[0] == 200
            except OSError:
                return False

        poll(ready, "the daemon answers /healthz")
        yield Daemon(port, state / "nightshift.db", log)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- payloads ------------------------------------------------------------------------------------

surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
texts = st.text(max_size=20) | st.text(st.characters() | surrogates, max_size=20)
leaves = st.none() | st.booleans() | st.integers() | st.floats() | texts
json_values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)
huge_strings = st.sampled_from([10_000, 300_000, 1_100_000]).map(lambda n: "x" * n)
deep = st.integers(100, 100_000).map(lambda n: json.loads("[" * min(n, 500) + "]" * min(n, 500)))
replacements = json_values | huge_strings | deep | st.text(surrogates, min_size=1, max_size=3)

PATHS: list[tuple[str | int, ...]] = [
    ("version",),
    ("status",),
    ("groupKey",),
    ("truncatedAlerts",),
    ("alerts",),
    ("alerts", 0),
    ("alerts", 0, "status"),
    ("alerts", 0, "labels"),
    ("alerts", 0, "labels", "alertname"),
    ("alerts", 0, "labels", "severity"),
    ("alerts", 0, "labels", "instance"),
    ("alerts", 0, "annotations"),
    ("alerts", 0, "annotations", "summary"),
    ("alerts", 0, "startsAt"),
    ("alerts", 0, "endsAt"),
    ("alerts", 0, "fingerprint"),
    ("alerts", 1, "labels", "job"),
]


def valid(name: str, count: int) -> dict[str, Any]:
    alert = {
        "status": "firing",
        "labels": {"alertname": name, "severity": "warning", "instance": "db1"},
        "annotations": {"summary": "disk is full"},
        "startsAt": "2026-11-22T11:58:01.634217013Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": "9effc084e637399e",
    }
    return {"version": "4", "status": "firing", "groupKey": "{}:{}", "truncatedAlerts": 0,
            "alerts": [json.loads(json.dumps(alert)) for _ in range(count)]}  # fmt: skip


def apply(body: Any, path: tuple[str | int, ...], value: Any, delete: bool) -> None:
    """Replace (or delete) what ``path`` names, where the payload still has that shape."""
    *parents, last = path
    for key in parents:
        if not _has(body, key):
            return
        body = body[key]
    if isinstance(body, dict) and isinstance(last, str):
        if delete:
            body.pop(last, None)
        else:
            body[last] = value
    elif isinstance(body, list) and isinstance(last, int) and _has(body, last):
        if delete:
            del body[last]
        else:
            body[last] = value


def _has(body: Any, key: str | int) -> bool:
    if isinstance(body, dict):
        return isinstance(key, str) and key in body
    return isinstance(body, list) and isinstance(key, int) and key < len(body)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    name = draw(st.text(st.characters(categories=["L", "N"]), min_size=1, max_size=12))
    body = valid(name, draw(st.integers(1, 3)))
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(PATHS))
        apply(body, path, draw(replacements), delete=draw(st.booleans()))
    return json.dumps(body).encode()


payloads = (
    mutated()
    | json_values.map(lambda value: json.dumps(value).encode())
    | st.binary(max_size=200)
    | st.integers(1, 200_000).map(lambda n: b"[" * n + b"]" * n)
)


def test_fuzzed_payloads_get_2xx_or_4xx_and_accepted_alerts_are_kept(daemon: Daemon) -> None:
    accepted = 0
    answers: dict[int, int] = {}

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(payloads)
    def one(body: bytes) -> None:
        nonlocal accepted
        status, raw = request(daemon.port, "POST", PATH, body)
        answers[status] = answers.get(status, 0) + 1
        assert 200 <= status < 500, (status, raw[:300])
        reply = json.loads(raw)
        if status == 200:
            accepted += reply["accepted"]
        else:
            assert isinstance(reply["error"], str) and reply["error"], reply

    one()
    print("answers:", dict(sorted(answers.items())), "accepted alerts:", accepted)

    assert answers.get(200, 0) > 0 and answers.get(400, 0) > 0, answers  # both kinds were tried
    assert request(daemon.port, "GET", "/healthz")[0] == 200
    ours = "SELECT count(*) FROM alert_events WHERE source != 'nightshift'"  # not the alarm's
    assert scalar(daemon.db, ours) == accepted
    poll(
        lambda: scalar(daemon.db, "SELECT count(*) FROM alert_events WHERE handled = 0") == 0,
        "the incident manager handled every accepted alert",
    )
    assert "Traceback" not in daemon.log.read_text()
