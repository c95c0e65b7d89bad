"""Outbox throughput and idle-path latency to the Slack fake, through the real durable path:
SQLite outbox row → OutboxWorker → SlackChannel (slack-sdk) → loopback Slack.

Usage: python bench/outbox.py [--count 500] [--samples 50]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.slack_channel import Sink
from daemon.core.clock import SystemClock
from integrations.outbox import OutboxWorker
from integrations.slack.channel import SlackChannel
from integrations.slack.settings import SlackChannelSettings
from memory.outbox import OutboxRepo
from memory.store import SqliteStore
from tests.fakes.slack import APP_TOKEN, BOT_TOKEN, FakeSlack


async def main(count: int, samples: int) -> None:
    async with FakeSlack() as slack:
        settings = SlackChannelSettings(
            enabled=True,
            bot_token=SecretStr(BOT_TOKEN),
            app_token=SecretStr(APP_TOKEN),
            api_url=slack.api_url,
            default_channel="C1",
        )
        channel = SlackChannel(settings)
        await channel.start(Sink())
        clock = SystemClock()
        with tempfile.TemporaryDirectory() as tmp:
            store = await SqliteStore.open(Path(tmp) / "bench.db")
            outbox = OutboxRepo(store, clock)
            worker = OutboxWorker(outbox, channel, clock)
            try:
                for n in range(count):
                    await outbox.enqueue("slack", "C1", f"bulk {n}")
                started = time.perf_counter()
                sent = await worker.flush()
                bulk = time.perf_counter() - started

                runner = asyncio.create_task(worker.run())
                latencies = []
                for n in range(samples):
                    before = len(slack.calls_to("chat.postMessage"))
                    started = time.perf_counter()
                    await outbox.enqueue("slack", "C1", f"idle {n}")
                    worker.wake()
                    while len(slack.calls_to("chat.postMessage")) == before:
                        await asyncio.sleep(0.0005)
                    latencies.append((time.perf_counter() - started) * 1000)
                    await asyncio.sleep(0.02)  # idle between messages
                runner.cancel()
            finally:
                await channel.stop()
                await store.close()
    latencies.sort()
    print(f"outbox → Slack fake, {sent} queued messages: {sent / bulk:.0f} messages/s")
    print(
        f"idle path (enqueue → chat.postMessage received), {samples} samples: "
        f"p50 {statistics.median(latencies):.2f} ms, "
        f"p99 {latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]:.2f} ms"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--samples", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(main(args.count, args.samples))
