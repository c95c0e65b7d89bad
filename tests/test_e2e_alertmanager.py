"""End to end: the real Prometheus Alertmanager → nightshift's webhook (TCP, bearer token) →
incident → notification on the console channel → resolved notice; no LLM involved."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.peers.alertmanager import SKIP_REASON, Alertmanager, alertmanager_binary, free_port
from tests.support import DaemonProcess

pytestmark = pytest.mark.skipif(alertmanager_binary() is None, reason=SKIP_REASON)

TOKEN = "webhook-token-3c7e1f0b9a"


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[DaemonProcess]:
    port = free_port()
    config = tmp_path / "config.toml"
    config.write_text(
        f'[api]\ntcp_port = {port}\nwebhook_token = "{TOKEN}"\n'
        "[incidents]\ngroup_wait_seconds = 0.2\ngroup_interval_seconds = 1.0\n"
        "[watchers.host]\nenabled = false\n"
    )
    process = DaemonProcess(config, tmp_path / "state")
    process.port = port  # type: ignore[attr-defined]
    await process.start()
    yield process
    await process.stop()


def console_texts(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return [row[0] for row in conn.execute(
            "SELECT text FROM outbox WHERE channel = 'console' ORDER BY id")]  # fmt: skip
    finally:
        conn.close()


async def wait_for(db: Path, needle: str, timeout: float = 30.0) -> str:
    for _ in range(int(timeout / 0.1)):
        for text in console_texts(db):
            if needle in text:
                return text
        await asyncio.sleep(0.1)
    raise AssertionError(f"{needle!r} never queued: {console_texts(db)}")


async def test_alertmanager_alerts_open_notify_and_resolve_an_incident(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{daemon.port}/v1/webhooks/alertmanager"  # type: ignore[attr-defined]
    db = daemon.state_dir / "nightshift.db"
    async with Alertmanager(tmp_path / "am", url, TOKEN) as am:
        started = datetime.now(UTC)
        labels = {"alertname": "PostgresDown", "severity": "critical", "instance": "db1"}
        await am.fire(labels, {"summary": "postgres on db1 is down"})
        text = await wait_for(db, "[FIRING:1] PostgresDown")
        assert "postgres on db1 is down" in text and "(critical)" in text
        await am.resolve(labels, {"summary": "postgres on db1 is down"}, starts_at=started)
        await wait_for(db, "[RESOLVED] PostgresDown — incident #1")
        await asyncio.sleep(2.5)  # Alertmanager's later group ticks must not notify again
        notices = [t for t in console_texts(db) if t.startswith(("[FIRING", "[RESOLVED"))]
        assert len(notices) == 2, notices
    code, out, _ = await daemon.cli("incidents", "show", "1")
    assert code == 0 and "alert firing" in out and "alert resolved" in out
