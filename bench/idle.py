"""Idle cost of `nightshift run` on its defaults (host watcher on, agent on against a fake LLM).

Prints PSS and RSS from /proc/PID/smaps_rollup, CPU seconds per idle minute, and the number of
LLM calls made while idle (must be 0). Usage: python bench/idle.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._daemon import CLOCK_TICKS, cpu_seconds, memory_kb, start_daemon, stop  # noqa: E402
from tests.fakes.chat_completions import FakeChatServer  # noqa: E402


async def main(seconds: float, warmup: float, agent: bool) -> None:
    async with FakeChatServer() as fake:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            env = {"NIGHTSHIFT_LLM__BASE_URL": fake.base_url}
            if agent:
                env["NIGHTSHIFT_LLM__API_KEY"] = "sk-bench"
            print(f"agent: {'on (API key set, fake LLM)' if agent else 'off (no API key)'}")
            proc, ready = await asyncio.to_thread(start_daemon, work, None, env)
            try:
                await asyncio.sleep(warmup)
                cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
                await asyncio.sleep(seconds)
                cpu1, t1 = cpu_seconds(proc.pid), time.monotonic()
                mem = memory_kb(proc.pid)
            finally:
                code = await asyncio.to_thread(stop, proc)
            per_minute = (cpu1 - cpu0) / (t1 - t0) * 60
            print(f"startup until READY=1: {ready:.2f} s")
            print(f"idle window: {t1 - t0:.0f} s after {warmup:.0f} s warm-up")
            print(f"PSS: {mem['pss_kb'] / 1024:.1f} MB   RSS: {mem['rss_kb'] / 1024:.1f} MB")
            print(
                f"CPU: {per_minute:.4f} CPU-seconds per idle minute "
                f"({cpu1 - cpu0:.2f} s of {cpu1:.2f} s total; clock tick {1 / CLOCK_TICKS:.2f} s)"
            )
            print(f"LLM calls while idle: {fake.calls}")
            print(f"exit code after SIGTERM: {code}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--no-agent", action="store_true", help="run without an API key")
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.warmup, not args.no_agent))
