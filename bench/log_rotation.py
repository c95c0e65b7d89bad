"""Log lines lost, repeated and reordered across rotations, with and without inotify.

A writer process appends numbered lines (``000001234 …``) to ``app.log`` at a steady rate, with a
burst of ``rate / 2`` lines as fast as it can every 2 s; it reopens its path on SIGHUP, like a
daemon told by logrotate's ``postrotate``. A rotator process rotates the file every 0.3-1.2 s in
one of logrotate's ways:

- ``create``: shift ``app.log.N`` up, rename ``app.log`` → ``app.log.1``, create a new
  ``app.log``, then SIGHUP the writer 5-50 ms later (it writes to the renamed file until then).
- ``create-twice``: two such rotations 50-300 ms apart (within one 1 s poll: ``app.log`` →
  ``.1`` → ``.2``).
- ``nocreate``: rename, then SIGHUP; the writer creates the new file itself.
- ``compress``: ``create`` and then gzip ``app.log.1`` → ``app.log.1.gz`` and delete it (no
  ``delaycompress``).
- ``copytruncate``: copy ``app.log`` to ``app.log.1`` in 64 KiB chunks while the writer keeps
  writing, fsync the copy, then truncate ``app.log`` to 0 (no signal), as logrotate does.
- ``copytruncate-compress``: the same, then gzip the copy and delete it.

The real ``LogFileWatcher`` (watchdog inotify, or ``inotify = false``: the NFS polling fallback,
``poll_seconds`` 1) tails ``app.log`` in this process; each ``log_line`` Observation's number is
recorded. At the end every number the writer wrote is looked for in the files left on disk
(``.gz`` decompressed): ``on disk`` is what logrotate kept; a number written but on no disk is
lost by logrotate itself (copytruncate: written between the copy and the truncate; compress:
written to the rotated file after gzip read it), not by us. Printed per case: written, lost by
logrotate, then what WE lost (on disk, never received), duplicated, out of order (received after
a higher number), garbled (not a whole line).

Usage: python bench/log_rotation.py [--rates 1000,10000] [--seconds 8] [--styles create,...]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from daemon.core.alerts import Observation
from daemon.core.clock import SystemClock
from daemon.watchers.logs import LogFileWatcher, LogWatchSettings

STYLES = ("create", "create-twice", "nocreate", "compress", "copytruncate", "copytruncate-compress")
TEXT = " Nov 22 10:00:00 web1 app[4242]: INFO request handled in 3 ms by worker 7"
WIDTH = 9  # digits of the line number
POLL = 1.0  # the watcher's fallback poll (the default)


def write_lines(path: str, rate: int, seconds: float) -> None:
    """The writer process: ``rate`` lines/s plus bursts, reopening the path on SIGHUP."""
    reopen = False

    def on_hup(signum: int, frame: object) -> None:
        nonlocal reopen
        reopen = True

    signal.signal(signal.SIGHUP, on_hup)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
    fd = os.open(path, flags, 0o644)
    print("ready", flush=True)
    start = time.monotonic()
    burst = rate // 2
    n = extra = 0
    next_burst = start + 1.0
    while (now := time.monotonic()) - start < seconds:
        if now >= next_burst:
            extra += burst
            next_burst += 2.0
        target = int((now - start) * rate) + extra
        while n < target:
            if reopen:
                reopen = False
                os.close(fd)
                fd = os.open(path, flags, 0o644)
            os.write(fd, f"{n:0{WIDTH}d}{TEXT}\n".encode())  # one line, one write (a logger)
            n += 1
        time.sleep(0.001)
    os.close(fd)
    print(n, flush=True)


def shift(path: str, suffix: str = "") -> None:
    """app.log.N{suffix} → app.log.N+1{suffix}, highest first (logrotate keeps them all here)."""
    numbers = []
    prefix = path + "."
    for name in os.listdir(os.path.dirname(path)):
        full = os.path.join(os.path.dirname(path), name)
        number = full[len(prefix) :].removesuffix(suffix) if full.startswith(prefix) else ""
        if number.isdigit() and full.endswith(suffix):
            numbers.append(int(number))
    for number in sorted(numbers, reverse=True):
        os.rename(f"{prefix}{number}{suffix}", f"{prefix}{number + 1}{suffix}")


def compress(source: str) -> None:
    with open(source, "rb") as raw, gzip.open(source + ".gz", "wb", compresslevel=1) as packed:
        shutil.copyfileobj(raw, packed)
    os.unlink(source)


def rotate_once(path: str, style: str, writer: int, rng: random.Random) -> None:
    zipped = style.endswith("compress")
    shift(path, ".gz" if zipped else "")
    if style.startswith("copytruncate"):
        with open(path, "r+b") as live, open(path + ".1", "wb") as copy:
            while chunk := live.read(1 << 16):  # the writer keeps writing meanwhile
                copy.write(chunk)
            copy.flush()  # like logrotate: the copy is whole (and synced) before the truncate
            os.fsync(copy.fileno())
            os.truncate(live.fileno(), 0)
    else:
        os.rename(path, path + ".1")
        if style != "nocreate":
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        time.sleep(rng.uniform(0.005, 0.05))  # postrotate: a shell, kill -HUP, the app reopens
        os.kill(writer, signal.SIGHUP)
    if zipped:
        compress(path + ".1")


def rotate(path: str, style: str, writer: int, seconds: float, seed: int) -> None:
    """The rotator process: rotates ``path`` in ``style`` until ``seconds`` have passed."""
    rng = random.Random(seed)
    count = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(rng.uniform(0.3, 1.2))
        rotate_once(path, style, writer, rng)
        count += 1
        if style == "create-twice":
            time.sleep(rng.uniform(0.05, 0.3))
            rotate_once(path, style, writer, rng)
            count += 1
    print(count, flush=True)


@dataclass
class Received:
    numbers: list[int] = field(default_factory=list)
    garbled: int = 0

    def __call__(self, observation: Observation) -> None:
        if observation.metric != "log_line":
            return
        text = observation.text
        head = text[:WIDTH]
        if head.isdigit() and text[WIDTH:] == TEXT:
            self.numbers.append(int(head))
        else:
            self.garbled += 1


def on_disk(directory: Path) -> set[int]:
    found: set[int] = set()
    for entry in directory.iterdir():
        if not entry.name.startswith("app.log"):
            continue
        data = gzip.decompress(entry.read_bytes()) if entry.suffix == ".gz" else entry.read_bytes()
        for line in data.split(b"\n"):
            if line[WIDTH:] == TEXT.encode() and line[:WIDTH].isdigit():
                found.add(int(line[:WIDTH]))
    return found


@dataclass(frozen=True, kw_only=True, slots=True)
class Result:
    written: int
    rotations: int
    on_disk: int
    lost: int
    duplicated: int
    out_of_order: int
    garbled: int


async def child(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, __file__, *args, stdout=subprocess.PIPE
    )


async def run_case(work: Path, style: str, inotify: bool, rate: int, seconds: float) -> Result:
    directory = work / f"{style}-{'inotify' if inotify else 'poll'}-{rate}"
    directory.mkdir()
    log = directory / "app.log"
    log.write_bytes(b"")
    received = Received()
    settings = LogWatchSettings(name="bench", path=str(log), inotify=inotify, poll_seconds=POLL)
    watcher = LogFileWatcher(settings, SystemClock())
    task = asyncio.create_task(watcher.run(received))
    await watcher.ready.wait()
    writer = await child("--writer", str(log), str(rate), str(seconds + 2))
    assert writer.stdout is not None
    await writer.stdout.readline()  # "ready": its signal handler is in place
    rotator = await child("--rotator", str(log), style, str(writer.pid), str(seconds), str(rate))
    rotated, _ = await rotator.communicate()
    written, _ = await writer.communicate()
    total = int(written)
    kept = on_disk(directory)
    loop = asyncio.get_running_loop()
    last_change, count = loop.time(), -1
    while loop.time() - last_change < 3 * POLL:  # until nothing arrived for 3 polls
        if len(received.numbers) != count:
            count, last_change = len(received.numbers), loop.time()
        await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    got = received.numbers
    late, highest = 0, -1
    for number in got:
        if number < highest:
            late += 1
        highest = max(highest, number)
    return Result(
        written=total,
        rotations=int(rotated),
        on_disk=len(kept),
        lost=len(kept - set(got)),
        duplicated=len(got) - len(set(got)),
        out_of_order=late,
        garbled=received.garbled,
    )


async def main(rates: list[int], seconds: float, styles: list[str]) -> None:
    print(
        f"{'style':<22} {'watcher':<8} {'rate/s':>7} {'rotations':>9} {'written':>8}"
        f" {'lost by logrotate':>17} {'LOST':>5} {'dup':>4} {'order':>5} {'garbled':>7}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for style in styles:
            for inotify in (True, False):
                for rate in rates:
                    r = await run_case(Path(tmp), style, inotify, rate, seconds)
                    print(
                        f"{style:<22} {'inotify' if inotify else 'poll 1s':<8} {rate:>7}"
                        f" {r.rotations:>9} {r.written:>8} {r.written - r.on_disk:>17}"
                        f" {r.lost:>5} {r.duplicated:>4} {r.out_of_order:>5} {r.garbled:>7}",
                        flush=True,
                    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--writer"]:
        write_lines(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    elif sys.argv[1:2] == ["--rotator"]:
        _, _, path, style, pid, secs, seed = sys.argv
        rotate(path, style, int(pid), float(secs), int(seed))
    else:
        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        parser.add_argument("--rates", default="1000,10000")
        parser.add_argument("--seconds", type=float, default=8.0)
        parser.add_argument("--styles", default=",".join(STYLES))
        args = parser.parse_args()
        asyncio.run(
            main(
                [int(rate) for rate in args.rates.split(",")],
                args.seconds,
                args.styles.split(","),
            )
        )
