"""Log watcher throughput and detection latency, through the real LogFileWatcher (watchdog).

1. throughput: a child process (`cat`) appends N prepared lines to the watched file; timed from
   the start of the append to the last ``log_line`` Observation emitted. Measured with an emit
   that only counts; with one that runs 20 compiled regexes on every line, once on Python's
   backtracking ``re`` and once on RE2 (``daemon.core.patterns``, what the daemon uses for every
   configured pattern); and through the real RuleEngine (RE2, one PatternFilter pass per line
   ruling most of the 20 regexes out before any is searched).
2. a hostile line: the longest line the watcher passes on by default (64 KiB of ``a`` and a ``!``)
   judged by a ``(a+)+$`` rule among the 20; Python's ``re`` would need ~2**65536 steps.
3. latency on an idle path: one line written and flushed every 10-30 ms; the time from the flush
   to the Observation being emitted, p50 / p99 / max.

The bench process is pinned to one CPU (the writer child to another when there is one).
Usage: python bench/log_throughput.py [--lines 500000] [--samples 300]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from daemon.core.alerts import Observation
from daemon.core.clock import SystemClock
from daemon.core.patterns import compile_pattern
from daemon.watchers.logs import LogFileWatcher, LogWatchSettings

RULES = [  # what log rules look like: anchors, alternations, captures, a few expensive ones
    r"\bERROR\b",
    r"\bCRITICAL\b|\bFATAL\b",
    r"Out of memory: Killed process (\d+) \((\S+)\)",
    r"segfault at [0-9a-f]+ ip",
    r"Failed password for (?:invalid user )?(\S+) from (\S+)",
    r"authentication failure;.*user=(\S+)",
    r"sshd\[\d+\]: Invalid user (\S+)",
    r"No space left on device",
    r"I/O error, dev (\w+), sector \d+",
    r"EXT4-fs error",
    r"nginx.*\[emerg\]",
    r'" 5\d\d \d+ "',
    r"upstream timed out \(110: Connection timed out\)",
    r"(?i)panic",
    r"Too many open files",
    r"certificate (?:has )?expired",
    r"oom-kill",
    r"systemd\[1\]: (\S+)\.service: Failed with result",
    r"connection refused",
    r"took (\d{4,}) ?ms",
]
TEMPLATES = [
    'Nov 22 10:{m:02d}:{s:02d} web1 nginx: 10.0.{a}.{b} - - "GET /api/items/{n} HTTP/1.1" 200 '
    '{n} "-" "curl/8.5"',
    "Nov 22 10:{m:02d}:{s:02d} web1 sshd[{n}]: Accepted publickey for deploy from 10.0.{a}.{b}",
    "Nov 22 10:{m:02d}:{s:02d} web1 app[{n}]: INFO request {n} handled in {a} ms",
    "Nov 22 10:{m:02d}:{s:02d} web1 kernel: [UFW BLOCK] IN=eth0 SRC=10.0.{a}.{b} DST=10.0.0.1",
    "Nov 22 10:{m:02d}:{s:02d} web1 app[{n}]: ERROR payment {n} failed: upstream 502",
]


def make_lines(count: int) -> bytes:
    rng = random.Random(7)
    lines = []
    for n in range(count):
        template = TEMPLATES[4 if n % 50 == 0 else rng.randrange(4)]  # 2% errors
        values = {"m": n // 60 % 60, "s": n % 60, "a": rng.randrange(256), "b": rng.randrange(256)}
        lines.append(template.format(n=n, **values))
    return ("\n".join(lines) + "\n").encode()


def pin(pid: int, cpu: int) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(pid, {cpus[cpu % len(cpus)]})


class Counter:
    def __init__(self, check: Callable[[str], int] | None = None) -> None:
        self.count = 0
        self.matches = 0
        self.last = 0.0
        self._check = check

    def __call__(self, observation: Observation) -> None:
        if observation.metric != "log_line":
            return
        if self._check is not None:
            self.matches += self._check(observation.text)
        self.count += 1
        self.last = time.perf_counter()


def regex_check(compile: Callable[[str], Any] = re.compile) -> Callable[[str], int]:
    compiled = [compile(pattern) for pattern in RULES]

    def check(text: str) -> int:
        hits = 0
        for rule in compiled:
            if rule.search(text) is not None:
                hits += 1
        return hits

    return check


def engine_check() -> Callable[[Observation], int]:
    """The real rule engine with the same 20 patterns as log rules (events counted)."""
    from daemon.alerting.rules import RuleEngine
    from daemon.alerting.settings import RuleSettings

    engine = RuleEngine(
        RuleSettings(
            name=f"LogRule{i}", metric="log_line", match=pattern, times=50, within_seconds=60
        )  # fmt: skip
        for i, pattern in enumerate(RULES)
    )

    def check(observation: Observation) -> int:
        return len(engine.evaluate(observation))

    return check


class EngineCounter(Counter):
    """Counts lines and feeds each Observation to the real RuleEngine."""

    def __init__(self) -> None:
        super().__init__()
        self._engine = engine_check()

    def __call__(self, observation: Observation) -> None:
        if observation.metric != "log_line":
            return
        self.matches += self._engine(observation)
        self.count += 1
        self.last = time.perf_counter()


async def ticker(gaps: list[float]) -> None:
    """Records how late each 1 ms sleep wakes: the loop's longest stall."""
    last = time.perf_counter()
    while True:
        await asyncio.sleep(0.001)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now


