"""Tools under fan-out: many sub-agents call at once; readings are shared, heavy tools capped."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from daemon.agent.executor import ToolExecutor
from daemon.agent.tools import commands, evidence, files, host, processes
from daemon.agent.tools._shared import ToolGate
from daemon.agent.tools.base import Tier, Tool, ToolContext, ToolRegistry, tool
from daemon.config import Settings
from daemon.core.abc import Clock
from daemon.core.clock import ManualClock, SystemClock
from daemon.watchers import host_sample
from daemon.watchers.host_sample import HostSample

CAP = 2  # the default [agent] heavy_tool_concurrency
CALLERS = 8
# How long a capped call stays inside, giving others the chance to pile in beside it; a call
# past the cap ends the hold at once (that is the failure the tests look for).
HOLD_SECONDS = 0.3


def make_ctx(clock: Clock | None = None, **agent: Any) -> ToolContext:
    settings = Settings()
    for key, value in agent.items():
        setattr(settings.agent, key, value)
    return ToolContext(actor="test", reason="test", settings=settings, clock=clock or SystemClock())


class Readings:
    """Counts real host readings taken through ``host.sample_host``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        real = host_sample.sample_host

        def counting() -> HostSample:
            self.count += 1
            return real()

        monkeypatch.setattr(host, "sample_host", counting)


