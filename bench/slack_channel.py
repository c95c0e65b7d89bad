"""SlackChannel against the loopback FakeSlack: outbox-style throughput and reconnect times.

Prints figures, asserts nothing. Usage: python bench/slack_channel.py [--messages 500]
[--liveness 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pydantic import SecretStr

from integrations.base import ApprovalAnswer, ApprovalOutcome, InboundMessage, OutgoingMessage
from integrations.slack.channel import SlackChannel
from integrations.slack.settings import SlackChannelSettings
from tests.fakes.slack import APP_TOKEN, BOT_TOKEN, FakeSlack


class Sink:
    """Counts inbound messages and wakes a waiter on each."""

    def __init__(self) -> None:
        self.messages: list[InboundMessage] = []
        self.arrived = asyncio.Event()

    async def on_message(self, message: InboundMessage) -> None:
        self.messages.append(message)
        self.arrived.set()

    async def on_approval(self, answer: ApprovalAnswer) -> ApprovalOutcome:
        return ApprovalOutcome(text="Approved.", accepted=True)


def dm(text: str, ts: str) -> dict[str, str]:
    return {
        "type": "message",
        "channel": "D1",
        "channel_type": "im",
        "user": "U1",
        "text": text,
        "ts": ts,
    }


async def deliver_after(slack: FakeSlack, sink: Sink, started: float, ts: str) -> float:
    """Push one DM (waits for a live socket) and return seconds from ``started`` to delivery."""
    sink.arrived.clear()
    await slack.push_event(dm("ping", ts), timeout=120)
    await asyncio.wait_for(sink.arrived.wait(), 120)
    return time.monotonic() - started


async def main(count: int, liveness: float) -> None:
    async with FakeSlack() as slack:
        settings = SlackChannelSettings(
            enabled=True,
            bot_token=SecretStr(BOT_TOKEN),
            app_token=SecretStr(APP_TOKEN),
            api_url=slack.api_url,
            default_channel="C1",
            liveness_seconds=liveness,
        )
        channel, sink = SlackChannel(settings), Sink()
        t0 = time.monotonic()
        await channel.start(sink)
        print(f"start() until connected: {time.monotonic() - t0:.3f} s ({channel.health().state})")
        try:
            latencies: list[float] = []
            begin = time.monotonic()
            for i in range(count):
                t = time.monotonic()
                await channel.send(OutgoingMessage(outbox_id=i, target="", text=f"message {i}"))
                latencies.append(time.monotonic() - t)
            elapsed = time.monotonic() - begin
            latencies.sort()
            p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
            print(
                f"send x{count} sequential: {count / elapsed:.0f} messages/s, "
                f"p50 {statistics.median(latencies) * 1000:.2f} ms, "
                f"p99 {p99 * 1000:.2f} ms"
            )

            t = time.monotonic()
            await deliver_after(slack, sink, t, "1.1")
            print(f"inbound DM to sink (socket healthy): {(time.monotonic() - t) * 1000:.1f} ms")

            before = len(slack.connections)
            slack.go_silent()
            seconds = await deliver_after(slack, sink, time.monotonic(), "2.1")
            print(
                f"silent socket -> event delivered again: {seconds:.2f} s "
                f"(liveness_seconds={liveness:g}, sockets opened {len(slack.connections) - before},"
                f" watchdog rebuilds {channel.rebuilds})"
            )

            rebuilds = channel.rebuilds
            slack.refuse_sockets = True  # the SDK retries the consumed URL forever
            conn = slack.go_silent()
            started = time.monotonic()
            await conn.ws.close()
            await asyncio.sleep(0.5)
            slack.refuse_sockets = False
            seconds = await deliver_after(slack, sink, started, "3.1")
            print(
                f"dropped socket + refused URL -> event delivered again: {seconds:.2f} s "
                f"(watchdog rebuilds {channel.rebuilds - rebuilds})"
            )
        finally:
            await channel.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--liveness", type=float, default=5.0)
    args = parser.parse_args()
    asyncio.run(main(args.messages, args.liveness))