async def throughput(work: Path, data: Path, count: int, counter: Counter) -> tuple[float, float]:
    """Seconds from the start of the append to the last Observation; longest loop stall."""
    log = work / f"throughput-{id(counter)}.log"
    log.write_bytes(b"")
    watcher = LogFileWatcher(LogWatchSettings(name="bench", path=str(log)), SystemClock())
    task = asyncio.create_task(watcher.run(counter))
    await watcher.ready.wait()
    gaps: list[float] = []
    ticks = asyncio.create_task(ticker(gaps))
    started = time.perf_counter()
    writer = await asyncio.create_subprocess_exec("sh", "-c", f"cat '{data}' >> '{log}'")
    pin(writer.pid, 1)
    await writer.wait()
    while counter.count < count:
        await asyncio.sleep(0.01)
    task.cancel()
    ticks.cancel()
    await asyncio.gather(task, ticks, return_exceptions=True)
    return counter.last - started, max(gaps)


def hostile_line_ms() -> float:
    """Milliseconds for the RuleEngine to judge one 64 KiB catastrophic line."""
    from daemon.alerting.rules import RuleEngine
    from daemon.alerting.settings import RuleSettings

    engine = RuleEngine(
        RuleSettings(name=f"LogRule{i}", metric="log_line", match=pattern)
        for i, pattern in enumerate([*RULES, "(a+)+$"])
    )
    line = Observation(
        source="log", metric="log_line", at=SystemClock().now(), text="a" * 65535 + "!"
    )
    started = time.perf_counter()
    engine.evaluate(line)
    return (time.perf_counter() - started) * 1000


async def latency(work: Path, samples: int) -> list[float]:
    log = work / "latency.log"
    log.write_bytes(b"")
    delays: list[float] = []
    written: dict[str, float] = {}

    def emit(observation: Observation) -> None:
        if observation.metric == "log_line":
            delays.append(time.perf_counter() - written[observation.text])

    watcher = LogFileWatcher(LogWatchSettings(name="bench", path=str(log)), SystemClock())
    task = asyncio.create_task(watcher.run(emit))
    await watcher.ready.wait()
    rng = random.Random(3)
    with log.open("a") as handle:
        for n in range(samples):
            await asyncio.sleep(rng.uniform(0.01, 0.03))
            text = f"Nov 22 10:00:00 web1 app[1]: ERROR sample {n}"
            handle.write(text + "\n")
            handle.flush()
            written[text] = time.perf_counter()
            while len(delays) <= n:
                await asyncio.sleep(0.0005)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return delays


async def main(count: int, samples: int) -> None:
    pin(0, 0)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / "lines.data"
        payload = make_lines(count)
        data.write_bytes(payload)
        size = len(payload) / count
        print(f"{count} lines, {size:.0f} bytes each on average, {len(payload) / 1e6:.1f} MB")

        plain = Counter()
        seconds, stall = await throughput(work, data, count, plain)
        print(
            f"file append → Observation:           {count / seconds:>10,.0f} lines/s"
            f"  (longest loop stall {stall * 1000:.0f} ms)"
        )
        ruled = Counter(regex_check())
        seconds, stall = await throughput(work, data, count, ruled)
        print(
            f"… then 20 × re.search on each line:  {count / seconds:>10,.0f} lines/s"
            f"  (longest loop stall {stall * 1000:.0f} ms; {ruled.matches} matches;"
            " re.search stands in for the rule engine)"
        )
        linear = Counter(regex_check(compile_pattern))
        seconds, stall = await throughput(work, data, count, linear)
        print(
            f"… then 20 × RE2 search on each line:  {count / seconds:>10,.0f} lines/s"
            f"  (longest loop stall {stall * 1000:.0f} ms; {linear.matches} matches)"
        )

        engined = EngineCounter()
        seconds, stall = await throughput(work, data, count, engined)
        print(
            f"… through the real RuleEngine on RE2 (20 log rules, 50-in-60s):"
            f" {count / seconds:>10,.0f} lines/s  (longest loop stall {stall * 1000:.0f} ms;"
            f" {engined.matches} state changes)"
        )

        print(f"a 64 KiB hostile line through 21 rules incl. (a+)+$: {hostile_line_ms():.2f} ms")

        delays = sorted(await latency(work, samples))
        p50 = statistics.median(delays) * 1000
        p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))] * 1000
        print(
            f"idle-path latency flush → Observation: p50 {p50:.2f} ms, p99 {p99:.2f} ms, "
            f"max {delays[-1] * 1000:.2f} ms ({len(delays)} samples)"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=500_000)
    parser.add_argument("--samples", type=int, default=300)
    args = parser.parse_args()
    asyncio.run(main(args.lines, args.samples))
