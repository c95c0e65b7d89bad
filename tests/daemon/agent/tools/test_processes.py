"""Process tools against real processes started by the test."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from daemon.agent.tools.base import Tier, ToolContext
from daemon.agent.tools.processes import TOOLS, inspect_process, list_processes
from daemon.config import Settings
from daemon.core.clock import SystemClock
from daemon.core.errors import ToolError


def make_ctx() -> ToolContext:
    return ToolContext(actor="test", reason="test", settings=Settings(), clock=SystemClock())


@pytest.fixture
async def probe(tmp_path: Path) -> AsyncIterator[tuple[str, int]]:
    """A sleeping child process with a unique name (a renamed copy of sleep)."""
    name = f"nsp{uuid.uuid4().hex[:10]}"
    binary = tmp_path / name
    shutil.copy(shutil.which("sleep") or "/bin/sleep", binary)
    proc = await asyncio.create_subprocess_exec(str(binary), "30")
    try:
        yield name, proc.pid
    finally:
        proc.kill()
        await proc.wait()


async def test_list_processes_finds_a_child_by_name(probe: tuple[str, int]) -> None:
    name, pid = probe
    listing = await list_processes.invoke(make_ctx(), {"name_filter": name.upper()})
    assert listing.total == 1
    [row] = listing.processes
    assert (row.pid, row.name) == (pid, name)
    assert row.cmdline.endswith(f"{name} 30")
    assert row.status in {"sleeping", "running"}
    assert row.rss_mb is not None and row.started is not None


async def test_list_processes_sorts_and_limits(probe: tuple[str, int]) -> None:
    by_memory = await list_processes.invoke(make_ctx(), {"limit": 5})
    assert len(by_memory.processes) == 5 <= by_memory.total
    rss = [row.rss_mb or 0.0 for row in by_memory.processes]
    assert rss == sorted(rss, reverse=True)
    by_cpu = await list_processes.invoke(make_ctx(), {"sort_by": "cpu", "limit": 0})
    assert len(by_cpu.processes) == 1  # limit is clamped to at least one


async def test_list_processes_rejects_unknown_sort_keys() -> None:
    with pytest.raises(ToolError, match="sort_by"):
        await list_processes.invoke(make_ctx(), {"sort_by": "disk"})


async def test_a_long_command_line_is_truncated() -> None:
    marker = f"nsmark{uuid.uuid4().hex[:8]}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import time; time.sleep(30)", marker, *(["x" * 50] * 10)
    )
    try:
        listing = await list_processes.invoke(make_ctx(), {"name_filter": marker})
        [row] = listing.processes
        assert len(row.cmdline) == 200 and row.cmdline.endswith("…")
    finally:
        proc.kill()
        await proc.wait()


async def test_inspect_process_shows_details_and_children(probe: tuple[str, int]) -> None:
    _, child = probe
    details = await inspect_process.invoke(make_ctx(), {"pid": os.getpid()})
    assert details.pid == os.getpid()
    assert details.cwd == os.getcwd()
    assert child in [c.pid for c in details.children]
    assert details.open_files_count is not None and details.connections_count is not None
    assert details.num_threads and details.num_threads >= 1


async def test_inspect_process_on_a_dead_pid_says_so() -> None:
    proc = await asyncio.create_subprocess_exec("true")
    await proc.wait()
    with pytest.raises(ToolError, match=f"no process with pid {proc.pid}"):
        await inspect_process.invoke(make_ctx(), {"pid": proc.pid})


async def test_inspect_process_rejects_nonsense_pids() -> None:
    with pytest.raises(ToolError, match="no process with pid -4"):
        await inspect_process.invoke(make_ctx(), {"pid": -4})


def test_process_tools_are_read_only() -> None:
    assert [list_processes, inspect_process] == TOOLS
    assert all(t.tier is Tier.READ_ONLY for t in TOOLS)
    described = list_processes.schema()["function"]["parameters"]["properties"]
    assert all(prop.get("description") for prop in described.values())
