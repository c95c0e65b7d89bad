"""Tails a log file and emits one ``log_line`` Observation per complete line.

inotify (watchdog, on the file's directory) wakes the reader as soon as the file changes; a
fallback poll every ``poll_seconds`` catches what inotify misses (network filesystems, events
lost to a full queue, a copytruncate followed by writes past the old offset). Reading runs in a
worker thread, at most ``READ_CHUNK`` bytes per turn of the loop. Rotation, truncation, partial
and oversized lines: see `daemon.watchers._tail`.

Offsets are not persisted across restarts: a new watcher starts at the end of the file
(``from_end``), so a restart neither replays old lines nor delivers the lines written while the
daemon was down.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import os
import threading
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING

from pydantic import Field, field_validator

from daemon.core.alerts import Observation
from daemon.core.clock import Clock
from daemon.core.section import Section, check_word
from daemon.watchers._inotify import Inotify, describe, dir_id, limit_message
from daemon.watchers._tail import Tail, TailRead
from daemon.watchers.base import Emit, ErrorReporter
from daemon.watchers.polling import PollingWatcher, Sleep

if TYPE_CHECKING:
    from watchdog.events import FileSystemEvent
    from watchdog.observers.api import ObservedWatch

log = logging.getLogger(__name__)

READ_CHUNK = 1 << 18  # bytes read per worker-thread call; the loop runs between chunks
EMIT_SLICE = 256  # lines judged by the rules per turn of the loop (a burst never stalls it)


class LogWatchSettings(Section):
    """A log file tailed line by line (one log_line observation per line)."""

    name: str  # the "log" label on every line; unique among log watchers
    path: str  # absolute path of the file; rotation by rename or copytruncate is followed
    from_end: bool = True  # start at the end of the file (no replay of old lines)
    poll_seconds: float = Field(default=1.0, ge=0.01, le=300)  # fallback poll interval
    max_line_bytes: int = Field(default=65536, ge=256, le=16 << 20)  # longer lines are cut
    encoding: str = "utf-8"  # bytes that do not decode become U+FFFD
    inotify: bool = True  # false: poll only (network filesystems never send inotify events)

    _one_word = field_validator("name")(lambda cls, value: check_word(value))

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not os.path.isabs(value):
            raise ValueError(f"must be an absolute path (got {value!r})")
        return os.path.normpath(value)

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown encoding {value!r}; e.g. utf-8, latin-1") from None
        return value


class LogFileWatcher(PollingWatcher):
    """Follows ``settings.path``; emits ``log_line`` with labels ``path`` and ``log``. Each poll
    reads to the end of the file; inotify wakes it early, ``poll_seconds`` is the fallback."""

    def __init__(
        self, settings: LogWatchSettings, clock: Clock, *, sleep: Sleep | None = None
    ) -> None:
        super().__init__(settings.poll_seconds, clock, sleep)
        self.settings = settings
        self.name = self.source = f"log:{settings.name}"
        self.ready = asyncio.Event()  # set once the file was opened (or found missing) and watched
        self._session: _Session | None = None  # while running

    async def open(self, emit: Emit, errors: ErrorReporter) -> None:
        self._session = _Session(self.settings, self.source, self._clock, emit, errors, self.wake)

    async def poll(self, emit: Emit, errors: ErrorReporter) -> None:
        assert self._session is not None, "open() starts the session"
        await self._session.poll()
        self.ready.set()

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await asyncio.shield(asyncio.to_thread(session.shutdown))


class _Session:
    """The state of one run: the open file, the inotify watch, the error state."""

    def __init__(
        self,
        settings: LogWatchSettings,
        name: str,
        clock: Clock,
        emit: Emit,
        errors: ErrorReporter,
        wake: Callable[[], None],
    ) -> None:
        self._settings = settings
        self._name = name
        self._path = settings.path
        self._clock = clock
        self._emit = emit
        self._errors = errors
        self._tail = Tail(
            settings.path,
            from_end=settings.from_end,
            max_line_bytes=settings.max_line_bytes,
            encoding=settings.encoding,
            monotonic=clock.monotonic,
        )
        self._lock = threading.Lock()  # one Tail call at a time: a read, or the final close
        self._wake = wake  # poll again now
        self._next_check = 0.0  # loop time of the next inotify watch check
        self._inotify: Inotify | None = None
        self._watch: ObservedWatch | None = None
        self._watch_id: tuple[int, int] | None = None
        self._seen = False  # the file was open at least once
        self._missing_since: float | None = None

    async def poll(self) -> None:
        """Check the inotify watch (at most once a second), then read to the end."""
        loop = asyncio.get_running_loop()
        if self._settings.inotify and loop.time() >= self._next_check:
            await self._check_watch(loop)
            self._next_check = loop.time() + max(self._settings.poll_seconds, 1.0)
        await self._drain(loop)

    def shutdown(self) -> None:
        """Stop watchdog's threads and close the file (blocking)."""
        if self._inotify is not None:
            self._inotify.stop()
        with self._lock:
            self._tail.close()

    async def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        """Read until the end of the file, one bounded chunk per turn of the loop."""
        while True:
            try:
                result = await asyncio.to_thread(self._read)
            except OSError as exc:
                self._errors.failed(_read_error(exc), target=self._path)
                return
            for note in result.notes:
                log.info("%s: %s %s", self._name, note, self._path)
            for warning in result.warnings:
                log.warning("%s: %s (tailing %s)", self._name, warning, self._path)
            if result.missing:
                self._report_missing(loop)
            else:
                self._seen, self._missing_since = True, None
                self._errors.ok(target=self._path)
            if result.lines:
                at = self._clock.now()
                emit, name, path, log_name = self._emit, self._name, self._path, self._settings.name
                for count, line in enumerate(result.lines, 1):
                    labels = {"path": path, "log": log_name}  # one dict each: consumers may keep it
                    emit(
                        Observation(source=name, metric="log_line", at=at, text=line, labels=labels)
                    )
                    if count % EMIT_SLICE == 0:
                        await asyncio.sleep(0)  # a burst's rules share the loop with the rest
            if not result.more:
                return
            await asyncio.sleep(0)

    def _read(self) -> TailRead:
        with self._lock:
            return self._tail.read(READ_CHUNK)

    def _report_missing(self, loop: asyncio.AbstractEventLoop) -> None:
        """Missing at start: report at once; later, after one poll interval (rotation gap)."""
        now = loop.time()
        if self._missing_since is None:
            self._missing_since = now
        if self._seen and now - self._missing_since < self._settings.poll_seconds:
            return
        reason = "log file not found; it is tailed from its start when it appears"
        self._errors.failed(reason, target=self._path)

    async def _check_watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start inotify, and (re)watch the directory when it appeared or was replaced."""
        polling = f"; polling every {self._settings.poll_seconds:g}s meanwhile"
        if self._inotify is None:
            inotify = Inotify(loop, self._on_events, self._accept, _event_types())
            try:
                await asyncio.to_thread(inotify.start)
            except OSError as exc:
                self._errors.failed(describe(exc, self._path) + polling)
                return
            self._inotify = inotify
        directory = os.path.dirname(self._path)
        current = await asyncio.to_thread(dir_id, directory)
        watch = self._watch
        if watch is not None and (current != self._watch_id or not self._inotify.alive(watch)):
            await asyncio.to_thread(self._inotify.unschedule, watch)
            self._watch = None
        if self._watch is not None or current is None:
            return  # watching already, or no directory yet (the missing file is reported)
        try:
            self._watch = await asyncio.to_thread(
                self._inotify.schedule, directory, recursive=False
            )
        except OSError as exc:
            if limit_message(exc) is None and await asyncio.to_thread(dir_id, directory) is None:
                return  # the directory vanished meanwhile
            self._errors.failed(describe(exc, directory) + polling)
            return
        self._watch_id = current
        self._errors.ok()
        self._wake()  # the file may have changed while nothing watched it

    def _accept(self, event: FileSystemEvent) -> bool:  # on watchdog's thread
        return event.src_path == self._path or event.dest_path == self._path

    def _on_events(self, events: list[tuple[Hashable, FileSystemEvent]]) -> None:
        self._wake()


def _event_types() -> list[type[FileSystemEvent]]:
    from watchdog.events import (
        FileCreatedEvent,
        FileDeletedEvent,
        FileModifiedEvent,
        FileMovedEvent,
    )

    return [FileCreatedEvent, FileDeletedEvent, FileModifiedEvent, FileMovedEvent]


def _read_error(exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return "permission denied: give the nightshift user read access (group adm for /var/log)"
    return f"cannot read: {exc.strerror or exc}"
