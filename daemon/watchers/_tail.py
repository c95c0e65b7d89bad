"""Tailing one log file by path: rotation by rename and by copytruncate, partial and huge lines.

`Tail` is synchronous and blocking (the watcher calls it from a worker thread, one call at a
time). Each `Tail.read` reads at most ``limit`` bytes, so a burst is handed over in bounded chunks.
Finding and opening the rotated siblings is `daemon.watchers._rotation`'s job; decoding here.

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

import dataclasses
import os
import stat
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from daemon.watchers._rotation import (
    FINGERPRINT,
    Emptied,
    FileId,
    Rotation,
    Sibling,
    fd_id,
    find_siblings,
)

_NO_FILE = (-1, -1)
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
        self._head = b""  # the file's first bytes (up to FINGERPRINT): which copy is ours
        self._partial = bytearray()  # the start of a line whose newline has not arrived
        self._dropped = 0  # bytes of that line beyond max_line_bytes, thrown away
        self._skip = False  # discard up to the next newline (started inside a line)
        # Rotated past us, read whole: (fd, id, whether it is the file now at the path).
        self._queue: list[tuple[int, tuple[int, int], bool]] | None = None
        self._monotonic = monotonic
        self._lingering: list[_Lingering] = []  # rotated away, oldest first; still read
        self._read_mtime = 0  # the file's mtime just before the last read (copies are newer)
        self._done: deque[bytes] = deque(maxlen=4 * MAX_LINGERING)  # heads of files let go
        self._emptied: Emptied | None = None  # restarted at 0 after a copytruncate, nothing read
        self._warnings: list[str] = []
        self._rotation = Rotation(
            path,
            max_decompressed=max_decompressed or MAX_DECOMPRESSED,
            warnings=self._warnings,
        )

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
            read = self._rotation.recover_from_copy(
                self._siblings,
                fd,
                head=self._head,
                fingerprint=self._fingerprint,
                offset=self._offset,
                read_mtime=self._read_mtime,
                read_rest=lambda copy: self._read_whole(copy, limit, lines),
                read_copy=lambda copy: self._read_copy(copy, limit, lines),
            )
            self._flush(lines)  # a cut last line: its rest went with the truncate
            self._offset, self._fingerprint, self._head = 0, b"", b""
            if read is not None:  # a copy was found: later copies come the same way
                seen = {sibling.id for sibling in self._siblings()}
                self._emptied = (os.fstat(fd).st_mtime_ns, read, seen)
            notes.append("truncated")
        elif self._queue is None and self._offset == 0 and self._emptied is not None:
            self._emptied = self._rotation.copies_while_empty(
                self._siblings, fd, self._emptied, lambda copy: self._read_copy(copy, limit, lines)
            )
            self._offset, self._fingerprint, self._head = 0, b"", b""
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
        passed = self._rotation.rotated_past(
            self._siblings,
            {old_id, *(lingering.tail._id for lingering in self._lingering)},
            old_mtime,
            [old_head, *self._done, *(lingering.tail._head for lingering in self._lingering)],
            new,
        )
        if passed:
            notes.append(f"{len(passed)} file(s) rotated between two reads")
        queue = [(fd, ident, False) for fd, ident in passed]
        if new is not None:
            queue.append((new, fd_id(new), True))
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

    def _siblings(self) -> list[Sibling]:
        """Rotated copies of the path beside it (app.log.1, app.log-DATE, app.log.1.gz)."""
        return find_siblings(self.path)

    def _read_copy(self, fd: int, limit: int, lines: list[str]) -> None:
        """Read ``fd`` (a copy made by copytruncate) whole, from its start."""
        self._offset = 0
        self._read_whole(fd, limit, lines)

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
        keep = min(self._offset, FINGERPRINT)
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
            if self._offset == len(self._head) < FINGERPRINT:
                self._head = (self._head + data)[:FINGERPRINT]
            total += len(data)
            self._offset += len(data)
            if len(data) >= FINGERPRINT:
                self._fingerprint = data[-FINGERPRINT:]
            else:
                self._fingerprint = (self._fingerprint + data)[-FINGERPRINT:]
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


@dataclass(slots=True)
class _Lingering:
    """A file rotated away, still read until it has been idle for ROTATE_WAIT."""

    tail: Tail
    active: float  # monotonic time it last grew


def _prepend(lines: list[str], result: TailRead) -> TailRead:
    return TailRead(
        lines=lines + result.lines, more=result.more, missing=result.missing, notes=result.notes
    )


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


def _stat_id(path: str) -> FileId | None:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return info.st_dev, info.st_ino
