"""Tailing one log file by path: rotation by rename and by copytruncate, partial and huge lines.

`Tail` is synchronous and blocking (the watcher calls it from a worker thread, one call at a
time). Each `Tail.read` reads at most ``limit`` bytes, so a burst is handed over in bounded chunks.

What it guarantees, for a writer that appends whole or partial lines:

- rename rotation (the path gets a new inode): the old file is read to its end, a last line
  without a newline is delivered as it is, then the new file is read from its start. Files that
  were rotated past us between two reads (two rotations in one poll: ``app.log`` → ``.1`` →
  ``.2``) are found among the path's rotated siblings (``app.log.N``, ``app.log-DATE``) by being
  written since the old file was last written, and read whole, oldest first (by rotation number
  when all are numbered), before the new file. The new file is opened before that scan, and a
  sibling is opened only if its name still holds the file the scan saw (else the directory is
  scanned again): rotations racing the scan lose no file. Every file rotated away is still read
  (its lines ahead of the new
  file's) until it has not grown for ``ROTATE_WAIT`` seconds: a writer appends to it until it
  reopens the path (logrotate's postrotate SIGHUP comes after the new file was created).
- copytruncate (the file shrinks below the offset read, or the bytes just before that offset
  changed, which catches a truncate followed by writes past the old offset before we looked):
  the lines written after our last read but before the copy was taken are read from the copy (a
  rotated sibling starting with the same bytes as our file and holding the same bytes before
  our offset), then any copies made after it (several truncates between two reads), whole, then
  reading restarts at 0. Lines
  already read are never delivered again; lines written after the truncate arrive exactly once.
  A line still without its newline at the end of the copy is delivered as it is, never joined
  with the first line written after the truncate: loggers write a line at once, and its rest
  went with the truncate (even one ``write()`` can be cut: a copy can see it up to a page
  boundary only). Copies made while we sat at offset 0 after a truncate (nothing read since:
  no fingerprint to compare) are found as new siblings and read whole.
- compressed siblings (``.gz``, ``.bz2``, ``.xz``; logrotate ``compress`` without
  ``delaycompress``, or with ``copytruncate``): when the plain rotated file or copy is gone, its
  lines are read from the compressed one, decompressed (one chunk in memory) into an unnamed
  temporary file, the bytes before our offset as a hole. One that starts like a file we hold or
  let go, or like a plain sibling (the same file, being compressed), is a copy and not read
  again; a copytruncate copy must also be newer than our last read. At most
  ``max_decompressed`` bytes of one are scanned: past that, or in a cut or corrupt stream, the
  rest is left with a warning naming the file (`TailRead.warnings`), never silently.
- a line longer than ``max_line_bytes`` is cut to that many bytes and marked
  `` …[truncated N bytes]``; no more than ``max_line_bytes`` of one line is ever held.
- bytes are decoded with ``errors="replace"``; NUL becomes U+FFFD; a trailing CR is dropped.
- a deleted file (no links left) is read to its end and closed (the disk space is not pinned).
"""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import io
import lzma
import os
import stat
import tempfile
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

_FINGERPRINT = 64  # bytes before the offset remembered to detect a rewritten file
_NO_FILE = (-1, -1)
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
MAX_DECOMPRESSED = 256 << 20  # decompressed bytes scanned per compressed sibling at most
ROTATE_WAIT = 5.0  # seconds a file rotated away is still read after its last growth
MAX_LINGERING = 8  # rotated-away files kept open at most (the oldest is let go first)


@dataclass(frozen=True, kw_only=True, slots=True)
class TailRead:
    """What one `Tail.read` call produced."""

    lines: list[str] = field(default_factory=list)
    more: bool = False  # call again at once: the byte budget ran out or the file was switched
    missing: bool = False  # the path does not exist right now
    notes: tuple[str, ...] = ()  # "opened", "rotated", "truncated", "deleted" (for logging)
    warnings: tuple[str, ...] = ()  # lines may be missing (a compressed sibling cut or corrupt)


