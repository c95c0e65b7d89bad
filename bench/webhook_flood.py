"""Hostile senders against `nightshift run`: an alert flood through the webhook, and a
connection flood against the TCP listener under a low open-file limit.

Alert flood: one authenticated Alertmanager payload of ``--alerts`` critical alerts, each its own
group (so each its own incident), with the fake Kimi answering every investigation with
``--tokens-per-call`` tokens. Printed: the payload's size and the webhook's answer time, the
time until every incident is announced, investigations run / skipped, LLM calls and tokens
spent, and /healthz latency (p50/p99) while the flood is handled.

Connection flood: ``--connections`` TCP connections at once against a daemon whose soft
RLIMIT_NOFILE is ``--nofile``. Printed: how many were refused with 503, how long until /healthz
answered again after they closed, and the warning and traceback lines in the daemon's log.

Usage: python -m bench.webhook_flood [--alerts 5000] [--connections 2000] [--nofile 512]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fakes.chat_completions import FakeChatServer, Reply
from tests.peers.alertmanager import free_port
from tests.support import DaemonProcess

TOKEN = "bench-webhook-token-0123"
FINDINGS = "## Summary\nflood\n## Evidence\n-\n## Likely cause\n-\n## Proposed actions\n-"


def config(port: int, base_url: str) -> str:
    return (
        f'[llm]\nbase_url = "{base_url}"\napi_key = "sk-test-0123456789abcdef"\n'
        f'[api]\ntcp_port = {port}\nwebhook_token = "{TOKEN}"\n'
        "[incidents]\ngroup_wait_seconds = 0.2\ngroup_interval_seconds = 1.0\n"
        'investigate = ["critical"]\npostmortems = false\n'
        "[watchers.host]\nenabled = false\n"
    )


def scalar(db: Path, sql: str) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute(sql).fetchone()[0] or 0)
    finally:
        conn.close()


def prepare(work: Path, port: int, base_url: str) -> Path:
    work.mkdir()
    path = work / "config.toml"
    path.write_text(config(port, base_url))
    return path


async def start(work: Path, base_url: str, nofile: int | None = None) -> DaemonProcess:
    port = free_port()
    daemon = DaemonProcess(prepare(work, port, base_url), work / "state", nofile=nofile)
    daemon.port = port  # type: ignore[attr-defined]
    await daemon.start()
    return daemon


async def alert_flood(work: Path, alerts: int, tokens: int) -> None:
    async with FakeChatServer() as fake:
        fake.responder = lambda _: Reply(
            content=FINDINGS, prompt_tokens=tokens - tokens // 10, completion_tokens=tokens // 10
        )
        daemon = await start(work, fake.base_url)
        port, db = daemon.port, daemon.state_dir / "nightshift.db"  # type: ignore[attr-defined]
        body = json.dumps(
            {
                "version": "4",
                "status": "firing",
                "alerts": [
                    {
                        "status": "firing",
                        "labels": {"alertname": f"Flood{n:05d}", "severity": "critical"},
                        "startsAt": "2026-11-22T11:58:01Z",
                    }
                    for n in range(alerts)
                ],
            }
        ).encode()
        url = f"http://127.0.0.1:{port}"
        latencies: list[float] = []
        try:
            async with aiohttp.ClientSession() as session:
                started = time.perf_counter()
                async with session.post(
                    f"{url}/v1/webhooks/alertmanager",
                    data=body,
                    headers={"Authorization": f"Bearer {TOKEN}"},
                ) as response:
                    answer = response.status, await response.text()
                answered = time.perf_counter() - started
                announced = 0
                for _ in range(1200):
                    probe = time.perf_counter()
                    async with session.get(f"{url}/healthz") as health:
                        await health.read()
                    latencies.append(time.perf_counter() - probe)
                    announced = scalar(db, "SELECT count(*) FROM outbox WHERE text LIKE '[FIRING%'")
                    if announced >= alerts:
                        break
                    await asyncio.sleep(0.05)
                done = time.perf_counter() - started
        finally:
            await daemon.stop()
        skipped = scalar(db, "SELECT count(*) FROM incident_events WHERE detail LIKE "
                         "'investigation skipped:%'")  # fmt: skip
        ran = scalar(
            db, "SELECT count(*) FROM incident_events WHERE kind = 'investigation started'"
        )
        spent = scalar(db, "SELECT sum(total_tokens) FROM llm_usage")
        latencies.sort()
        print(f"alert flood: {alerts} alerts in distinct groups, {len(body) / 1024:.0f} KiB")
        print(f"  webhook answer {answer[0]} {answer[1][:40]} in {answered * 1000:.0f} ms")
        print(f"  {announced} incidents announced in {done:.1f} s")
        print(f"  investigations run {ran}, skipped over a limit {skipped}")
        print(f"  LLM calls {fake.calls}, tokens {spent:,} (daily budget 2,000,000)")
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        print(
            f"  /healthz during the flood: p50 {statistics.median(latencies) * 1000:.1f} ms, "
            f"p99 {p99 * 1000:.1f} ms ({len(latencies)} probes)"
        )


async def connection_flood(work: Path, connections: int, nofile: int) -> None:
    daemon = await start(work, "http://127.0.0.1:9/v1", nofile=nofile)
    port = daemon.port  # type: ignore[attr-defined]
    try:
        opened: list[Any] = await asyncio.gather(
            *(
                asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
                for _ in range(connections)
            ),
            return_exceptions=True,
        )
        conns = [conn for conn in opened if not isinstance(conn, BaseException)]
        reads = [asyncio.ensure_future(reader.read(12)) for reader, _ in conns]
        _, pending = await asyncio.wait(reads, timeout=5)
        refused = sum(1 for r in reads if r.done() and r.result().startswith(b"HTTP/1.1 503"))
        for task in pending:
            task.cancel()
        closed = time.perf_counter()
        for _, writer in conns:
            writer.close()
        async with aiohttp.ClientSession() as session:
            for _ in range(600):
                try:
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as health:
                        if health.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.01)
        back = time.perf_counter() - closed
    finally:
        await daemon.stop()
    log = await daemon.output()
    print(f"connection flood: {connections} at once, daemon RLIMIT_NOFILE {nofile}")
    print(
        f"  connect failed: {connections - len(conns)}, refused with 503: {refused}, "
        f"held or still queued: {len(conns) - refused}"
    )
    print(f"  /healthz 200 again {back * 1000:.0f} ms after they closed")
    print(
        f"  log: {log.count('refusing new ones')} cap warning(s), "
        f"{log.count('out of file descriptors')} EMFILE warning(s), "
        f"{log.count('Traceback')} traceback(s)"
    )


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        await alert_flood(Path(tmp) / "alerts", args.alerts, args.tokens_per_call)
        await connection_flood(Path(tmp) / "conns", args.connections, args.nofile)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=5000)
    parser.add_argument("--tokens-per-call", type=int, default=20000)
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--nofile", type=int, default=512)
    asyncio.run(main(parser.parse_args()))
