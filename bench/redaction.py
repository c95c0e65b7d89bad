"""Redaction cost per KiB: typical log text, text dense with secrets, and adversarial text.

Runs :func:`daemon.core.redact.redact` (the one redaction step before SQLite, logs, prompts, chat
and output) with five configured secrets registered, as the daemon has after loading settings.
Each corpus is about 64 KiB; the figure is the median of several runs, in microseconds per KiB,
plus the slowest single run, so a super-linear pattern would show up as a jump between sizes.
Usage: python bench/redaction.py [--kib 64] [--repeat 7]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from daemon.core.redact import redact, use_secrets
from tests.daemon.core.test_redact import FORMATS

LOG_LINES = [
    'Nov 22 10:{m:02d}:{s:02d} web1 nginx: 10.0.{a}.{b} - - "GET /api/items/{n} HTTP/1.1" 200 '
    '{n} "-" "curl/8.5"',
    "Nov 22 10:{m:02d}:{s:02d} web1 sshd[{n}]: Accepted publickey for deploy from 10.0.{a}.{b} "
    "port {n} ssh2",
    "Nov 22 10:{m:02d}:{s:02d} web1 app[{n}]: INFO request {n} handled in {a} ms, tokens: {b}",
    "Nov 22 10:{m:02d}:{s:02d} web1 kernel: [{n}.{a}] EXT4-fs (sda1): mounted filesystem",
    "Nov 22 10:{m:02d}:{s:02d} web1 systemd[1]: Started session {n} of user deploy.",
    '{{"level": "info", "msg": "job done", "id": {n}, "user": "u{a}", "elapsed_ms": {b}}}',
]


def _fill(rng: random.Random, template: str) -> str:
    return template.format(
        m=rng.randrange(60), s=rng.randrange(60), a=rng.randrange(256), b=rng.randrange(256),
        n=rng.randrange(100_000),
    )  # fmt: skip


def typical(size: int, rng: random.Random) -> str:
    lines: list[str] = []
    while sum(len(line) + 1 for line in lines) < size:
        lines.append(_fill(rng, rng.choice(LOG_LINES)))
    return "\n".join(lines)


def many_secrets(size: int, rng: random.Random) -> str:
    """Every other line carries one of the 51 known formats."""
    samples = [text for text, _ in FORMATS.values()]
    lines: list[str] = []
    while sum(len(line) + 1 for line in lines) < size:
        lines.append(_fill(rng, rng.choice(LOG_LINES)))
        lines.append(rng.choice(samples))
    return "\n".join(lines)


ADVERSARIAL_PIECES = [
    "password=" * 50, "://a:" * 50, "-----BEGIN PRIVATE KEY-----", "$6$" * 40,
    "mysql " + "-x " * 60, "machine x " * 30, "1234567:" * 40, "eyJ" * 60, '\\"' * 80,
    "a" * 400, "Authorization: " * 30, "token " * 60, "curl " + "-v " * 80,
]  # fmt: skip


def adversarial(size: int, rng: random.Random) -> str:
    """Repeated prefixes of every pattern with no completion: the backtracking worst cases."""
    parts: list[str] = []
    while sum(map(len, parts)) < size:
        parts.append(rng.choice(ADVERSARIAL_PIECES))
    return "".join(parts)[:size]


def measure(text: str, repeat: int) -> tuple[float, float]:
    """(median, max) microseconds per KiB over ``repeat`` runs."""
    kib = len(text.encode()) / 1024
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        redact(text)
        runs.append((time.perf_counter() - started) * 1e6 / kib)
    return statistics.median(runs), max(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kib", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    use_secrets(["opaque-llm-key-0001", "xoxb-bench-bot", "xapp-bench-app", "webhook-t0ken-xyz",
                 "matrix-access-token-abc"])  # fmt: skip
    rng = random.Random(7)
    corpora: dict[str, Callable[[int, random.Random], str]] = {
        "typical log text": typical,
        "secret on every other line": many_secrets,
        "adversarial prefixes": adversarial,
    }
    print(f"redaction cost, median (max) of {args.repeat} runs, microseconds per KiB")
    for name, make in corpora.items():
        cells = []
        for kib in (args.kib // 4, args.kib):
            median, worst = measure(make(kib * 1024, rng), args.repeat)
            cells.append(f"{kib:>4} KiB: {median:8.1f} ({worst:8.1f})")
        print(f"  {name:<28} " + "   ".join(cells))
    line = _fill(rng, LOG_LINES[0])
    started = time.perf_counter()
    for _ in range(10_000):
        redact(line)
    per_line = (time.perf_counter() - started) * 1e6 / 10_000
    print(f"  one {len(line)}-byte log line (a log record): {per_line:.1f} us")


if __name__ == "__main__":
    main()
