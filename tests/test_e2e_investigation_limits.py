"""End to end, an alert flood cannot spend the token budget: `nightshift run` with its webhook,
the fake Kimi answering investigations, and one authenticated payload of many alerts in distinct
groups. At most max_concurrent_investigations run at once and max_investigations_per_hour start
per hour; every incident is still announced, and the skipped ones say why on their timeline.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from tests.fakes.chat_completions import FakeChatServer, Reply
from tests.peers.alertmanager import free_port
from tests.support import DaemonProcess

TOKEN = "webhook-token-7a1c0e"
FINDINGS = "## Summary\nflood\n## Evidence\nnone\n## Likely cause\nload\n## Proposed actions\nnone"
GUARD = 60.0


def payload(names: list[str]) -> dict[str, Any]:
    return {
        "version": "4",
        "status": "firing",
        "groupKey": "{}:{}",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": name, "severity": "critical", "instance": "db1"},
                "annotations": {"summary": f"{name} is down"},
                "startsAt": "2026-11-22T11:58:01Z",
                "endsAt": "0001-01-01T00:00:00Z",
            }
            for name in names
        ],
    }


def query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


async def wait_until(check: Callable[[], bool], what: str, db: Path) -> None:
    for _ in range(int(GUARD / 0.1)):
        if check():
            return
        await asyncio.sleep(0.1)
    notes = query(db, "SELECT incident_id, kind, detail FROM incident_events ORDER BY id")
    raise AssertionError(f"never: {what}; timeline: {notes[-20:]}")


def announced(db: Path) -> int:
    return len(query(db, "SELECT id FROM outbox WHERE text LIKE '[FIRING%'"))


def skipped(db: Path, setting: str) -> list[int]:
    rows = query(
        db,
        "SELECT incident_id FROM incident_events WHERE kind = 'not investigated' "
        f"AND detail LIKE 'investigation skipped:%{setting}%' ORDER BY incident_id",
    )
    return [row[0] for row in rows]


def findings(db: Path) -> int:
    return len(
        query(
            db, "SELECT id FROM incident_events WHERE kind = 'findings' AND detail LIKE '%tokens'"
        )
    )


async def send(port: int, names: list[str]) -> None:
    await send_payload(port, payload(names), len(names))


async def send_payload(port: int, body: dict[str, Any], accepted: int) -> None:
    url = f"http://127.0.0.1:{port}/v1/webhooks/alertmanager"
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, json=body, headers={"Authorization": f"Bearer {TOKEN}"}) as response,
    ):
        assert response.status == 200, await response.text()
        assert await response.json() == {"accepted": accepted}


async def webhook_daemon(
    tmp_path: Path, *, llm_url: str | None = None, incidents: str = ""
) -> tuple[DaemonProcess, int]:
    """A started daemon taking Alertmanager webhooks on a free port (host watcher off, quick
    incident timings plus ``incidents`` lines), with the fake model at ``llm_url`` if given."""
    port = free_port()
    llm = (
        f'[llm]\nbase_url = "{llm_url}"\napi_key = "sk-test-0123456789abcdef"\n' if llm_url else ""
    )
    config = tmp_path / "config.toml"
    config.write_text(
        f'{llm}[api]\ntcp_port = {port}\nwebhook_token = "{TOKEN}"\n'
        f"[incidents]\ngroup_wait_seconds = 0.2\ngroup_interval_seconds = 1.0\n{incidents}"
        "[watchers.host]\nenabled = false\n"
    )
    daemon = DaemonProcess(config, tmp_path / "state")
    await daemon.start()
    return daemon, port


async def test_a_flood_of_incidents_runs_few_investigations_and_announces_all(
    tmp_path: Path, fake_llm: FakeChatServer
) -> None:
    release = asyncio.Event()

    async def slow_investigation(body: dict[str, Any]) -> Reply:
        await release.wait()  # keep the first investigations running while the flood lands
        return Reply(content=FINDINGS, prompt_tokens=1000, completion_tokens=200)

    fake_llm.responder = slow_investigation
    daemon, port = await webhook_daemon(
        tmp_path,
        llm_url=fake_llm.base_url,
        incidents='investigate = ["critical"]\npostmortems = false\n'
        "max_concurrent_investigations = 2\nmax_investigations_per_hour = 3\n",
    )
    db = daemon.state_dir / "nightshift.db"
    try:
        flood = [f"Flood{n:02d}" for n in range(20)]  # distinct alertnames: 20 incidents
        await send(port, flood)
        await wait_until(lambda: announced(db) == 20, "all 20 incidents announced", db)
        await wait_until(
            lambda: len(skipped(db, "max_concurrent_investigations = 2")) == 18,
            "18 investigations skipped for concurrency",
            db,
        )
        await wait_until(lambda: fake_llm.in_flight == 2, "two investigations at the model", db)
        release.set()
        await wait_until(lambda: findings(db) == 2, "the two investigations finished", db)

        later = [f"Later{n}" for n in range(5)]
        await send(port, later)
        await wait_until(lambda: announced(db) == 25, "the 5 later incidents announced", db)
        await wait_until(
            lambda: len(skipped(db, "max_investigations_per_hour = 3")) == 4,
            "4 later investigations skipped for the hourly limit",
            db,
        )
        await wait_until(lambda: findings(db) == 3, "the third investigation finished", db)
        code, out, err = await daemon.cli("status", "--json")
        assert code == 0, err
        assert json.loads(out)["investigations"] == {
            "running": 0,
            "skipped_over_limits": 22,
            "max_concurrent": 2,
            "max_per_hour": 3,
            "max_tokens_per_hour": 500_000,
        }
    finally:
        await daemon.stop()

    assert fake_llm.max_in_flight == 2
    assert fake_llm.calls == 3
    (tokens,) = query(db, "SELECT sum(total_tokens) FROM llm_usage")[0]
    assert tokens == 3 * 1200
    incidents = query(db, "SELECT count(*) FROM incidents")[0][0]
    assert incidents == 25  # nothing lost: every alert's incident exists and was announced
    notice = [
        text
        for (text,) in query(db, "SELECT text FROM outbox ORDER BY id")
        if "investigation skipped" in text
    ]
    assert len(notice) == 1  # one chat notice per hour, not one per skipped incident
    log = await daemon.output()
    skips = [line for line in log.splitlines() if "daemon.response.responder: incident #" in line]
    assert len(skips) == 1 and "investigation skipped" in skips[0], log  # not one per incident
    assert "max_concurrent_investigations" in notice[0] and "incidents show" in notice[0]
