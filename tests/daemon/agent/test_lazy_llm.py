"""The LLM client loads on first use, and never on the event loop's thread."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

SCRIPT = """
import asyncio, json, sys, threading

where = []

class Watch:
    def find_spec(self, name, path=None, target=None):
        if name == "openai":
            where.append(threading.current_thread().name)
        return None

sys.meta_path.insert(0, Watch())
from daemon.agent.lazy_llm import LazyLlmClient

class Built:
    async def budget_status(self):
        return (0, 1)

async def main():
    client = LazyLlmClient(Built)
    assert "openai" not in sys.modules, "imported before first use"
    await asyncio.gather(client.budget_status(), client.budget_status())
    print(json.dumps({"threads": where, "built": client.built}))

asyncio.run(main())
"""


def test_openai_is_imported_off_the_event_loop_once() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["built"] is True
    assert len(seen["threads"]) == 1 and seen["threads"][0] != "MainThread"
