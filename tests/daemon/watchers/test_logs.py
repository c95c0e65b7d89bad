"""LogFileWatcher against real files, a real writer thread, real rotations and real inotify."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import os
import shutil
import threading
import time
import tracemalloc
from pathlib import Path

import pytest
from pydantic import ValidationError

from daemon.core.clock import ManualClock
from daemon.watchers._tail import Tail
from daemon.watchers.logs import LogFileWatcher, LogWatchSettings
from tests.daemon.watchers.inotify_limits import run_limited, userns_available
from tests.daemon.watchers.recorder import Recorder, running


class Writer(threading.Thread):
    """Appends ``line N`` lines like a logger; reopens its path when asked (like on SIGHUP)."""

    def __init__(self, path: Path, count: int, pause: float = 0.0005) -> None:
        super().__init__(daemon=True)
        self.path, self.count, self.pause = path, count, pause
        self.lock = threading.Lock()  # held while writing one line
        self.written = 0
        self._handle = open(path, "a")  # noqa: SIM115 - kept open across lines on purpose
        self._reopen = threading.Event()

    def run(self) -> None:
        for n in range(self.count):
            if self._reopen.is_set():
                self._reopen.clear()
                with self.lock:
                    self._handle.close()
                    self._handle = open(self.path, "a")  # noqa: SIM115
            with self.lock:
                self._handle.write(f"line {n}\n")
                self._handle.flush()
                self.written = n + 1
            time.sleep(self.pause)
        self._handle.close()

    def reopen(self) -> None:
        self._reopen.set()

    async def wait_written(self, count: int, timeout: float = 30.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.written < count:
            if loop.time() > deadline:
                raise AssertionError(f"the writer wrote {self.written} of {count} lines")
            await asyncio.sleep(0.01)


def lines(recorder: Recorder) -> list[str]:
    return [o.text for o in recorder.of("log_line")]


async def wait_lines(recorder: Recorder, count: int, timeout: float = 30.0) -> list[str]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(lines(recorder)) < count:
        if loop.time() > deadline:
            raise AssertionError(f"{len(lines(recorder))} of {count} lines: {lines(recorder)[-5:]}")
        await asyncio.sleep(0.02)
    return lines(recorder)


def watcher(path: Path, **options: object) -> LogFileWatcher:
    settings = LogWatchSettings.model_validate({"name": "app", "path": str(path), **options})
    return LogFileWatcher(settings, ManualClock())


async def test_starts_at_the_end_and_labels_each_line(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("old history 1\nold history 2\n")
    recorder = Recorder()
    tail = watcher(log, poll_seconds=0.05)
    async with running(tail, recorder):
        await tail.ready.wait()
        with log.open("a") as handle:
            handle.write("fresh\n")
        assert await wait_lines(recorder, 1) == ["fresh"]
    line = recorder.of("log_line")[0]
    assert line.labels == {"path": str(log), "log": "app"}
    assert line.source == "log:app"


async def test_from_end_false_reads_the_history(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("one\ntwo\n")
    recorder = Recorder()
    async with running(watcher(log, from_end=False), recorder):
        assert await wait_lines(recorder, 2) == ["one", "two"]


async def test_partial_lines_wait_for_their_newline(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("")
    recorder = Recorder()
    tail = watcher(log, poll_seconds=0.05)
    async with running(tail, recorder):
        await tail.ready.wait()
        with log.open("a") as handle:
            for piece in ("par", "tial li", "ne\nsecond ", "half\r\n"):
                handle.write(piece)
                handle.flush()
                await asyncio.sleep(0.15)  # each piece is read before the next arrives
        assert await wait_lines(recorder, 2) == ["partial line", "second half"]


async def test_rename_rotation_with_a_live_writer_loses_and_repeats_nothing(
    tmp_path: Path,
) -> None:
    log = tmp_path / "app.log"
    log.write_text("before the watcher started\n")
    recorder = Recorder()
    tail = watcher(log, poll_seconds=0.2)
    async with running(tail, recorder):
        await tail.ready.wait()
        writer = Writer(log, 3000)
        writer.start()
        for generation in range(1, 4):
            await writer.wait_written(generation * 600)
            os.rename(log, tmp_path / f"app.log.{generation}")  # the writer keeps writing there
            await asyncio.sleep(0.03)
            writer.reopen()  # ... until it reopens the path, creating a new file
        await asyncio.to_thread(writer.join)
        got = await wait_lines(recorder, 3000)
    assert got == [f"line {n}" for n in range(3000)]


@pytest.mark.parametrize("inotify", [True, False])
async def test_copytruncate_with_a_live_writer_loses_and_repeats_nothing(
    tmp_path: Path, inotify: bool
) -> None:
    """Lines written after the last read and before the truncate are read from the copy; with
    or without inotify (the NFS fallback polls), every line arrives once, in order."""
    log = tmp_path / "app.log"
    log.write_text("")
    recorder = Recorder()
    tail = watcher(log, inotify=inotify, poll_seconds=0.2)
    async with running(tail, recorder):
        await tail.ready.wait()
        writer = Writer(log, 3000)
        writer.start()
        for round_ in range(1, 4):
            await writer.wait_written(round_ * 700)
            with writer.lock:  # logrotate's copytruncate, between two lines of the writer
                shutil.copyfile(log, tmp_path / f"app.log.{round_}")
                os.truncate(log, 0)
        await asyncio.to_thread(writer.join)
        got = await wait_lines(recorder, 3000)
    assert got == [f"line {n}" for n in range(3000)]


async def test_two_renames_in_one_poll_without_inotify_lose_nothing(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("")
    recorder = Recorder()
    tail = watcher(log, inotify=False, poll_seconds=0.3)
    async with running(tail, recorder):
        await tail.ready.wait()
        append = [f"first {n}\n" for n in range(3)]
        with log.open("a") as handle:
            handle.write("".join(append))
        await wait_lines(recorder, 3)
        for generation in ("second", "third"):  # two rotations before the next poll
            with log.open("a") as handle:
                handle.write(f"{generation} tail of the old file\n")
            if generation == "third":
                os.rename(f"{log}.1", f"{log}.2")
            log.rename(f"{log}.1")
            log.write_text(f"{generation} 0\n")
        got = await wait_lines(recorder, 7)
    assert got == [
        "first 0", "first 1", "first 2", "second tail of the old file", "second 0",
        "third tail of the old file", "third 0",
    ]  # fmt: skip


async def test_copytruncate_then_writes_past_the_old_offset_caught_by_the_poll(
    tmp_path: Path,
) -> None:
    log = tmp_path / "app.log"
    log.write_text("")
    recorder = Recorder()
    tail = watcher(log, inotify=False, poll_seconds=0.3)
    async with running(tail, recorder):
        await tail.ready.wait()
        with log.open("a") as handle:
            handle.write("old 1\nold 2\n")
        assert await wait_lines(recorder, 2) == ["old 1", "old 2"]
        with log.open("a") as handle:  # truncate and grow past the old offset between polls
            os.truncate(log, 0)
            handle.write("".join(f"new {n}\n" for n in range(10)))
        got = await wait_lines(recorder, 12)
    assert got == ["old 1", "old 2"] + [f"new {n}" for n in range(10)]


def test_tail_restarts_a_file_rewritten_past_its_offset(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"2026-01-01 first\n")
    tail = Tail(str(log), from_end=False, max_line_bytes=1024)
    assert tail.read(1 << 20).lines == ["2026-01-01 first"]
    log.write_bytes(b"2026-01-02 second line, longer than the first\n")  # same inode
    result = tail.read(1 << 20)
    assert result.lines == ["2026-01-02 second line, longer than the first"]
    assert "truncated" in result.notes
    tail.close()


async def test_a_10_mb_line_is_cut_and_marked_with_bounded_memory(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("")
    recorder = Recorder()
    tail = watcher(log, max_line_bytes=4096)
    async with running(tail, recorder):
        await tail.ready.wait()
        payload = b"x" * (10 << 20) + b"\nafter\n"
        tracemalloc.start()
        with log.open("ab") as handle:
            handle.write(payload)
        got = await wait_lines(recorder, 2)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert got[0] == "x" * 4096 + f" …[truncated {(10 << 20) - 4096} bytes]"
    assert got[1] == "after"
    assert peak < 8 << 20, f"peak {peak} bytes while reading a 10 MB line"


async def test_binary_garbage_is_decoded_with_replacement(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("")
    recorder = Recorder()
    tail = watcher(log)
    async with running(tail, recorder):
        await tail.ready.wait()
        with log.open("ab") as handle:
            handle.write(bytes(range(256)) * 64 + b"\n\xff\xfe\x00bad\n" + b"ok after\n")
        got = await wait_lines(recorder, 4)
    assert got[-1] == "ok after"
    assert got[-2] == "\ufffd\ufffd\ufffdbad"
    assert all("\x00" not in text for text in got)
    assert "\ufffd" in got[1]


async def test_missing_then_created_then_deleted_then_recreated(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    recorder = Recorder()
    tail = watcher(log, poll_seconds=0.05)
    async with running(tail, recorder):
        error = await recorder.wait_for("watcher_error", lambda o: o.value == 1.0)
        assert str(log) in error.text and error.labels["target"] == str(log)
        log.write_text("first\nsecond\n")  # appears: read from its start, not its end
        assert await wait_lines(recorder, 2) == ["first", "second"]
        await recorder.wait_for("watcher_error", lambda o: o.value == 0.0)
        mark = len(recorder.seen)
        log.unlink()
        error = await recorder.wait_for("watcher_error", lambda o: o.value == 1.0, after=mark)
        assert str(log) in error.text
        log.write_text("third\n")
        assert await wait_lines(recorder, 3) == ["first", "second", "third"]
        await recorder.wait_for("watcher_error", lambda o: o.value == 0.0, after=mark)


async def test_a_burst_does_not_stall_the_loop(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("")
    count = 300_000  # ~30 MB
    recorder = Recorder()
    tail = watcher(log)
    gaps: list[float] = []

    async def ticker() -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(0.005)
            now = loop.time()
            gaps.append(now - last)
            last = now

    async with running(tail, recorder):
        await tail.ready.wait()
        payload = "".join(f"burst line {n:06d} " + "y" * 80 + "\n" for n in range(count))
        await asyncio.to_thread(log.write_text, payload)
        ticks = asyncio.create_task(ticker())
        await wait_lines(recorder, count, timeout=120)
        ticks.cancel()
    assert max(gaps) < 1.0, f"the loop stalled {max(gaps):.2f}s"


async def test_cancel_stops_watchdog_threads_and_closes_the_file(tmp_path: Path) -> None:
    from watchdog.utils import BaseThread

    log = tmp_path / "app.log"
    log.write_text("x\n")
    before = set(threading.enumerate())
    tail = watcher(log)
    async with running(tail, Recorder()):
        await tail.ready.wait()
        assert any(isinstance(t, BaseThread) for t in threading.enumerate())
    leaked = [t for t in set(threading.enumerate()) - before if isinstance(t, BaseThread)]
    assert leaked == []
    assert str(log) not in open_paths()


def open_paths() -> list[str]:
    paths = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            paths.append(os.readlink(f"/proc/self/fd/{fd}"))
    return paths


def test_settings_name_what_is_wrong() -> None:
    with pytest.raises(ValidationError, match="absolute path"):
        LogWatchSettings(name="app", path="var/log/app.log")
    with pytest.raises(ValidationError, match="unknown encoding"):
        LogWatchSettings(name="app", path="/var/log/app.log", encoding="klingon")
    with pytest.raises(ValidationError, match="without spaces"):
        LogWatchSettings(name="my app", path="/var/log/app.log")
    assert LogWatchSettings(name="app", path="/var/log//app.log").path == "/var/log/app.log"


@pytest.mark.skipif(not userns_available(), reason="needs `unshare -Ur`")
async def test_without_inotify_instances_lines_still_arrive_by_polling(tmp_path: Path) -> None:
    seen = await run_limited("log-instances", tmp_path)
    error = next(o for o in seen if o["metric"] == "watcher_error")
    assert "fs.inotify.max_user_instances" in str(error["text"])
    assert "polling every 0.05s" in str(error["text"])
    assert [o["text"] for o in seen if o["metric"] == "log_line"] == ["still read by polling"]


class Gate:
    """The watcher's pause: each poll after the first waits for `step`."""

    def __init__(self) -> None:
        self.waiting = asyncio.Event()
        self._go = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        self.waiting.set()
        await self._go.wait()
        self._go.clear()

    async def step(self) -> None:
        """Let one poll run, and wait until it has finished."""
        await self.waiting.wait()
        self.waiting.clear()
        self._go.set()
        await self.waiting.wait()


