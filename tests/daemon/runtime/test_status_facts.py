"""`nightshift status` shows live facts per kind against their caps, and warns near a cap."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from daemon.core.clock import SystemClock
from memory.facts import FactRepo
from memory.store import SqliteStore
from tests.support import DaemonProcess, write_config


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[DaemonProcess]:
    state = tmp_path / "state"
    async with await SqliteStore.open(state / "nightshift.db") as store:
        repo = FactRepo(store, SystemClock())
        for i in range(4):
            await repo.remember(f"web-{i} runs nginx", kind="host", source="cli", trusted=True)
        await repo.remember("Bob is on 555-0100", kind="contact")
    config = write_config(tmp_path / "config.toml", None, memory={"facts_max_host": 5})
    process = DaemonProcess(config, state)
    await process.start()
    yield process
    await process.stop()


async def test_status_shows_facts_per_kind_and_the_kind_near_its_cap(
    daemon: DaemonProcess,
) -> None:
    code, out, err = await daemon.cli("status", "--json")
    assert code == 0, err
    facts = json.loads(out)["facts"]
    assert facts["kinds"]["host"] == {"count": 4, "cap": 5}
    assert facts["kinds"]["contact"] == {"count": 1, "cap": 200}
    assert facts["near_cap"] == ["host"]

    code, text, err = await daemon.cli("status")
    assert code == 0, err
    (line,) = [line for line in text.splitlines() if line.strip().startswith("facts:")]
    assert "host 4/5 (WARNING: near the cap" in line and "contact 1/200" in line
    assert "note" not in line  # kinds without facts are left out

    log = await daemon.output()
    assert log.count("host facts: 4 of 5 stored (80% of the cap") == 1
