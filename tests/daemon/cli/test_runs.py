"""`nightshift runs`: swarm runs and their trees, read-only from the database file."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from daemon.cli.main import main
from daemon.core.clock import ManualClock, SystemClock
from memory.store import SqliteStore
from memory.swarm import SwarmRepo
from tests.memory._swarm_rig import Built, build
from tests.support import run_cli


@pytest.fixture
async def built(tmp_path: Path) -> AsyncIterator[tuple[SqliteStore, Built]]:
    """The rig's runs, the live one started five minutes ago by the real clock."""
    store = await SqliteStore.open(tmp_path / "nightshift.db")
    try:
        clock = ManualClock(SystemClock().now() - timedelta(days=2, minutes=5))
        yield store, await build(store, clock)
    finally:
        await store.close()


async def test_the_listing_shows_live_and_recent_runs_and_all_with_all(
    tmp_path: Path, built: tuple[SqliteStore, Built]
) -> None:
    store, ids = built
    location = ("--state-dir", str(tmp_path))
    async with store.write():  # the daemon mid-transaction: the reader never waits for it
        code, out, err = await run_cli("runs", *location)
    assert code == 0, err
    head, live = out.splitlines()
    assert head.split()[:3] == ["RUN", "STATUS", "STARTED"]
    assert live.startswith(f"#{ids.live_run} ") and "running" in live
    assert "1 done, 1 failed, 1 stalled, 1 running, 1 queued" in live
    assert "$9.75" in live and "1,200" in live and "why is web1 slow?" in live

    code, out, _ = await run_cli("runs", "--all", *location)
    lines = out.splitlines()[1:]
    assert [line.split()[0] for line in lines] == [f"#{ids.live_run}", f"#{ids.old_run}"]
    assert "nightly disk sweep" in lines[1] and lines[1].split()[1] == "done"
    code, out, _ = await run_cli("runs", "--all", "--limit", "1", *location)
    assert len(out.splitlines()) == 2


async def test_show_prints_the_header_what_needs_attention_and_the_tree(
    tmp_path: Path, built: tuple[SqliteStore, Built]
) -> None:
    _, ids = built
    code, out, err = await run_cli("runs", "show", str(ids.live_run), "--state-dir", str(tmp_path))
    assert code == 0, err
    assert out.startswith(f"swarm run #{ids.live_run}: why is web1 slow?")
    assert "3 of 500 steps, 1,200 of 100,000 tokens, 5 of 50 spawns" in out
    assert "model cost $9.75 (sub-agents $0.75, coordinator's turn $9.00)" in out
    assert "running for 5m" in out
    attention = out.split("needs attention (2):\n")[1].split("\n\n")[0].splitlines()
    assert [line.split()[:2] for line in attention] == [
        [f"#{ids.failed}", "failed"], [f"#{ids.child}", "stalled"]
    ]  # fmt: skip
    tree = out.split("SUB-AGENT")[1].splitlines()[1:]
    firsts = [line.split()[0] for line in tree if line.strip() and "#" in line.split()[0]]
    assert firsts == [f"#{i}" for i in (ids.done, ids.child, ids.failed, ids.running, ids.queued)]
    child = next(line for line in tree if line.lstrip().startswith(f"#{ids.child} "))
    assert child.startswith(f"  #{ids.child}")  # indented under the sub-agent that spawned it
    assert "why: the disk tool was refused" in out and "why: no progress for 30s" in out
    failed = next(line for line in tree if line.startswith(f"#{ids.failed} "))
    assert failed.split()[1:4] == ["failed", "disk", "2"]


async def test_steps_of_one_sub_agent(tmp_path: Path, built: tuple[SqliteStore, Built]) -> None:
    _, ids = built
    location = ("--state-dir", str(tmp_path))
    code, out, err = await run_cli("runs", "show", str(ids.live_run), "--steps", str(ids.done),
                                *location)  # fmt: skip
    assert code == 0, err
    rows = out.split("EPOCH")[1].splitlines()[1:]
    assert [row.split()[:5] for row in rows] == [
        ["1", "1", "llm", "kimi", "done"], ["1", "2", "tool", "host_metrics", "done"]
    ]  # fmt: skip
    assert rows[0].split()[5:7] == ["900ms", "1,200"]
    code, out, _ = await run_cli("runs", "show", str(ids.live_run), "--steps", str(ids.failed),
                              *location)  # fmt: skip
    assert "failed — the disk tool was refused" in out
    assert out.rstrip().endswith("du: permission denied")
    code, out, _ = await run_cli("runs", "show", str(ids.live_run), "--steps", str(ids.running),
                              *location)  # fmt: skip
    [row] = out.split("EPOCH")[1].splitlines()[1:]
    assert row.split()[2:6] == ["tool", "restart_service", "acting", "-"]
    code, out, _ = await run_cli("runs", "show", str(ids.live_run), "--steps", str(ids.queued),
                              *location)  # fmt: skip
    assert (code, out.rstrip().splitlines()[-1]) == (0, "no steps recorded")


