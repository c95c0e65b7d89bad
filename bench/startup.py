"""Seconds from process start until READY=1 (sd_notify), over several runs.

Usage: python bench/startup.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._daemon import start_daemon, stop  # noqa: E402


def main(runs: int) -> None:
    times = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            proc, ready = start_daemon(Path(tmp))
            stop(proc)
            times.append(ready)
    print(
        f"startup until READY=1 over {runs} runs (fresh state dir each): "
        f"median {statistics.median(times):.3f} s, min {min(times):.3f} s, max {max(times):.3f} s"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    main(parser.parse_args().runs)
