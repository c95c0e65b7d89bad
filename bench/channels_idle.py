"""RSS/PSS and CPU of `nightshift run` with chat channels connected and idle.

Slack and Telegram run against their loopback fakes (the real slack-sdk and python-telegram-bot
clients connect to them); Matrix against a real Synapse when .ci/install-synapse has run.
Usage: python bench/channels_idle.py [--seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._daemon import cpu_seconds, memory_kb, start_daemon, stop
from tests.fakes.chat_completions import FakeChatServer
from tests.fakes.slack import APP_TOKEN, BOT_TOKEN, FakeSlack
from tests.fakes.telegram import FakeTelegram
from tests.peers.synapse import Synapse, synapse_available

TELEGRAM_TOKEN = "123456:BENCH-token-for-nightshift-000000000"


async def main(seconds: float) -> None:
    async with FakeChatServer() as llm, FakeSlack() as slack, FakeTelegram(TELEGRAM_TOKEN) as tg:
        with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
            work = Path(tmp)
            matrix = ""
            if synapse_available():
                server = stack.enter_context(Synapse(work / "synapse"))
                bot = server.register("bot")
                matrix = (
                    f'[channels.matrix]\nenabled = true\nhomeserver = "{server.url}"\n'
                    f'user_id = "{bot.user_id}"\naccess_token = "{bot.access_token}"\n'
                )
            config = work / "config.toml"
            config.write_text(
                matrix + f'[llm]\nbase_url = "{llm.base_url}"\napi_key = "sk-bench"\n'
                f'[channels.slack]\nenabled = true\nbot_token = "{BOT_TOKEN}"\n'
                f'app_token = "{APP_TOKEN}"\napi_url = "{slack.api_url}"\n'
                f'[channels.telegram]\nenabled = true\nbot_token = "{TELEGRAM_TOKEN}"\n'
                f'api_url = "{tg.api_url}"\n'
            )
            proc, ready = await asyncio.to_thread(start_daemon, work, config)
            try:
                await slack.wait_connections(1, timeout=20)
                await asyncio.sleep(5)
                cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
                await asyncio.sleep(seconds)
                cpu1, t1 = cpu_seconds(proc.pid), time.monotonic()
                mem = memory_kb(proc.pid)
                status = await asyncio.to_thread(
                    subprocess.run,
                    [
                        sys.executable,
                        "-m",
                        "daemon.cli.main",
                        "status",
                        "--json",
                        "--config",
                        str(config),
                        "--state-dir",
                        str(work / "state"),
                    ],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                states = {
                    name: info["state"]
                    for name, info in json.loads(status.stdout)["channels"].items()
                }
            finally:
                await asyncio.to_thread(stop, proc)
    names = "console, slack (socket mode), telegram (long polling)" + (
        ", matrix (real Synapse sync)" if synapse_available() else " (no Synapse: matrix left out)"
    )
    print(f"channels: {names} — connected, idle")
    print(f"channel states: {states}")
    print(f"startup until READY=1: {ready:.2f} s")
    print(f"PSS: {mem['pss_kb'] / 1024:.1f} MB   RSS: {mem['rss_kb'] / 1024:.1f} MB")
    print(f"CPU: {(cpu1 - cpu0) / (t1 - t0) * 60:.3f} CPU-seconds per idle minute")
    print(f"LLM calls while idle: {llm.calls}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=30.0)
    asyncio.run(main(parser.parse_args().seconds))
