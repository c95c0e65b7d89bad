"""A big Alertmanager group (3,000 alerts, ~1.3 MB: over the old fixed 1 MiB) is taken whole
and announced once; a payload over the configured limit raises an alert people hear about."""

from __future__ import annotations

import io
from pathlib import Path

import aiohttp

from tests.test_e2e_investigation_limits import (
    TOKEN,
    payload,
    query,
    send_payload,
    wait_until,
    webhook_daemon,
)


async def test_a_3000_alert_group_is_taken_and_a_refused_one_is_announced(tmp_path: Path) -> None:
    daemon, port = await webhook_daemon(tmp_path, incidents='group_by = ["instance"]\n')
    db = daemon.state_dir / "nightshift.db"
    try:
        big = payload([f"Disk{n:04d}" for n in range(3000)])
        await send_payload(port, big, 3000)
        notices = "SELECT text FROM outbox WHERE text LIKE '[FIRING%'"
        await wait_until(lambda: len(query(db, notices)) == 1, "one notice for the group", db)
        [(text,)] = query(db, notices)
        assert text.startswith("[FIRING:3000]")

        url = f"http://127.0.0.1:{port}/v1/webhooks/alertmanager"
        async with aiohttp.ClientSession() as session:
            huge = b'{"alerts": [' + b" " * (65 * 1024 * 1024) + b"]}"
            headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
            async with session.post(url, data=io.BytesIO(huge), headers=headers) as response:
                assert response.status == 413
        refused = "SELECT text FROM outbox WHERE text LIKE '%NightshiftWebhookRejected%'"
        await wait_until(lambda: len(query(db, refused)) == 1, "the refusal announced", db)
    finally:
        await daemon.stop()