async def test_thirty_concurrent_host_metrics_take_one_reading(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    readings = Readings(monkeypatch)
    ctx = make_ctx(ManualClock())  # a clock of its own: no earlier test's reading is fresh
    results = await asyncio.gather(*(host.host_metrics.invoke(ctx, {}) for _ in range(30)))
    assert readings.count == 1
    assert all(isinstance(r, HostSample) for r in results)
    assert len({id(r) for r in results}) == 1
    assert 0.0 <= results[0].cpu_percent <= 100.0


async def test_a_stale_reading_is_refreshed(monkeypatch: pytest.MonkeyPatch) -> None:
    readings = Readings(monkeypatch)
    clock = ManualClock()
    ctx = make_ctx(clock)
    first = await host.host_metrics.invoke(ctx, {})
    fresh = getattr(host, "FRESH_SECONDS", 1.0)
    clock.advance(fresh / 2)
    assert await host.host_metrics.invoke(ctx, {}) is first
    assert readings.count == 1
    clock.advance(fresh)
    second = await host.host_metrics.invoke(ctx, {})
    assert second is not first
    assert readings.count == 2


def test_cpu_readings_do_not_queue_behind_each_other(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two readings without a baseline both sample the CPU at the same time (no global lock):
    each one's sampling sleep waits for the other's to begin."""
    both_sampling = threading.Barrier(2, timeout=5)
    readers: set[int] = set()
    real_sleep = time.sleep

    def sleep(seconds: float) -> None:
        if threading.get_ident() in readers:
            both_sampling.wait()
        else:
            real_sleep(seconds)

    monkeypatch.setattr(time, "sleep", sleep)
    monkeypatch.setattr(host_sample, "_baseline", None, raising=False)
    monkeypatch.setattr(host_sample, "_cpu_last_call", None, raising=False)
    results: list[float] = []
    errors: list[BaseException] = []

    def read() -> None:
        readers.add(threading.get_ident())
        try:
            results.append(host_sample._cpu_percent())
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(results) == 2
    assert all(0.0 <= value <= 100.0 for value in results)


class Overlap:
    """Counts the calls inside an instrumented function at once."""

    def __init__(self, cap: int = CAP) -> None:
        self.cap = cap
        self.cond = threading.Condition()
        self.active = 0
        self.peak = 0
        self.calls = 0

    def enter(self) -> None:
        with self.cond:
            self.active += 1
            self.calls += 1
            self.peak = max(self.peak, self.active)
            self.cond.notify_all()
            self.cond.wait_for(lambda: self.peak > self.cap, timeout=HOLD_SECONDS)

    def leave(self) -> None:
        with self.cond:
            self.active -= 1

    def wrap_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            self.enter()
            try:
                return func(*args, **kwargs)
            finally:
                self.leave()

        return wrapped

    def wrap_async(self, func: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def wrapped(*args: Any, **kwargs: Any) -> Any:
            await asyncio.to_thread(self.enter)
            try:
                return await func(*args, **kwargs)
            finally:
                self.leave()

        return wrapped


def tree(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for n in range(5):
        (root / f"d{n}").mkdir(parents=True)
        (root / f"d{n}" / "f").write_bytes(b"x" * 5000 * (n + 1))
    (root / "app.log").write_text("".join(f"line {n} error\n" for n in range(100)))
    return root


CAPPED: list[tuple[str, Any, str, bool]] = [
    ("disk_usage_by_directory", evidence, "_usage", False),
    ("recent_file_changes", evidence, "_changes", False),
    ("list_processes", processes, "_prime", False),
    ("run_command", commands, "_execute", True),  # a real `du` in the sandbox
    ("grep_log", evidence, "scan_off_loop", True),
    ("tail_log", files, "scan_off_loop", True),
]


@pytest.mark.parametrize(("name", "module", "attr", "is_async"), CAPPED, ids=[c[0] for c in CAPPED])
async def test_heavy_tools_never_run_more_than_the_cap_and_the_rest_wait(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    name: str,
    module: Any,
    attr: str,
    is_async: bool,
) -> None:
    root = tree(tmp_path)
    overlap = Overlap()
    real = getattr(module, attr)
    monkeypatch.setattr(module, attr, (overlap.wrap_async if is_async else overlap.wrap_sync)(real))
    tool: Tool = {
        t.name: t for t in [*evidence.TOOLS, *processes.TOOLS, *commands.TOOLS, *files.TOOLS]
    }[name]
    every_arguments: dict[str, dict[str, Any]] = {
        "disk_usage_by_directory": {"path": str(root)},
        "recent_file_changes": {"path": str(root)},
        "list_processes": {"limit": 3},
        "run_command": {"command": f"du -s {root}"},
        "grep_log": {"path": str(root / "app.log"), "pattern": "error"},
        "tail_log": {"path": str(root / "app.log"), "lines": 5},
    }
    arguments = every_arguments[name]
    ctx = make_ctx()
    caplog.set_level(logging.INFO, logger="daemon.agent.tools._shared")
    results = await asyncio.gather(*(tool.invoke(ctx, arguments) for _ in range(CALLERS)))
    assert overlap.calls == CALLERS  # every caller got its result: waiting never fails
    assert len(results) == CALLERS
    assert overlap.peak == CAP
    waited = [r.getMessage() for r in caplog.records if "waited" in r.getMessage()]
    assert waited and all(m.startswith(f"{name} for test waited") for m in waited)
    if name == "disk_usage_by_directory":
        assert {r.total_bytes for r in results} == {results[0].total_bytes}
    if name == "run_command":
        assert all(r.exit_code == 0 and str(root) in r.stdout for r in results)


async def test_the_cap_is_configurable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    root = tree(tmp_path)
    overlap = Overlap(cap=3)
    monkeypatch.setattr(evidence, "_usage", overlap.wrap_sync(evidence._usage))
    ctx = make_ctx(heavy_tool_concurrency=3)
    calls = (evidence.disk_usage_by_directory.invoke(ctx, {"path": str(root)}) for _ in range(6))
    await asyncio.gather(*calls)
    assert (overlap.calls, overlap.peak) == (6, 3)


SLOW_GATE = ToolGate("slow_walk")
WORK_SECONDS = 0.3  # each call's own work: well inside the timeout


@tool(tier=Tier.READ_ONLY)
async def slow_walk(ctx: ToolContext) -> str:
    """A capped tool whose calls take WORK_SECONDS each."""
    async with SLOW_GATE.slot(ctx):
        await asyncio.sleep(WORK_SECONDS)
    return "walked"


async def test_waiting_for_a_slot_does_not_count_against_the_tool_timeout() -> None:
    """Five callers, one slot, 1 s timeout: the last waits 1.2 s for its 0.3 s of work."""
    ctx = make_ctx(heavy_tool_concurrency=1, tool_timeout_seconds=1.0)
    executor = ToolExecutor(ToolRegistry([slow_walk]), audit=None, approvals=None)
    calls = (executor.execute("slow_walk", "{}", ctx, approved_by="test") for _ in range(5))
    outcomes = await asyncio.gather(*calls)
    assert [o.text for o in outcomes] == ["walked"] * 5
    assert max(o.duration_ms for o in outcomes) >= 4 * WORK_SECONDS * 1000  # the wait shows
    assert SLOW_GATE.peak == 1


async def test_a_call_whose_own_work_is_too_slow_still_times_out() -> None:
    ctx = make_ctx(heavy_tool_concurrency=1, tool_timeout_seconds=WORK_SECONDS / 3)
    executor = ToolExecutor(ToolRegistry([slow_walk]), audit=None, approvals=None)
    calls = (executor.execute("slow_walk", "{}", ctx, approved_by="test") for _ in range(2))
    outcomes = await asyncio.gather(*calls)
    assert all("timed out" in o.text and not o.ok for o in outcomes)