async def test_unknown_ids_are_named(tmp_path: Path, built: tuple[SqliteStore, Built]) -> None:
    _, ids = built
    location = ("--state-dir", str(tmp_path))
    code, _, err = await run_cli("runs", "show", "999", *location)
    assert (code, err.strip()) == (1, "nightshift: no swarm run #999 (see `nightshift runs --all`)")
    old_task = ids.done - 1  # a sub-agent of another run is not this run's
    code, _, err = await run_cli("runs", "show", str(ids.live_run), "--steps", str(old_task),
                              *location)  # fmt: skip
    assert code == 1 and f"run #{ids.live_run} has no sub-agent #{old_task}" in err
    code, _, err = await run_cli("runs", "show", *location)
    assert code == 2 and "give the run number" in err


def test_no_database_and_a_database_older_than_the_swarm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["runs", "--state-dir", str(tmp_path)]) == 1
    assert "no database at" in capsys.readouterr().err
    conn = sqlite3.connect(tmp_path / "nightshift.db")
    conn.execute("CREATE TABLE agent_runs (id INTEGER PRIMARY KEY)")
    conn.close()
    assert main(["runs", "--state-dir", str(tmp_path)]) == 1
    assert "no swarm runs table yet: start the daemon once" in capsys.readouterr().err
    conn = sqlite3.connect(tmp_path / "nightshift.db")
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    conn.close()
    assert tables == ["agent_runs"]  # the reader migrated nothing


async def test_an_empty_listing_says_so(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "nightshift.db")
    await store.close()
    code, out, _ = await run_cli("runs", "--state-dir", str(tmp_path))
    assert (code, out.strip()) == (0, "no swarm runs running or in the last day (--all)")


async def test_after_a_restart_an_unfinished_side_effect_shows_no_outcome(
    tmp_path: Path, built: tuple[SqliteStore, Built]
) -> None:
    store, ids = built
    await SwarmRepo(store, SystemClock()).mark_unknown()  # what the daemon does at startup
    location = ("--state-dir", str(tmp_path))
    code, out, err = await run_cli("runs", "show", str(ids.live_run), "--steps", str(ids.running),
                                *location)  # fmt: skip
    assert code == 0, err
    [row] = out.split("EPOCH")[1].splitlines()[1:]
    assert row.split()[2:7] == ["tool", "restart_service", "no", "outcome", "-"]
    code, out, _ = await run_cli("runs", "show", str(ids.live_run), *location)
    assert "needs attention (4):" in out  # + the running and the queued one, now unknown
    assert "why: the daemon stopped while this sub-agent was running" in out


async def test_json_gives_scripts_the_listing_the_tree_and_the_steps(
    tmp_path: Path, built: tuple[SqliteStore, Built]
) -> None:
    _, ids = built
    location = ("--state-dir", str(tmp_path))
    code, out, err = await run_cli("runs", "--all", "--json", *location)
    assert code == 0, err
    runs = json.loads(out)["runs"]
    assert [r["id"] for r in runs] == [ids.live_run, ids.old_run]
    live = runs[0]
    assert (live["status"], live["sub_agents"], live["total_cost_usd"]) == ("running", 5, 9.75)
    assert live["by_status"]["failed"] == 1 and live["started_at"].endswith("+00:00")

    code, out, err = await run_cli("runs", "show", str(ids.live_run), "--json", *location)
    assert code == 0, err
    shown = json.loads(out)
    assert shown["run"]["goal"].startswith("why is web1 slow?")
    by_id = {t["id"]: t for t in shown["sub_agents"]}
    assert by_id[ids.failed]["status"] == "failed" and by_id[ids.child]["parent_task_id"]

    code, out, err = await run_cli(
        "runs", "show", str(ids.live_run), "--steps", str(ids.done), "--json", *location
    )
    assert code == 0, err
    steps = json.loads(out)
    assert steps["sub_agent"]["id"] == ids.done
    assert steps["steps"] and all(s["task_id"] == ids.done for s in steps["steps"])
