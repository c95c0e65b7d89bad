"""Tail between two reads (a poll without inotify, or a burst): rotations that happened in the
gap still deliver every line, in order, once."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from daemon.watchers._tail import Tail


def read_all(tail: Tail) -> list[str]:
    out: list[str] = []
    while True:
        result = tail.read(1 << 16)
        out += result.lines
        if not result.more:
            return out


def append(path: Path, *lines: str) -> None:
    with path.open("a") as handle:
        handle.write("".join(f"{line}\n" for line in lines))


def test_two_rename_rotations_between_reads_lose_no_file(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    append(log, "a1")
    older = tmp_path / "app.log.5"
    older.write_text("older, already rotated before we started\n")
    os.utime(older, (0, os.stat(older).st_mtime - 3600))  # last written an hour ago
    tail = Tail(str(log), from_end=False, max_line_bytes=1024)
    assert read_all(tail) == ["a1"]
    append(log, "a2")
    log.rename(tmp_path / "app.log.1")  # first rotation: a → .1
    append(log, "b1", "b2")
    (tmp_path / "app.log.1").rename(tmp_path / "app.log.2")  # second: a → .2, b → .1
    log.rename(tmp_path / "app.log.1")
    append(log, "c1")
    assert read_all(tail) == ["a2", "b1", "b2", "c1"]
    append(log, "c2")
    assert read_all(tail) == ["c2"]
    tail.close()


def test_copytruncate_between_reads_recovers_the_lines_from_the_copy(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    append(log, "old 1")
    tail = Tail(str(log), from_end=False, max_line_bytes=1024)
    assert read_all(tail) == ["old 1"]
    append(log, "old 2", "old 3")  # written after our read, before the copy
    shutil.copyfile(log, tmp_path / "app.log-20261206")
    os.truncate(log, 0)
    append(log, "new 1")
    result = tail.read(1 << 16)
    assert "truncated" in result.notes
    assert result.lines + read_all(tail) == ["old 2", "old 3", "new 1"]
    tail.close()


def test_a_truncate_without_a_copy_restarts_at_the_top(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    append(log, "one", "two")
    tail = Tail(str(log), from_end=False, max_line_bytes=1024)
    assert read_all(tail) == ["one", "two"]
    (tmp_path / "app.log.1").write_text("an unrelated file of the same name family\n" * 3)
    os.truncate(log, 0)
    append(log, "three")
    assert read_all(tail) == ["three"]
    tail.close()
