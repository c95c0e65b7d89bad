"""A log path's rotated siblings (``app.log.1``, ``app.log-DATE``, ``app.log.1.gz``): finding them,
deciding which hold the lines a `Tail` missed between two reads, opening or decompressing them.

`Rotation` decides and opens; the `Tail` hands in what it knows (its offset, fingerprint, the
first bytes of the files it read) and reads the copies chosen through a callback, so line
decoding stays in one place. The guarantees are in `daemon.watchers._tail`'s docstring.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import stat
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

FINGERPRINT = 64  # bytes before the offset remembered to detect a rewritten file
_ROTATED_SEPARATORS = (".", "-", "_")  # app.log.1, app.log-20261206, app.log_old
_COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".lz4", ".z")
_OPENERS: dict[
    str, Callable[[IO[bytes]], io.BufferedIOBase]
] = {  # the ones the standard library reads
    ".gz": lambda raw: gzip.GzipFile(fileobj=raw, mode="rb"),
    ".bz2": lambda raw: bz2.BZ2File(raw, "rb"),
    ".xz": lambda raw: lzma.LZMAFile(raw, "rb"),  # noqa: SIM115 (a factory)
}
_CHUNK = 1 << 16  # bytes decompressed per step
_RESCANS = 4  # directory scans tried while rotations move the siblings under us

FileId = tuple[int, int]  # (st_dev, st_ino)
# Restarted at 0 after a copytruncate and nothing read since: the file's mtime then, the first
# bytes of the copies read, the siblings seen (it may be copied again meanwhile).
Emptied = tuple[int, list[bytes], set[FileId]]


@dataclass(frozen=True, slots=True)
class Sibling:
    """A rotated copy of the path, as the directory scan saw it."""

    path: str
    info: os.stat_result
    compressed: str  # its suffix (".gz") when it is compressed, else ""

    @property
    def id(self) -> FileId:
        return self.info.st_dev, self.info.st_ino


Scan = Callable[[], list[Sibling]]  # the siblings as the directory holds them now


def find_siblings(path: str) -> list[Sibling]:
    """Rotated copies of ``path`` beside it (app.log.1, app.log-DATE, app.log.1.gz)."""
    directory, base = os.path.split(path)
    found = []
    try:
        entries = list(os.scandir(directory or "."))
    except OSError:
        return []
    for entry in entries:
        name = entry.name
        if not (
            len(name) > len(base)
            and name.startswith(base)
            and name[len(base)] in _ROTATED_SEPARATORS
        ):
            continue
        suffix = os.path.splitext(name)[1].lower()
        if suffix in _COMPRESSED and suffix not in _OPENERS:
            continue  # a compression the standard library cannot read
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISREG(info.st_mode):
            found.append(Sibling(entry.path, info, suffix if suffix in _OPENERS else ""))
    return found


class Rotation:
    """Finds and opens the rotated siblings of ``path`` that hold lines missed between reads.

    ``scan`` (each method's first argument) lists the siblings, as `find_siblings` does;
    ``warnings`` collects what could not be read (a compressed sibling cut, corrupt or past
    ``max_decompressed``)."""

    def __init__(
        self,
        path: str,
        *,
        max_decompressed: int,
        warnings: list[str],
    ) -> None:
        self.path = path
        self._max_decompressed = max_decompressed
        self._warnings = warnings

    def rotated_past(
        self, scan: Scan, skip: set[FileId], old_mtime: int, known: list[bytes], new: int | None
    ) -> list[tuple[int, FileId]]:
        """Open files rotated between the old file (last written at ``old_mtime``) and the one
        now at the path (``new``), oldest first, but those in ``skip`` (the old file, the ones
        still read). Compressed ones are read from their decompressed copy,
        unless they are a copy of a file we read (first bytes in ``known``), or of a plain
        sibling found beside them. The directory is scanned again when a sibling moved between
        the scan and its opening."""
        for _ in range(_RESCANS - 1):
            opened, moved = self._open_between(scan, skip, old_mtime, known, new)
            if not moved:
                return opened
            for fd, _ident in opened:
                os.close(fd)
        # still moving: what we saw
        return self._open_between(scan, skip, old_mtime, known, new)[0]

    def _open_between(
        self, scan: Scan, skip: set[FileId], old_mtime: int, known: list[bytes], new: int | None
    ) -> tuple[list[tuple[int, FileId]], bool]:
        if new is not None:
            skip = {*skip, fd_id(new)}
        siblings = scan()
        between = oldest_first(
            [
                sibling
                for sibling in siblings
                if sibling.id not in skip and sibling.info.st_mtime_ns >= old_mtime
            ],
            len(os.path.basename(self.path)),
        )
        found: list[tuple[int, FileId]] = []
        heads = [head for head in known if head]
        if any(sibling.compressed for sibling in between):
            heads += plain_heads(siblings)
        moved = False
        for sibling in between:
            if sibling.compressed:
                fd = self.unpack(sibling, 0, lambda first: not starts(first, heads))
                if fd is None:
                    continue
            else:
                try:
                    fd = open_same(sibling)
                except FileNotFoundError:  # compressed and removed since the scan, or shifted
                    moved = True
                    continue
                except OSError:
                    continue
                if fd is None:  # another file took its name since the scan
                    moved = True
                    continue
            found.append((fd, fd_id(fd)))
        return found, moved

    def unpack(
        self, sibling: Sibling, keep_from: int, accept: Callable[[bytes], bool]
    ) -> int | None:
        """Decompress ``sibling`` into an unnamed temporary file, if ``accept`` takes its first
        bytes; its fd, or None. Bytes before ``keep_from`` (but the first ones) are a hole, not
        stored. Memory stays bounded (one chunk). After ``max_decompressed`` bytes, or a cut or
        corrupt stream (a compressor still writing it), it ends after the last whole line, with
        a warning naming the file; a stream cut before its first bytes is None."""
        try:
            raw = open(sibling.path, "rb", opener=_no_follow)  # noqa: SIM115 (closed below)
        except OSError:
            return None
        with raw, tempfile.TemporaryFile() as out:
            fd = out.fileno()
            position, first, problem, whole = 0, b"", "", keep_from
            try:
                with _OPENERS[sibling.compressed](raw) as stream:
                    while chunk := stream.read(_CHUNK):
                        if len(first) < FINGERPRINT:
                            first = (first + chunk)[:FINGERPRINT]
                            if len(first) == FINGERPRINT and not accept(first):
                                return None
                        if position + len(chunk) > self._max_decompressed:
                            chunk = chunk[: self._max_decompressed - position]
                            problem = f"stopped after {self._max_decompressed} decompressed bytes"
                        end = position + len(chunk)
                        if position < FINGERPRINT:
                            os.pwrite(fd, chunk[: FINGERPRINT - position], position)
                        if end > keep_from:
                            begin = max(position, keep_from)
                            os.pwrite(fd, chunk[begin - position :], begin)
                            newline = chunk.rfind(b"\n", begin - position)
                            if newline >= 0:
                                whole = position + newline + 1
                        position = end
                        if problem:
                            break
            except (OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
                if len(first) < FINGERPRINT:
                    return None
                problem = f"cut or corrupt ({exc})"
            if not first or not accept(first):
                return None
            if problem:
                position = whole
                self._warnings.append(
                    f"{sibling.path}: {problem}; lines after that are not read from it"
                )
            os.ftruncate(fd, position)
            return os.dup(fd)

    def recover_from_copy(
        self,
        scan: Scan,
        live: int,
        *,
        head: bytes,
        fingerprint: bytes,
        offset: int,
        read_mtime: int,
        read_rest: Callable[[int], None],
        read_copy: Callable[[int], None],
    ) -> list[bytes] | None:
        """Before restarting a truncated file: the bytes written after our last read, from the
        copy copytruncate made (it starts with our ``head`` and holds our ``fingerprint`` just
        before our ``offset``, or ends before it: we read all it holds), read from ``offset``
        by ``read_rest``, then whole (``read_copy``) any copies made after it (several
        truncates between reads) but one of what the file holds now (copying), or of ours. A
        compressed copy counts when it was written after our last read (``read_mtime``).
        Returns the first bytes of our file and of the copies read; None when no copy was
        found."""
        size = len(fingerprint)
        if not size:
            return None
        ours: int | None = None  # the mtime of our copy
        siblings = scan()
        compressed = any(sibling.compressed for sibling in siblings)
        plain = plain_heads(siblings) if compressed else []  # a .gz starting alike is its copy
        newest = sorted(siblings, key=lambda sibling: sibling.info.st_mtime_ns, reverse=True)
        for sibling in newest:
            if sibling.compressed:
                if sibling.info.st_mtime_ns < read_mtime:
                    continue
                keep = offset - size
                fd = self.unpack(
                    sibling,
                    keep,
                    lambda first: first.startswith(head) and not starts(first, plain),
                )
            else:
                fd = open_sibling(sibling.path)
            if fd is None:
                continue
            try:
                if os.pread(fd, len(head), 0) != head:
                    continue
                if os.fstat(fd).st_size < offset:
                    ours = sibling.info.st_mtime_ns  # we read more than it holds (written before)
                    break
                if os.pread(fd, size, offset - size) == fingerprint:
                    read_rest(fd)
                    ours = sibling.info.st_mtime_ns
                    break
            finally:
                os.close(fd)
        if ours is None:
            return None
        now = os.pread(live, FINGERPRINT, 0)
        done = [h for h in (now, head) if h]  # copies of these are not read (again)
        later = [sibling for sibling in siblings if sibling.info.st_mtime_ns > ours]
        return [head, *self.read_copies(later, done, plain, read_copy)]

    def copies_while_empty(
        self, scan: Scan, live: int, emptied: Emptied, read_copy: Callable[[int], None]
    ) -> Emptied:
        """At offset 0 since a copytruncate, nothing read: when the file changed since, read
        whole (``read_copy``) the copies made since (new siblings: it was written, copied and
        truncated again between two reads, and no fingerprint tells), oldest first, but one of
        what the file holds now. Returns the new ``emptied`` state."""
        since, done, seen = emptied
        changed = os.fstat(live).st_mtime_ns
        if changed == since:
            return emptied
        siblings = scan()
        plain = plain_heads(siblings) if any(s.compressed for s in siblings) else []
        new = [s for s in siblings if s.id not in seen and s.info.st_mtime_ns >= since]
        now = os.pread(live, FINGERPRINT, 0)
        read = self.read_copies(new, [*done, now] if now else done, plain, read_copy)
        return (changed, done + read, seen | {sibling.id for sibling in siblings})

    def read_copies(
        self,
        copies: list[Sibling],
        done: list[bytes],
        plain: list[bytes],
        read_copy: Callable[[int], None],
    ) -> list[bytes]:
        """Read whole (``read_copy``), oldest first, the ``copies`` that start with none of
        ``done`` (nor, when compressed, like a plain sibling in ``plain``); the first bytes of
        those read."""
        done, read = list(done), []
        for sibling in oldest_first(copies, len(os.path.basename(self.path))):
            if sibling.compressed:
                fd = self.unpack(sibling, 0, lambda first: not starts(first, done + plain))
            else:
                fd = open_sibling(sibling.path)
            if fd is None:
                continue
            try:
                first = os.pread(fd, FINGERPRINT, 0)
                if first and not starts(first, done):
                    read_copy(fd)
                    done.append(first)
                    read.append(first)
            finally:
                os.close(fd)
        return read


def open_sibling(path: str) -> int | None:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None


def open_same(sibling: Sibling) -> int | None:
    """Open ``sibling`` if its name still holds the file the scan saw (None if another one)."""
    fd = os.open(sibling.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    if fd_id(fd) == sibling.id:
        return fd
    os.close(fd)
    return None


def _no_follow(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_CLOEXEC | os.O_NOFOLLOW)


def fd_id(fd: int) -> FileId:
    info = os.fstat(fd)
    return info.st_dev, info.st_ino


def plain_heads(siblings: list[Sibling]) -> list[bytes]:
    """The first bytes of each plain sibling (a compressed one starting alike is its copy)."""
    heads = []
    for sibling in siblings:
        if not sibling.compressed and (fd := open_sibling(sibling.path)) is not None:
            try:
                if head := os.pread(fd, FINGERPRINT, 0):
                    heads.append(head)
            finally:
                os.close(fd)
    return heads


def oldest_first(siblings: list[Sibling], base: int) -> list[Sibling]:
    """By rotation number when all are numbered (``app.log.2.gz`` before ``app.log.1``: a .gz's
    mtime is when it was compressed, not when its file was last written), else by mtime."""
    numbers = []
    for sibling in siblings:
        name = os.path.basename(sibling.path)[base + 1 :]
        number = name.removesuffix(sibling.compressed) if sibling.compressed else name
        numbers.append(int(number) if number.isdigit() else None)
    if None not in numbers:
        pairs = zip(numbers, siblings, strict=True)
        return [sibling for _, sibling in sorted(pairs, key=lambda pair: -(pair[0] or 0))]
    return sorted(siblings, key=lambda sibling: (sibling.info.st_mtime_ns, sibling.path))


def starts(data: bytes, heads: list[bytes]) -> bool:
    """True when ``data`` (a file's first bytes) begins with one of ``heads`` (or is a prefix
    of one: a file shorter than the head of the file it was copied from)."""
    return any(data.startswith(head) or (data and head.startswith(data)) for head in heads)
