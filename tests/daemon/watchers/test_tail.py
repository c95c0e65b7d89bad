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


def copytruncate(log: Path, copy: Path, mtime: float) -> None:
    """logrotate's copytruncate (earlier copies shifted up first), the copy dated ``mtime``."""
    shutil.copyfile(log, copy)
    os.utime(copy, (mtime, mtime))
    os.truncate(log, 0)


def test_lines_the_writer_appends_to_the_renamed_file_after_the_switch_arrive_first(
    tmp_path: Path,
) -> None:
    """logrotate creates the new file, then postrotate tells the writer to reopen: until then it
    writes to the renamed file, after the tail already moved to the new one."""
    log = tmp_path / "app.log"
    append(log, "a1")
    now = [100.0]
    tail = Tail(str(log), from_end=False, max_line_bytes=1024, monotonic=lambda: now[0])
    assert read_all(tail) == ["a1"]
    log.rename(tmp_path / "app.log.1")
    log.write_text("")  # create
    assert read_all(tail) == []  # the tail is on the new file now
    append(tmp_path / "app.log.1", "a2", "a3")  # the writer has not reopened yet
    append(log, "b1")  # now it has
    assert read_all(tail) == ["a2", "a3", "b1"]
    now[0] += 5.0  # the renamed file idle for ROTATE_WAIT: let go
    assert read_all(tail) == []
    append(tmp_path / "app.log.1", "late")
    append(log, "b2")
    assert read_all(tail) == ["b2"]
    tail.close()


def test_copytruncate_does_not_replay_an_older_copy_with_the_same_bytes_at_the_offset(
    tmp_path: Path,
) -> None:
    """Lines of one length whose last 64 bytes are alike: only the copy that starts like our
    file is ours (here we had read all of it: nothing to recover)."""
    log = tmp_path / "app.log"
    line = "{:04d} INFO request handled by worker 7 in 3 ms, nothing to see here at all"
    append(log, *(line.format(n) for n in range(10)))
    tail = Tail(str(log), from_end=False, max_line_bytes=1024)
    assert len(read_all(tail)) == 10
    copytruncate(log, tmp_path / "app.log.1", 1000)
    append(log, *(line.format(n) for n in range(10, 15)))
    assert read_all(tail) == [line.format(n) for n in range(10, 15)]
    (tmp_path / "app.log.1").rename(tmp_path / "app.log.2")
    copytruncate(log, tmp_path / "app.log.1", 2000)
    append(log, line.format(15))
    assert read_all(tail) == [line.format(15)]
    tail.close()


def test_a_truncate_rewritten_past_the_offset_with_lines_of_one_length_is_seen(
    tmp_path: Path,
) -> None:
    log = tmp_path / "app.log"
    line = "{:04d} INFO request handled by worker 7 in 3 ms, nothing to see here at all"
    append(log, *(line.format(n) for n in range(3)))
    tail = Tail(str(log), from_end=False, max_line_bytes=1024)
    assert len(read_all(tail)) == 3
    append(log, line.format(3))
    copytruncate(log, tmp_path / "app.log.1", 1000)
    append(log, *(line.format(n) for n in range(4, 9)))  # past the old offset, same tails
    assert read_all(tail) == [line.format(n) for n in range(3, 9)]
    tail.close()


def test_several_copytruncates_between_reads_lose_no_copy(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    append(log, "a1")
    tail = Tail(str(log), from_end=False, max_line_bytes=1024)
    assert read_all(tail) == ["a1"]
    append(log, "a2")
    copytruncate(log, tmp_path / "app.log.1", 1000)
    append(log, "b1", "b2")
    (tmp_path / "app.log.1").rename(tmp_path / "app.log.2")
    copytruncate(log, tmp_path / "app.log.1", 2000)
    append(log, "c1")
    assert read_all(tail) == ["a2", "b1", "b2", "c1"]
    tail.close()


def test_a_copy_being_made_of_the_current_file_is_not_read_twice(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    append(log, "a1")
    tail = Tail(str(log), from_end=False, max_line_bytes=1024)
    assert read_all(tail) == ["a1"]
    append(log, "a2")
    copytruncate(log, tmp_path / "app.log.1", 1000)
    append(log, "b1")
    (tmp_path / "app.log.1").rename(tmp_path / "app.log.2")
    shutil.copyfile(log, tmp_path / "app.log.1")  # the next copytruncate, not truncated yet
    os.utime(tmp_path / "app.log.1", (2000, 2000))
    assert read_all(tail) == ["a2", "b1"]
    os.truncate(log, 0)
    append(log, "c1")
    assert read_all(tail) == ["c1"]
    tail.close()


def test_copytruncates_while_nothing_was_read_since_the_last_one_lose_no_copy(
    tmp_path: Path,
) -> None:
    """The file was empty when we read it after a copytruncate (offset 0: no fingerprint), then
    written, copied and truncated again before the next read (a 1 s poll; lost 8,999 lines)."""
    log = tmp_path / "app.log"
    append(log, "a1")
    tail = Tail(str(log), from_end=False, max_line_bytes=1024)
    assert read_all(tail) == ["a1"]
    append(log, "a2")
    copytruncate(log, tmp_path / "app.log.1", 1000)
    os.utime(log, (1500, 1500))  # truncated at 1500
    assert read_all(tail) == ["a2"]  # and empty at our read
    append(log, "b1", "b2")
    (tmp_path / "app.log.1").rename(tmp_path / "app.log.2")
    copytruncate(log, tmp_path / "app.log.1", 2000)
    os.utime(log, (2500, 2500))
    assert read_all(tail) == ["b1", "b2"]  # still empty: the copy is read
    assert read_all(tail) == []  # and only once
    append(log, "c1")
    (tmp_path / "app.log.2").rename(tmp_path / "app.log.3")
    (tmp_path / "app.log.1").rename(tmp_path / "app.log.2")
    copytruncate(log, tmp_path / "app.log.1", 3000)
    append(log, "d1")
    assert read_all(tail) == ["c1", "d1"]
    append(log, "d2")
    assert read_all(tail) == ["d2"]
    tail.close()


def test_a_cut_last_line_of_the_copy_is_not_joined_with_the_first_line_after_the_truncate(
    tmp_path: Path,
) -> None:
    """The copy ended inside a line (it saw a write up to a page boundary; the rest went with
    the truncate): that piece is a line of its own, the next line arrives whole."""
    log = tmp_path / "app.log"
    log.write_bytes(b"a1\na2 cut")
    tail = Tail(str(log), from_end=False, max_line_bytes=1024)
    assert read_all(tail) == ["a1"]
    copytruncate(log, tmp_path / "app.log.1", 1000)
    append(log, "b1")
    assert read_all(tail) == ["a2 cut", "b1"]
    tail.close()
