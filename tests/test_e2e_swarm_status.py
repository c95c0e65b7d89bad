"""`nightshift status` shows live swarm runs, read by the daemon from its own database."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from daemon.core.clock import ManualClock
from memory.store import SqliteStore
from tests.fakes.chat_completions import FakeChatServer
from tests.memory._swarm_rig import build
from tests.support import DaemonProcess, write_config


@pytest.fixture
async def daemon(tmp_path: Path, fake_llm: FakeChatServer) -> AsyncIterator[DaemonProcess]:
    process = DaemonProcess(write_config(tmp_path / "config.toml", fake_llm.base_url),
                            tmp_path / "state")  # fmt: skip
    await process.start()
    yield process
    await process.stop()


async def test_status_shows_the_live_swarm_runs(daemon: DaemonProcess) -> None:
    code, out, err = await daemon.cli("status", "--json")
    assert code == 0, err
    assert json.loads(out)["swarm"] == {
        "runs_running": 0, "sub_agents_running": 0, "sub_agents_queued": 0, "steps": 0,
        "tokens": 0,
    }  # fmt: skip
    code, text, _ = await daemon.cli("status")
    assert "swarm:     no runs live" in text, text

    store = await SqliteStore.open(daemon.state_dir / "nightshift.db")  # a second writer (WAL)
    try:
        built = await build(store, ManualClock())
    finally:
        await store.close()
    code, out, _ = await daemon.cli("status", "--json")
    assert json.loads(out)["swarm"] == {
        "runs_running": 1, "sub_agents_running": 1, "sub_agents_queued": 1, "steps": 3,
        "tokens": 1200,
    }  # fmt: skip
    code, text, _ = await daemon.cli("status")
    assert (
        "swarm:     1 run live: 1 sub-agent running, 1 queued; 3 steps, 1,200 tokens so far" in text
    ), text
    code, out, _ = await daemon.cli("chat", "-m", "status")  # the chat command: no model needed
    assert "swarm: 1 run(s) live, 1 sub-agent(s) running, 1 queued" in out, out
    code, out, err = await daemon.cli("runs", "show", str(built.live_run))  # while it runs
    assert code == 0 and "needs attention (2):" in out, err
