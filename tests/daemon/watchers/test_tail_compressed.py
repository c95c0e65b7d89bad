"""Tail across rotations that compress the rotated file (logrotate ``compress`` without
``delaycompress``, and ``copytruncate`` + ``compress``): lines written between two reads are read
from the ``.gz`` when the plain file is gone, once, and no older rotation is read again."""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from daemon.watchers._tail import Tail

from .test_tail import append, read_all

if TYPE_CHECKING:
    from daemon.watchers._rotation import Sibling


def compress(path: Path, *, partial: bool = False, keep: bool = False) -> Path:
    """gzip ``path`` to ``path.gz`` and remove it, as logrotate's ``compress`` does; ``partial``:
    the compressor is still writing (half the stream, the plain file still there)."""
    packed = path.with_name(path.name + ".gz")
    data = gzip.compress(path.read_bytes(), compresslevel=1)
    packed.write_bytes(data[: len(data) // 2] if partial else data)
    if not (partial or keep):
        path.unlink()
    return packed


def rotate(log: Path) -> None:
    """Shift ``app.log.N[.gz]`` up, rename the live file to ``app.log.1``, create a new one."""
    directory = log.parent
    numbered: list[tuple[int, Path]] = []
    for entry in directory.iterdir():
        suffix = entry.name.removeprefix(log.name + ".").removesuffix(".gz")
        if entry.name != log.name and suffix.isdigit():
            numbered.append((int(suffix), entry))
    for number, entry in sorted(numbered, key=lambda item: item[0], reverse=True):
        entry.rename(directory / entry.name.replace(f".{number}", f".{number + 1}", 1))
    log.rename(directory / f"{log.name}.1")
    log.write_text("")


def test_compress_without_delaycompress_reads_a_file_rotated_past_us_from_its_gz(
    tmp_path: Path,
) -> None:
    """Two rotations between two reads: b was renamed, compressed and removed before we looked;
    only ``app.log.1.gz`` holds it. a's own .gz (a copy of a file we hold) is not read again."""
    log = tmp_path / "app.log"
    append(log, "a1")
    tail = Tail(str(log), from_end=False, max_line_bytes=1024)
    assert read_all(tail) == ["a1"]
    append(log, "a2")
    rotate(log)  # a → .1
    append(log, "b1", "b2")
    compress(tmp_path / "app.log.1")  # a → .1.gz (we still hold a open)
    rotate(log)  # a → .2.gz, b → .1
    append(log, "c1")
    compress(tmp_path / "app.log.1")  # b → .1.gz
    result = tail.read(1 << 16)
    assert result.lines + read_all(tail) == ["a2", "b1", "b2", "c1"]
    append(log, "c2")
    assert read_all(tail) == ["c2"]
    tail.close()


def test_copytruncate_compress_reads_the_unread_tail_from_the_gz(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    append(log, *(f"old {n}" for n in range(200)))
    tail = Tail(str(log), from_end=False, max_line_bytes=1024)
    assert len(read_all(tail)) == 200
    append(log, "old 200", "old 201")  # written after our read, before the copy
    shutil.copyfile(log, tmp_path / "app.log.1")
    os.truncate(log, 0)
    append(log, "new 1")
    compress(tmp_path / "app.log.1")
    result = tail.read(1 << 16)
    assert "truncated" in result.notes
    assert result.lines + read_all(tail) == ["old 200", "old 201", "new 1"]
    assert not result.warnings
    tail.close()


def test_older_gz_rotations_are_not_read_again(tmp_path: Path) -> None:
    """An unrelated old rotation (written an hour ago), and a fresh .gz of a file we already read
    to its end and let go: neither is delivered; the file rotated past us is."""
    log = tmp_path / "app.log"
    old = tmp_path / "app.log.7"
    old.write_text("from last week\n")
    os.utime(compress(old), (0, os.stat(log.parent).st_mtime - 3600))
    append(log, "a1")
    now = [100.0]
    tail = Tail(str(log), from_end=False, max_line_bytes=1024, monotonic=lambda: now[0])
    assert read_all(tail) == ["a1"]
    rotate(log)  # a → .1: read to its end, then left lingering
    append(log, "b1")
    assert read_all(tail) == ["b1"]
    now[0] += 10.0  # a idle past ROTATE_WAIT: let go
    assert read_all(tail) == []
    compress(tmp_path / "app.log.1")  # a → .1.gz, now: newer than b's last write
    append(log, "b2")
    rotate(log)  # a → .2.gz, b → .1
    append(log, "c1")
    rotate(log)  # b → .2, c → .1
    append(log, "d1")
    compress(tmp_path / "app.log.1")  # c → .1.gz: rotated past us, only there
    assert read_all(tail) == ["b2", "c1", "d1"]
    tail.close()


def test_no_line_twice_when_a_rotated_file_and_its_gz_are_both_on_disk(tmp_path: Path) -> None:
    """Three rotations between reads: b only as .gz; c as a plain file beside its .gz, which the
    compressor is still writing (a cut stream): each line arrives once."""
    log = tmp_path / "app.log"
    append(log, "a1")
    tail = Tail(str(log), from_end=False, max_line_bytes=1024)
    assert read_all(tail) == ["a1"]
    rotate(log)  # a → .1
    append(log, *(f"b{n}" for n in range(3)))
    compress(tmp_path / "app.log.1")
    rotate(log)  # b → .1
    append(log, *(f"c{n}" for n in range(3000)))
    compress(tmp_path / "app.log.1")
    rotate(log)  # c → .1
    append(log, "d1")
    compress(tmp_path / "app.log.1", partial=True)  # c → .1.gz, half written; .1 still there
    lines = read_all(tail)
    assert lines == [*(f"b{n}" for n in range(3)), *(f"c{n}" for n in range(3000)), "d1"]
    compress(tmp_path / "app.log.1")  # the compressor finished: c only as .1.gz now
    append(log, "d2")
    rotate(log)  # d → .1
    append(log, "e1")
    compress(tmp_path / "app.log.1")
    assert read_all(tail) == ["d2", "e1"]
    tail.close()


def test_copytruncate_compress_twice_between_reads_reads_each_copy_once(tmp_path: Path) -> None:
    """The copy holding our unread tail is only a .gz; the next copy is a plain file with its
    complete .gz beside it (the compressor has not removed it yet)."""
    log = tmp_path / "app.log"
    append(log, "a1")
    tail = Tail(str(log), from_end=False, max_line_bytes=1024)
    assert read_all(tail) == ["a1"]
    append(log, "a2")
    shutil.copyfile(log, tmp_path / "app.log.1")
    os.truncate(log, 0)
    compress(tmp_path / "app.log.1")
    append(log, "b1", "b2")
    (tmp_path / "app.log.1.gz").rename(tmp_path / "app.log.2.gz")
    shutil.copyfile(log, tmp_path / "app.log.1")
    os.truncate(log, 0)
    compress(tmp_path / "app.log.1", keep=True)
    append(log, "c1")
    assert read_all(tail) == ["a2", "b1", "b2", "c1"]
    tail.close()


def test_a_gz_beyond_max_decompressed_is_read_as_far_as_allowed_and_named(
    tmp_path: Path,
) -> None:
    log = tmp_path / "app.log"
    append(log, "a1")
    tail = Tail(str(log), from_end=False, max_line_bytes=1024, max_decompressed=1000)
    assert read_all(tail) == ["a1"]
    append(log, *(f"line {n:04d}" for n in range(200)))  # 2,000 bytes: beyond the cap
    shutil.copyfile(log, tmp_path / "app.log.1")
    os.truncate(log, 0)
    packed = compress(tmp_path / "app.log.1")
    append(log, "new 1")
    result = tail.read(1 << 16)
    assert any(str(packed) in warning for warning in result.warnings)
    lines = result.lines + read_all(tail)
    assert lines[0] == "line 0000" and lines[-1] == "new 1"
    assert 50 < len(lines) < 200
    tail.close()


@pytest.mark.parametrize("when", ["before the scan", "after the scan"])
def test_a_rotation_during_the_directory_scan_loses_no_file(tmp_path: Path, when: str) -> None:
    """Rotations every few ms (create mode, 10k lines/s): names shift while the tail looks for
    files rotated past it. A name opened after the scan may hold another file by then."""
    log = tmp_path / "app.log"
    append(log, "a1")
    rotations = {"pending": 1}

    def rotate_now() -> None:
        rotations["pending"] -= 1
        rotate(log)
        append(log, "d1" if when == "after the scan" else "c1")

    class RacedTail(Tail):
        def _siblings(self) -> list[Sibling]:
            if rotations["pending"] and when == "before the scan":
                rotate_now()
            found = super()._siblings()
            if rotations["pending"] and when == "after the scan":
                rotate_now()
            return found

    tail = RacedTail(str(log), from_end=False, max_line_bytes=1024)
    assert read_all(tail) == ["a1"]
    append(log, "a2")
    rotate(log)  # a → .1
    append(log, "b1")
    if when == "after the scan":
        rotate(log)  # a → .2, b → .1
        append(log, "c1")
    assert read_all(tail) == (
        ["a2", "b1", "c1", "d1"] if when == "after the scan" else ["a2", "b1", "c1"]
    )
    tail.close()