async def test_copytruncate_compress_between_polls_recovers_and_warns_when_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Without inotify: the lines written after a poll are read back from the .gz the copy was
    compressed into; past the decompression cap the rest is skipped with a WARNING naming it."""
    monkeypatch.setattr("daemon.watchers._tail.MAX_DECOMPRESSED", 4096, raising=False)
    log = tmp_path / "app.log"
    log.write_text("")
    recorder = Recorder()
    gate = Gate()
    settings = LogWatchSettings(name="app", path=str(log), inotify=False)
    tail = LogFileWatcher(settings, ManualClock(), sleep=gate)
    async with running(tail, recorder):
        await tail.ready.wait()
        with log.open("a") as handle:
            handle.write("first\n")
        await gate.step()
        assert lines(recorder) == ["first"]
        for round_, count in enumerate((10, 1000)):  # 220 bytes, then 22 kB: beyond the cap
            with log.open("a") as handle:
                handle.write("".join(f"round {round_} line {n:04d}\n" for n in range(count)))
            shutil.copyfile(log, tmp_path / "app.log.1")
            os.truncate(log, 0)
            copy = tmp_path / "app.log.1"  # compress without delaycompress
            copy.with_name("app.log.1.gz").write_bytes(gzip.compress(copy.read_bytes()))
            copy.unlink()
            with log.open("a") as handle:
                handle.write(f"after {round_}\n")
            await gate.step()
            os.rename(f"{log}.1.gz", f"{log}.{round_ + 2}.gz")
    got = lines(recorder)
    assert got[:12] == ["first", *(f"round 0 line {n:04d}" for n in range(10)), "after 0"]
    assert got[12] == "round 1 line 0000" and got[-1] == "after 1"
    assert 100 < len(got) - 13 < 1000  # cut at the cap
    cut = [r for r in caplog.records if r.levelname == "WARNING" and f"{log}.1.gz" in r.message]
    assert len(cut) == 1
