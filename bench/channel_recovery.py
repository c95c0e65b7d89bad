"""Time from a chat platform's recovery to the first delivery of a message queued during its
outage, through the real durable path: SQLite outbox row → OutboxWorker → channel (the real
python-telegram-bot / slack-sdk clients) → the loopback Bot API / Slack fakes.

Each round: the platform goes down (HTTP 502 from the Bot API; 503 and no sockets from Slack),
a message is queued (its first attempt fails), the outage lasts ``--outage`` seconds (long enough
for every backoff to reach its cap), the platform comes back; measured: recovery → the fake
receives the message. Target: about a second.

Usage: python bench/channel_recovery.py [--outage 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.slack_channel import Sink
from daemon.core.clock import SystemClock
from integrations.base import Channel
from integrations.outbox import OutboxWorker
from integrations.slack.channel import SlackChannel
from integrations.slack.settings import SlackChannelSettings
from integrations.telegram.channel import TelegramChannel
from integrations.telegram.settings import TelegramChannelSettings
from memory.outbox import OutboxRepo
from memory.store import SqliteStore
from tests.fakes.slack import APP_TOKEN, BOT_TOKEN, FakeSlack
from tests.fakes.telegram import FakeTelegram

TOKEN = "123456:BENCH-token-for-channel-recovery-0000"
CHAT = 4242


async def rounds(
    channel: Channel,
    target: str,
    store_dir: Path,
    outage: Callable[[bool], None],
    delivered: Callable[[str], bool],
    seconds: float,
    count: int,
) -> list[float]:
    clock = SystemClock()
    store = await SqliteStore.open(store_dir / f"{channel.name}.db")
    repo = OutboxRepo(store, clock)
    worker = OutboxWorker(repo, channel, clock)
    await channel.start(Sink())
    runner = asyncio.create_task(worker.run())
    took: list[float] = []
    try:
        for n in range(count):
            outage(True)
            text = f"queued during outage {n}"
            await repo.enqueue(channel.name, target, text)
            worker.wake()
            await asyncio.sleep(seconds)
            outage(False)
            back = time.monotonic()
            while not delivered(text):
                await asyncio.sleep(0.01)
            took.append(time.monotonic() - back)
            await asyncio.sleep(1.0)  # settled before the next round
    finally:
        runner.cancel()
        await channel.stop()
        await store.close()
    return took


def show(name: str, took: list[float]) -> None:
    print(
        f"{name:<9} recovery → delivered: median {statistics.median(took):.2f} s, "
        f"max {max(took):.2f} s ({', '.join(f'{t:.2f}' for t in took)})"
    )


async def main(seconds: float, count: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with FakeTelegram(TOKEN, chats=[CHAT]) as tg:
            settings = TelegramChannelSettings(
                enabled=True, bot_token=SecretStr(TOKEN), api_url=tg.api_url,
                default_chat=str(CHAT),
            )  # fmt: skip

            def tg_outage(down: bool) -> None:
                tg.outage = 502 if down else None

            took = await rounds(
                TelegramChannel(settings), str(CHAT), Path(tmp), tg_outage,
                lambda text: text in tg.sent_texts(CHAT), seconds, count,
            )  # fmt: skip
            show("telegram", took)
        async with FakeSlack() as slack:
            slack_settings = SlackChannelSettings(
                enabled=True, bot_token=SecretStr(BOT_TOKEN), app_token=SecretStr(APP_TOKEN),
                api_url=slack.api_url, default_channel="C1", liveness_seconds=5,
            )  # fmt: skip

            def slack_outage(down: bool) -> None:
                slack.outage = down
                if down:
                    waiting.append(asyncio.ensure_future(slack.disconnect()))

            waiting: list[Awaitable[None]] = []
            took = await rounds(
                SlackChannel(slack_settings), "C1", Path(tmp), slack_outage,
                lambda text: any(m.get("text") == text for m in slack.messages.values()),
                seconds, count,
            )  # fmt: skip
            show("slack", took)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--outage", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.outage, args.rounds))