class Tail:
    """Follows the file at ``path`` across rotations; see the module docstring."""

    def __init__(
        self,
        path: str,
        *,
        from_end: bool,
        max_line_bytes: int,
        encoding: str = "utf-8",
        monotonic: Callable[[], float] = time.monotonic,
        max_decompressed: int | None = None,  # MAX_DECOMPRESSED
    ) -> None:
        self.path = path
        self._from_end = from_end  # until the first attempt to open: a file missing then is new
        self._max = max_line_bytes
        self._encoding = encoding
        self._fd: int | None = None
        self._id = _NO_FILE  # (st_dev, st_ino) of the open file
        self._offset = 0
        self._fingerprint = b""  # the bytes just before _offset
        self._head = b""  # the file's first bytes (up to _FINGERPRINT): which copy is ours
        self._partial = bytearray()  # the start of a line whose newline has not arrived
        self._dropped = 0  # bytes of that line beyond max_line_bytes, thrown away
        self._skip = False  # discard up to the next newline (started inside a line)
        # Rotated past us, read whole: (fd, id, whether it is the file now at the path).
        self._queue: list[tuple[int, tuple[int, int], bool]] | None = None
        self._monotonic = monotonic
        self._lingering: list[_Lingering] = []  # rotated away, oldest first; still read
        self._max_decompressed = max_decompressed or MAX_DECOMPRESSED
        self._read_mtime = 0  # the file's mtime just before the last read (copies are newer)
        self._done: deque[bytes] = deque(maxlen=4 * MAX_LINGERING)  # heads of files let go
        # Restarted at 0 after a copytruncate and nothing read since: the file's mtime then, the
        # first bytes of the copies read, the siblings seen (it may be copied again meanwhile).
        self._emptied: tuple[int, list[bytes], set[tuple[int, int]]] | None = None
        self._warnings: list[str] = []

    @property
    def offset(self) -> int:
        return self._offset

    def close(self) -> None:
        self._close_current()
        for fd, _, _ in self._queue or ():
            os.close(fd)
        self._queue = None
        for old in self._lingering:
            old.tail.close()
        self._lingering.clear()

    def _close_current(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self._id = _NO_FILE

    def read(self, limit: int) -> TailRead:
        """Read up to ``limit`` bytes per file; raises OSError when a file cannot be read."""
        result = self._read(limit)
        if self._warnings:
            result = dataclasses.replace(result, warnings=tuple(self._warnings))
            self._warnings.clear()
        return result

    def _read(self, limit: int) -> TailRead:
        """Read up to ``limit`` bytes per file.

        Files rotated away are read to their end first; then the current file; then the rotated
        ones again, to their end, their lines put first: a writer appends to the old file until
        it reopens the path, so what it wrote there before the lines just read from the new file
        is in the old one by now (order kept)."""
        lines: list[str] = []
        for old in self._lingering:
            if self._read_lingering(old, limit, lines) == limit:
                return TailRead(lines=lines, more=True)
        lingering = list(self._lingering)
        result = self._read_current(limit)
        if not lingering:
            return result if not lines else _prepend(lines, result)
        now = self._monotonic()
        excess = len(self._lingering) - MAX_LINGERING
        for index, old in enumerate(lingering):
            while self._read_lingering(old, limit, lines) == limit:
                pass  # only what was appended while the current file was read
            if index < excess or now - old.active >= ROTATE_WAIT:
                old.tail._flush(lines)
                old.tail.close()
                self._lingering.remove(old)
        return _prepend(lines, result)

    def _read_lingering(self, old: _Lingering, limit: int, lines: list[str]) -> int:
        assert old.tail._fd is not None
        got = old.tail._read_into(old.tail._fd, limit, lines)
        if got:
            old.active = self._monotonic()
        return got

    def _read_current(self, limit: int) -> TailRead:
        lines: list[str] = []
        notes: list[str] = []
        if self._fd is None and not self._open(notes):
            return TailRead(missing=True)
        assert self._fd is not None
        fd = self._fd
        if self._queue is None and self._rewritten(fd):
            read = self._recover_from_copy(fd, limit, lines)
            self._flush(lines)  # a cut last line: its rest went with the truncate
            self._offset, self._fingerprint, self._head = 0, b"", b""
            if read is not None:  # a copy was found: later copies come the same way
                seen = {sibling.id for sibling in self._siblings()}
                self._emptied = (os.fstat(fd).st_mtime_ns, read, seen)
            notes.append("truncated")
        elif self._queue is None and self._offset == 0 and self._emptied is not None:
            self._copies_while_empty(fd, limit, lines)
        self._read_mtime = os.fstat(fd).st_mtime_ns
        got = self._read_into(fd, limit, lines)
        if self._offset:
            self._emptied = None
        if got == limit:
            return TailRead(lines=lines, more=True, notes=tuple(notes))
        if self._queue is not None:  # a file rotated past us, read whole: on to the next
            self._linger()
            if self._queue:
                fd, ident, at_path = self._queue.pop(0)
                self._adopt(fd, ident)
                if at_path:
                    self._queue = None
            else:
                self._queue = None
            return TailRead(lines=lines, more=True, notes=tuple(notes))
        # At the end of the file: has the path moved on to another file, or gone?
        current = _stat_id(self.path)
        if current == self._id:
            return TailRead(lines=lines, notes=tuple(notes))
        gone = os.fstat(fd).st_nlink == 0
        if current is None and not gone:
            # Renamed and not replaced yet: keep following the old file (writers may still use it).
            return TailRead(lines=lines, missing=True, notes=tuple(notes))
        # Drain what was appended between our last read and the switch, then let go of it.
        got += self._read_into(fd, limit - got, lines)
        if got == limit:
            return TailRead(lines=lines, more=True, notes=tuple(notes))
        old_id, old_mtime, old_head = self._id, os.fstat(fd).st_mtime_ns, self._head
        notes.append("deleted" if gone else "rotated")
        if current is None:  # deleted and not replaced: let go of the disk space
            self._flush(lines)
            self._close_current()
            self._done.append(old_head)
            return TailRead(lines=lines, missing=True, notes=tuple(notes))
        # Writers append to it until they reopen the path. (Deleted but replaced: a compressing
        # rotation removed it, and may have compressed files rotated past us too.)
        self._linger()
        new = _open_path(self.path)  # now: the scan below then sees whatever moved before
        passed = self._rotated_past(old_id, old_mtime, old_head, new)
        if passed:
            notes.append(f"{len(passed)} file(s) rotated between two reads")
        queue = [(fd, ident, False) for fd, ident in passed]
        if new is not None:
            queue.append((new, _fd_id(new), True))
        if queue:
            fd, ident, at_path = queue.pop(0)
            self._adopt(fd, ident)
            self._queue = None if at_path else queue
        return TailRead(lines=lines, more=True, notes=tuple(notes))

    def _adopt(self, fd: int, ident: tuple[int, int]) -> None:
        """Read ``fd`` (a file rotated past us, or the new file at the path) from its start."""
        self._fd, self._id = fd, ident
        self._offset, self._fingerprint, self._head = 0, b"", b""

    def _linger(self) -> None:
        """Hand the current file, with its unfinished line, to the lingering ones."""
        old = Tail(self.path, from_end=False, max_line_bytes=self._max, encoding=self._encoding)
        old._fd, old._id, old._offset = self._fd, self._id, self._offset
        old._head, old._fingerprint = self._head, self._fingerprint
        self._done.append(self._head)
        old._partial, old._dropped, old._skip = self._partial, self._dropped, self._skip
        self._fd, self._id = None, _NO_FILE
        self._partial, self._dropped, self._skip = bytearray(), 0, False
        self._lingering.append(_Lingering(old, self._monotonic()))

    def _siblings(self) -> list[_Sibling]:
        """Rotated copies of the path beside it (app.log.1, app.log-DATE, app.log.1.gz)."""
        directory, base = os.path.split(self.path)
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
                found.append(_Sibling(entry.path, info, suffix if suffix in _OPENERS else ""))
        return found

    def _rotated_past(
        self, old: tuple[int, int], old_mtime: int, old_head: bytes, new: int | None
    ) -> list[tuple[int, tuple[int, int]]]:
        """Open files rotated between the old file and the one now at the path (``new``), oldest
        first. Compressed ones are read from their decompressed copy, unless they are a copy of a
        file we read (same first bytes as it), or of a plain sibling found beside them. The
        directory is scanned again when a sibling moved between the scan and its opening."""
        for _ in range(_RESCANS - 1):
            opened, moved = self._open_between(old, old_mtime, old_head, new)
            if not moved:
                return opened
            for fd, _ident in opened:
                os.close(fd)
        return self._open_between(old, old_mtime, old_head, new)[0]  # still moving: what we saw

    def _open_between(
        self, old: tuple[int, int], old_mtime: int, old_head: bytes, new: int | None
    ) -> tuple[list[tuple[int, tuple[int, int]]], bool]:
        skip = {old, *(lingering.tail._id for lingering in self._lingering)}
        if new is not None:
            skip.add(_fd_id(new))
        siblings = self._siblings()
        between = _oldest_first(
            [
                sibling
                for sibling in siblings
                if sibling.id not in skip and sibling.info.st_mtime_ns >= old_mtime
            ],
            len(os.path.basename(self.path)),
        )
        found: list[tuple[int, tuple[int, int]]] = []
        known = [old_head, *self._done, *(lingering.tail._head for lingering in self._lingering)]
        heads = [head for head in known if head]
        if any(sibling.compressed for sibling in between):
            heads += _plain_heads(siblings)
        moved = False
        for sibling in between:
            if sibling.compressed:
                fd = self._unpack(sibling, 0, lambda first: not _starts(first, heads))
                if fd is None:
                    continue
            else:
                try:
                    fd = _open_same(sibling)
                except FileNotFoundError:  # compressed and removed since the scan, or shifted
                    moved = True
                    continue
                except OSError:
                    continue
                if fd is None:  # another file took its name since the scan
                    moved = True
                    continue
            found.append((fd, _fd_id(fd)))
        return found, moved

    def _unpack(
        self, sibling: _Sibling, keep_from: int, accept: Callable[[bytes], bool]
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
                        if len(first) < _FINGERPRINT:
                            first = (first + chunk)[:_FINGERPRINT]
                            if len(first) == _FINGERPRINT and not accept(first):
                                return None
                        if position + len(chunk) > self._max_decompressed:
                            chunk = chunk[: self._max_decompressed - position]
                            problem = f"stopped after {self._max_decompressed} decompressed bytes"
                        end = position + len(chunk)
                        if position < _FINGERPRINT:
                            os.pwrite(fd, chunk[: _FINGERPRINT - position], position)
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
                if len(first) < _FINGERPRINT:
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

    def _recover_from_copy(self, live: int, limit: int, lines: list[str]) -> list[bytes] | None:
        """Before restarting a truncated file: the bytes written after our last read, from the
        copy copytruncate made (it starts with our head and holds our fingerprint just before
        our offset, or ends before it: we read all it holds), then whole any copies made after
        it (several truncates between reads) but one of what the file holds now (copying), or
        of ours. A compressed copy counts when it was written after our last read. Returns the
        first bytes of our file and of the copies read; None when no copy was found."""
        size, head = len(self._fingerprint), self._head
        if not size:
            return None
        ours: int | None = None  # the mtime of our copy
        siblings = self._siblings()
        compressed = any(sibling.compressed for sibling in siblings)
        plain = _plain_heads(siblings) if compressed else []  # a .gz starting alike is its copy
        newest = sorted(siblings, key=lambda sibling: sibling.info.st_mtime_ns, reverse=True)
        for sibling in newest:
            if sibling.compressed:
                if sibling.info.st_mtime_ns < self._read_mtime:
                    continue
                keep = self._offset - size
                fd = self._unpack(
                    sibling,
                    keep,
                    lambda first: first.startswith(head) and not _starts(first, plain),
                )
            else:
                fd = _open_sibling(sibling.path)
            if fd is None:
                continue
            try:
                if os.pread(fd, len(head), 0) != head:
                    continue
                if os.fstat(fd).st_size < self._offset:
                    ours = sibling.info.st_mtime_ns  # we read more than it holds (written before)
                    break
                if os.pread(fd, size, self._offset - size) == self._fingerprint:
                    self._read_whole(fd, limit, lines)
                    ours = sibling.info.st_mtime_ns
                    break
            finally:
                os.close(fd)
        if ours is None:
            return None
        now = os.pread(live, _FINGERPRINT, 0)
        done = [h for h in (now, head) if h]  # copies of these are not read (again)
        later = [sibling for sibling in siblings if sibling.info.st_mtime_ns > ours]
        return [head, *self._read_copies(later, done, plain, limit, lines)]

    def _copies_while_empty(self, live: int, limit: int, lines: list[str]) -> None:
        """At offset 0 since a copytruncate, nothing read: when the file changed since, read
        whole the copies made since (new siblings: it was written, copied and truncated again
        between two reads, and no fingerprint tells), oldest first, but one of what the file
        holds now."""
        assert self._emptied is not None
        since, done, seen = self._emptied
        changed = os.fstat(live).st_mtime_ns
        if changed == since:
            return
        siblings = self._siblings()
        plain = _plain_heads(siblings) if any(s.compressed for s in siblings) else []
        new = [s for s in siblings if s.id not in seen and s.info.st_mtime_ns >= since]
        now = os.pread(live, _FINGERPRINT, 0)
        read = self._read_copies(new, [*done, now] if now else done, plain, limit, lines)
        self._emptied = (changed, done + read, seen | {sibling.id for sibling in siblings})

    def _read_copies(
        self,
        copies: list[_Sibling],
        done: list[bytes],
        plain: list[bytes],
        limit: int,
        lines: list[str],
    ) -> list[bytes]:
        """Read whole, oldest first, the ``copies`` that start with none of ``done`` (nor, when
        compressed, like a plain sibling in ``plain``); the first bytes of those read."""
        done, read = list(done), []
        for sibling in _oldest_first(copies, len(os.path.basename(self.path))):
            if sibling.compressed:
                fd = self._unpack(sibling, 0, lambda first: not _starts(first, done + plain))
            else:
                fd = _open_sibling(sibling.path)
            if fd is None:
                continue
            try:
                first = os.pread(fd, _FINGERPRINT, 0)
                if first and not _starts(first, done):
                    self._offset = 0
                    self._read_whole(fd, limit, lines)
                    done.append(first)
                    read.append(first)
            finally:
                os.close(fd)
        self._offset, self._fingerprint, self._head = 0, b"", b""
        return read

    def _read_whole(self, fd: int, limit: int, lines: list[str]) -> None:
        """Read ``fd`` from the offset to its end (a copy: it does not grow)."""
        while self._read_into(fd, limit, lines) == limit:
            pass

    def _open(self, notes: list[str]) -> bool:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            self._from_end = False
            return False
        from_end, self._from_end = self._from_end, False
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise OSError(f"{self.path} is not a regular file")
        self._fd, self._id = fd, (info.st_dev, info.st_ino)
        self._offset, self._fingerprint, self._head = 0, b"", b""
        if from_end:
            self._start_at_end(fd, info.st_size)
        notes.append("opened")
        return True

    def _start_at_end(self, fd: int, size: int) -> None:
        """Start after the last newline, so a line being written now arrives whole."""
        back = min(size, self._max)
        block = os.pread(fd, back, size - back)
        newline = block.rfind(b"\n")
        if newline >= 0:
            self._offset = size - back + newline + 1
        else:  # deep inside a long line (or no newline at all): skip to its end
            self._offset, self._skip = size, size > 0
        keep = min(self._offset, _FINGERPRINT)
        self._fingerprint = os.pread(fd, keep, self._offset - keep)
        self._head = os.pread(fd, keep, 0)

    def _rewritten(self, fd: int) -> bool:
        """True when the file was truncated (and maybe written again) since the last read."""
        if self._offset == 0:
            return False
        if os.fstat(fd).st_size < self._offset:
            return True
        size, head = len(self._fingerprint), self._head
        if head and os.pread(fd, len(head), 0) != head:  # lines of one length: tails look alike
            return True
        return bool(size) and os.pread(fd, size, self._offset - size) != self._fingerprint

    def _read_into(self, fd: int, limit: int, lines: list[str]) -> int:
        """Read up to ``limit`` bytes from the offset, appending complete lines; bytes read."""
        total = 0
        while total < limit:
            data = os.pread(fd, limit - total, self._offset)
            if not data:
                break
            if self._offset == len(self._head) < _FINGERPRINT:
                self._head = (self._head + data)[:_FINGERPRINT]
            total += len(data)
            self._offset += len(data)
            if len(data) >= _FINGERPRINT:
                self._fingerprint = data[-_FINGERPRINT:]
            else:
                self._fingerprint = (self._fingerprint + data)[-_FINGERPRINT:]
            self._feed(data, lines)
        return total

    def _feed(self, data: bytes, out: list[str]) -> None:
        parts = data.split(b"\n")
        rest = parts.pop()
        start = 0
        if parts and (self._skip or self._partial or self._dropped):
            start = 1
            if self._skip:
                self._skip = False
            else:
                self._keep(parts[0])
                self._flush(out)
        limit = self._max
        for index in range(start, len(parts)):
            part = parts[index]
            if len(part) > limit:
                out.append(self._decode(part[:limit], len(part) - limit))
            else:
                out.append(self._decode(part))
        if rest and not self._skip:
            self._keep(rest)

    def _keep(self, data: bytes) -> None:
        room = self._max - len(self._partial)
        if len(data) > room:
            self._partial += data[:room]
            self._dropped += len(data) - room
        else:
            self._partial += data

    def _flush(self, out: list[str]) -> None:
        """Deliver the buffered partial line (if any) as a line."""
        if self._partial or self._dropped:
            out.append(self._decode(bytes(self._partial), self._dropped))
        self._partial.clear()
        self._dropped = 0
        self._skip = False

    def _decode(self, raw: bytes, dropped: int = 0) -> str:
        if raw.endswith(b"\r") and not dropped:
            raw = raw[:-1]
        text = raw.decode(self._encoding, "replace")
        if "\x00" in text:
            text = text.replace("\x00", "\ufffd")
        if dropped:
            text += f" …[truncated {dropped} bytes]"
        return text


@dataclass(frozen=True, slots=True)
class _Sibling:
    """A rotated copy of the path, as the directory scan saw it."""

    path: str
    info: os.stat_result
    compressed: str  # its suffix (".gz") when it is compressed, else ""

    @property
    def id(self) -> tuple[int, int]:
        return self.info.st_dev, self.info.st_ino


@dataclass(slots=True)
class _Lingering:
    """A file rotated away, still read until it has been idle for ROTATE_WAIT."""

    tail: Tail
    active: float  # monotonic time it last grew


def _prepend(lines: list[str], result: TailRead) -> TailRead:
    return TailRead(
        lines=lines + result.lines, more=result.more, missing=result.missing, notes=result.notes
    )


def _open_sibling(path: str) -> int | None:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None


def _open_path(path: str) -> int | None:
    """The regular file at ``path`` (symlinks followed), or None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    if stat.S_ISREG(os.fstat(fd).st_mode):
        return fd
    os.close(fd)
    return None


def _open_same(sibling: _Sibling) -> int | None:
    """Open ``sibling`` if its name still holds the file the scan saw (None if another one)."""
    fd = os.open(sibling.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    if _fd_id(fd) == sibling.id:
        return fd
    os.close(fd)
    return None


def _no_follow(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_CLOEXEC | os.O_NOFOLLOW)


def _fd_id(fd: int) -> tuple[int, int]:
    info = os.fstat(fd)
    return info.st_dev, info.st_ino


def _plain_heads(siblings: list[_Sibling]) -> list[bytes]:
    """The first bytes of each plain sibling (a compressed one starting alike is its copy)."""
    heads = []
    for sibling in siblings:
        if not sibling.compressed and (fd := _open_sibling(sibling.path)) is not None:
            try:
                if head := os.pread(fd, _FINGERPRINT, 0):
                    heads.append(head)
            finally:
                os.close(fd)
    return heads


def _oldest_first(siblings: list[_Sibling], base: int) -> list[_Sibling]:
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


def _starts(data: bytes, heads: list[bytes]) -> bool:
    """True when ``data`` (a file's first bytes) begins with one of ``heads`` (or is a prefix
    of one: a file shorter than the head of the file it was copied from)."""
    return any(data.startswith(head) or (data and head.startswith(data)) for head in heads)


def _stat_id(path: str) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return info.st_dev, info.st_ino
