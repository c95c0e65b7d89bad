"""Tools under fan-out: N concurrent calls of one tool, as N sub-agents would make them.

Each scenario starts N calls of a real tool at once, in process, through ``Tool.invoke``:
``host_metrics`` (a real psutil reading), ``disk_usage_by_directory`` over a generated tree of
small files, and ``run_command du -s`` on that tree (a real `du`, sandboxed when bubblewrap
works). Printed per scenario: wall time, per-call p50/p99, the event loop's worst lag (how
late a 10 ms sleep woke) and the most calls or child processes seen running at once.
Usage: python bench/tool_fanout.py [--callers 30 100] [--files 4000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from daemon.agent.tools import commands, evidence, host  # noqa: E402
from daemon.agent.tools.base import Tool, ToolContext  # noqa: E402
from daemon.config import Settings  # noqa: E402
from daemon.core.clock import SystemClock  # noqa: E402

TICK = 0.010


def make_tree(root: Path, files: int) -> Path:
    """``files`` small files in 40 directories."""
    for n in range(files):
        folder = root / f"d{n % 40}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{n}").write_bytes(b"x" * (100 + n % 3000))
    return root


async def probe(stop: asyncio.Event, seen: list[float], peak: list[int], watch: bool) -> None:
    """Record the loop's lag per tick and, with ``watch``, the most child processes at once."""
    me = psutil.Process()
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.sleep(TICK)
        seen.append(time.perf_counter() - started - TICK)
        if watch:
            peak[0] = max(peak[0], len(me.children(recursive=True)))


async def scenario(
    label: str, item: Tool, arguments: dict[str, Any], callers: int, watch_children: bool = False
) -> None:
    ctx = ToolContext(actor="bench", reason="bench", settings=Settings(), clock=SystemClock())
    stop, lags, children = asyncio.Event(), [0.0], [0]
    prober = asyncio.create_task(probe(stop, lags, children, watch_children))
    durations: list[float] = []

    async def one() -> None:
        started = time.perf_counter()
        await item.invoke(ctx, arguments)
        durations.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(callers)))
    wall = time.perf_counter() - started
    stop.set()
    await prober
    cuts = statistics.quantiles(durations, n=100)
    extra = f"  peak children {children[0]:3d}" if watch_children else ""
    print(
        f"{label:<24} x{callers:<4} wall {wall:6.2f} s  p50 {cuts[49] * 1000:7.0f} ms  "
        f"p99 {cuts[98] * 1000:7.0f} ms  loop lag max {max(lags) * 1000:6.1f} ms{extra}"
    )


def gate_peak(module: Any, name: str) -> Callable[[], str]:
    gate = getattr(module, name, None)
    return lambda: f"gate peak {gate.peak}" if gate is not None else "no gate"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--callers", type=int, nargs="+", default=[30, 100])
    parser.add_argument("--files", type=int, default=4000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        tree = make_tree(Path(tmp) / "tree", args.files)
        print(f"tree: {args.files} files; cores: {psutil.cpu_count()}")
        for callers in args.callers:
            await scenario("host_metrics", host.host_metrics, {}, callers)
            await scenario(
                "disk_usage_by_directory",
                evidence.disk_usage_by_directory,
                {"path": str(tree)},
                callers,
            )
            await scenario(
                "run_command du -s",
                commands.run_command,
                {"command": f"du -s {tree}"},
                callers,
                watch_children=True,
            )
        print(gate_peak(evidence, "DU_GATE")(), "(disk_usage_by_directory);",
              gate_peak(commands, "READ_ONLY_GATE")(), "(run_command)")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
