"""Sandbox overhead per read-only tool call: p50/p99 sandboxed vs unsandboxed.

Commands go through run_command's own path (run_argv) with the READ_ONLY tier (bubblewrap) and
with the PRIVILEGED tier (no sandbox: what a person-approved call runs as); read_file is timed
through its helper process, sandboxed and not.

Usage: python bench/sandbox.py [--runs 200]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from daemon.agent import sandbox  # noqa: E402
from daemon.agent.tools import files  # noqa: E402
from daemon.agent.tools.base import Tier, ToolContext  # noqa: E402
from daemon.agent.tools.commands import run_argv  # noqa: E402
from daemon.config import load_settings  # noqa: E402
from daemon.core.clock import SystemClock  # noqa: E402

COMMANDS: tuple[list[str], ...] = (["uptime"], ["df"], ["cat", "/proc/loadavg"])


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered) * 1000, p99 * 1000


async def timed(runs: int, call: Callable[[], Awaitable[object]]) -> tuple[float, float]:
    await call()  # warm up (first probe, page cache)
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - started)
    return percentiles(samples)


async def main(runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(None, state_dir=Path(tmp) / "state", environ_secrets=False)
        settings.policy.read_paths = ["/proc", "/etc"]
        ctx = ToolContext(actor="bench", reason="bench", settings=settings, clock=SystemClock())
        status = sandbox.status_for(settings)
        print(f"sandbox: {status.describe()}; {runs} runs each, milliseconds")
        heads = ("p50 plain", "p99 plain", "p50 boxed", "p99 boxed")
        print(f"{'call':<24} " + " ".join(f"{head:>10}" for head in heads))
        for argv in COMMANDS:

            def command(tier: Tier, argv: list[str] = argv) -> Awaitable[object]:
                return run_argv(ctx, argv, tier=tier)

            plain = await timed(runs, lambda: command(Tier.PRIVILEGED))
            boxed = await timed(runs, lambda: command(Tier.READ_ONLY))
            row(" ".join(argv), plain, boxed)
        off = sandbox.SandboxStatus(False, "bench")
        for path in ("/proc/loadavg", "/etc/hostname"):

            def read(box: sandbox.SandboxStatus, path: str = path) -> Awaitable[object]:
                return asyncio.to_thread(files._read_chunk, Path(path), 0, 4096, settings, box)

            plain = await timed(runs, lambda: read(off))
            boxed = await timed(runs, lambda: read(status))
            row(f"read_file {path}", plain, boxed)


def row(name: str, plain: tuple[float, float], boxed: tuple[float, float]) -> None:
    print(f"{name:<24} {plain[0]:>10.2f} {plain[1]:>10.2f} {boxed[0]:>10.2f} {boxed[1]:>10.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    asyncio.run(main(parser.parse_args().runs))
