"""Watches files and directories: one ``file_changed`` Observation per change.

The text is the kind of change: ``created``, ``modified``, ``deleted``, ``permissions`` (mode or
owner changed; a bare ``touch`` is not reported) or ``checksum`` (the sha256 of the content
changed; opt-in, files up to ``checksum_max_mb``). Labels: ``path`` (the file) and ``watch`` (the
watcher's name). Modifications of one file within ``COALESCE_SECONDS`` make one observation.

A file is watched through its directory, so deleting and recreating it is seen. A path missing at
start, or whose directory is deleted, is a ``watcher_error`` naming it; it is looked for again
every ``recheck_seconds`` (the polling base's interval) and reported ``created`` when it is back.
One watchdog Observer per watcher; its threads end when `FileWatcher.run` is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator

from daemon.core.alerts import Observation
from daemon.core.clock import Clock
from daemon.core.section import Section, check_word
from daemon.watchers._fileinfo import Inspection, Mode, below, inspect, kind_of, matches
from daemon.watchers._inotify import Inotify, InstanceLimitError, describe, dir_id
from daemon.watchers.base import Emit, ErrorReporter
from daemon.watchers.polling import PollingWatcher, Sleep

if TYPE_CHECKING:
    from watchdog.events import FileSystemEvent
    from watchdog.observers.api import ObservedWatch

COALESCE_SECONDS = 0.2
FileEvent = Literal["created", "modified", "deleted", "permissions"]
ALL_EVENTS: tuple[FileEvent, ...] = ("created", "modified", "deleted", "permissions")
_Key = tuple[str, bool]  # (directory, recursive) of one inotify watch


class FileWatchSettings(Section):
    """Files or directories whose changes are reported as file_changed observations."""

    name: str  # the "watch" label on every observation; unique among file watchers
    paths: list[str] = Field(min_length=1)  # absolute paths of files or directories
    recursive: bool = False  # directories: their subdirectories too
    patterns: list[str] = Field(default_factory=lambda: ["*"], min_length=1)  # see below
    events: list[FileEvent] = Field(default_factory=lambda: list(ALL_EVENTS), min_length=1)
    checksum: bool = False  # also report "checksum" when a file's sha256 changes
    checksum_max_mb: int = Field(default=64, ge=1, le=16384)  # larger files are not hashed
    recheck_seconds: float = Field(default=5.0, ge=0.05, le=3600)  # look for missing paths

    _one_word = field_validator("name")(lambda cls, value: check_word(value))

    @field_validator("paths")
    @classmethod
    def _absolute(cls, value: list[str]) -> list[str]:
        relative = [path for path in value if not os.path.isabs(path)]
        if relative:
            raise ValueError(f"paths must be absolute: {', '.join(map(repr, relative))}")
        return list(dict.fromkeys(os.path.normpath(path) for path in value))

    @field_validator("patterns")
    @classmethod
    def _not_blank(cls, value: list[str]) -> list[str]:
        if any(not pattern.strip() for pattern in value):
            raise ValueError('patterns must not be blank; use "*" for every file')
        return value


@dataclass(slots=True)
class _Target:
    path: str
    is_dir: bool = False
    key: _Key | None = None  # the watch covering it; None while not watched
    lost: bool = False  # reported missing: report "created" when it is back


class FileWatcher(PollingWatcher):
    """Reports changes under ``settings.paths``; see the module docstring. Each poll (every
    ``recheck_seconds``, or at once when a watched directory goes) rewatches what is missing."""

    def __init__(
        self, settings: FileWatchSettings, clock: Clock, *, sleep: Sleep | None = None
    ) -> None:
        super().__init__(settings.recheck_seconds, clock, sleep)
        self.settings = settings
        self.name = self.source = f"file:{settings.name}"
        self.ready = asyncio.Event()  # set once every existing path is watched
        self._session: _Session | None = None  # while running
        self._inspector: asyncio.Task[None] | None = None

    async def open(self, emit: Emit, errors: ErrorReporter) -> None:
        session = _Session(self.settings, self.source, self._clock, emit, errors, self.wake)
        self._session = session
        self._inspector = asyncio.create_task(session.inspect_forever())

    async def poll(self, emit: Emit, errors: ErrorReporter) -> None:
        assert self._session is not None, "open() starts the session"
        await self._session.check()
        self.ready.set()

    async def close(self) -> None:
        session, inspector = self._session, self._inspector
        self._session = self._inspector = None
        if session is None:
            return
        session.cancel_timers()
        if inspector is not None:
            inspector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await inspector
        await asyncio.shield(asyncio.to_thread(session.stop))


class _Session:
    """The state of one run: watches, pending coalesced changes, known modes and digests."""

    def __init__(
        self,
        settings: FileWatchSettings,
        name: str,
        clock: Clock,
        emit: Emit,
        errors: ErrorReporter,
        recheck: Callable[[], None],
    ) -> None:
        self._settings = settings
        self._name = name
        self._clock = clock
        self._emit = emit
        self._errors = errors
        self._targets = [_Target(path) for path in settings.paths]
        self._events = frozenset(settings.events)
        self._inotify: Inotify | None = None
        self._watches: dict[_Key, tuple[ObservedWatch, tuple[int, int] | None]] = {}
        self._recheck = recheck  # poll again now
        self._modified: dict[str, asyncio.TimerHandle] = {}
        self._hash_limit = (settings.checksum_max_mb << 20) if settings.checksum else 0
        self._modes: dict[str, Mode] = {}
        self._digests: dict[str, str] = {}
        self._to_inspect: dict[str, set[str]] = {}  # path -> "attrib" and/or "content"
        self._inspect = asyncio.Event()

    def stop(self) -> None:
        if self._inotify is not None:
            self._inotify.stop()

    def cancel_timers(self) -> None:
        for handle in self._modified.values():
            handle.cancel()
        self._modified.clear()

    async def check(self) -> None:
        """Start inotify; drop watches whose directory went; watch every target not watched."""
        if self._inotify is None:
            loop = asyncio.get_running_loop()
            inotify = Inotify(loop, self._on_events, lambda event: True, _event_types())
            try:
                await asyncio.to_thread(inotify.start)
            except OSError as exc:
                self._errors.failed(describe(exc, self._settings.paths[0]))
                return
            self._inotify = inotify
        for key, (watch, known) in list(self._watches.items()):
            current = await asyncio.to_thread(dir_id, key[0])
            if current != known or not self._inotify.alive(watch):
                await asyncio.to_thread(self._inotify.unschedule, watch)
                del self._watches[key]
                self._lose(key, gone=current is None)
        try:
            for target in self._targets:
                if target.key is None:
                    await self._arm(target, self._inotify)
        except InstanceLimitError as exc:
            await self._drop_inotify()
            self._errors.failed(describe(exc, self._settings.paths[0]))
            return
        self._errors.ok()

    async def _drop_inotify(self) -> None:
        """Stop inotify and forget every watch: the next check starts afresh."""
        inotify, self._inotify = self._inotify, None
        if inotify is not None:
            await asyncio.to_thread(inotify.stop)
        self._watches.clear()
        for target in self._targets:
            target.key = None

    def _lose(self, key: _Key, *, gone: bool) -> None:
        for target in self._targets:
            if target.key == key:
                target.key = None
                if gone:
                    target.lost = True
                    reason = f"directory {key[0]} was deleted; watched again when it is back"
                    self._errors.failed(reason, target=target.path)

    async def _arm(self, target: _Target, inotify: Inotify) -> None:
        try:
            is_dir = await asyncio.to_thread(kind_of, target.path)
        except OSError as exc:
            self._errors.failed(describe(exc, target.path), target=target.path)
            return
        if is_dir is None:
            if not target.lost:  # keep the first reason (e.g. its directory was deleted)
                target.lost = True
                reason = "does not exist; watched from when it appears"
                self._errors.failed(reason, target=target.path)
            return
        directory = target.path if is_dir else os.path.dirname(target.path)
        key = (directory, self._settings.recursive and is_dir)
        if key not in self._watches:
            known = await asyncio.to_thread(dir_id, directory)
            try:
                watch = await asyncio.to_thread(
                    inotify.schedule, directory, recursive=key[1], tag=key
                )
            except InstanceLimitError:
                raise  # the whole watcher is without inotify, not this target
            except OSError as exc:
                self._errors.failed(describe(exc, directory), target=target.path)
                return
            self._watches[key] = (watch, known)
        target.key, target.is_dir = key, is_dir
        baseline = await asyncio.to_thread(self._baseline, target)
        for path, seen in baseline.items():
            self._modes[path] = seen.mode
            if seen.digest is not None:
                self._digests[path] = seen.digest
        self._errors.ok(target=target.path)
        if target.lost:
            target.lost = False
            self._observe("created", target.path)

    def _on_events(self, batch: list[tuple[Hashable, FileSystemEvent]]) -> None:
        from watchdog.events import (
            DirAttribEvent,
            DirCreatedEvent,
            DirDeletedEvent,
            DirMovedEvent,
            FileAttribEvent,
            FileCreatedEvent,
            FileDeletedEvent,
            FileModifiedEvent,
            FileMovedEvent,
        )

        for tag, event in batch:
            src, dest = os.fsdecode(event.src_path), os.fsdecode(event.dest_path)
            if isinstance(event, FileMovedEvent | DirMovedEvent):
                self._change(tag, src, "deleted")
                self._change(tag, dest, "created")
            elif isinstance(event, FileCreatedEvent | DirCreatedEvent):
                self._change(tag, src, "created")
            elif isinstance(event, FileDeletedEvent | DirDeletedEvent):
                self._change(tag, src, "deleted")
                if any(key[0] == src for key in self._watches):
                    self._recheck()  # a watched directory went: report it now
            elif isinstance(event, FileModifiedEvent):
                self._change(tag, src, "modified")
            elif isinstance(event, FileAttribEvent | DirAttribEvent):
                self._change(tag, src, "attrib")

    def _change(self, tag: Hashable, path: str, kind: str) -> None:
        if self._owner(path) != tag or not self._covered(path):
            return  # another watch reports it (overlapping watches), or not ours
        if kind == "modified":
            if path not in self._modified:
                loop = asyncio.get_running_loop()
                self._modified[path] = loop.call_later(COALESCE_SECONDS, self._modified_done, path)
            return
        pending = self._modified.pop(path, None)
        if pending is not None:  # keep the order: the modification happened first
            pending.cancel()
            self._modified_done(path, popped=True)
        if kind == "attrib":
            self._queue_inspection(path, "attrib")
            return
        self._observe(kind, path)
        if kind == "created":  # new, or replaced by a rename: compare with what was there
            self._queue_inspection(path, "attrib")
            self._queue_inspection(path, "content")
        else:
            self._modes.pop(path, None)
            self._digests.pop(path, None)

    def _modified_done(self, path: str, *, popped: bool = False) -> None:
        if not popped:
            self._modified.pop(path, None)
        self._observe("modified", path)
        if self._settings.checksum:
            self._queue_inspection(path, "content")

    def _owner(self, path: str) -> _Key | None:
        """The first watch covering ``path``: only its copy of an event is used."""
        for key in self._watches:
            directory, recursive = key
            parent = os.path.dirname(path)
            if path == directory or parent == directory:
                return key
            if recursive and path.startswith(os.path.join(directory, "")):
                return key
        return None

    def _covered(self, path: str) -> bool:
        """Is ``path`` a target, or a file in a target directory matching the patterns?"""
        for target in self._targets:
            if target.key is None:
                continue
            if path == target.path:
                return True
            if not target.is_dir or not path.startswith(os.path.join(target.path, "")):
                continue
            relative = path[len(os.path.join(target.path, "")) :]
            if "/" in relative and not self._settings.recursive:
                continue
            if matches(relative, self._settings.patterns):
                return True
        return False

    def _observe(self, kind: str, path: str) -> None:
        if kind in self._events or kind == "checksum":
            labels = {"path": path, "watch": self._settings.name}
            self._emit(
                Observation(
                    source=self._name,
                    metric="file_changed",
                    at=self._clock.now(),
                    text=kind,
                    labels=labels,
                )
            )

    def _queue_inspection(self, path: str, why: str) -> None:
        self._to_inspect.setdefault(path, set()).add(why)
        self._inspect.set()

    async def inspect_forever(self) -> None:
        """Stat (and hash) changed files in a worker thread, one at a time, in order."""
        while True:
            await self._inspect.wait()
            self._inspect.clear()
            while self._to_inspect:
                path = next(iter(self._to_inspect))
                wants = self._to_inspect.pop(path)
                seen = await asyncio.to_thread(inspect, path, self._hash_limit)
                if seen is None:
                    self._modes.pop(path, None)
                    self._digests.pop(path, None)
                    continue
                old_mode = self._modes.get(path)
                self._modes[path] = seen.mode
                if "attrib" in wants and old_mode is not None and old_mode != seen.mode:
                    self._observe("permissions", path)
                if seen.digest is not None:
                    old_digest = self._digests.get(path)
                    self._digests[path] = seen.digest
                    if "content" in wants and old_digest not in (None, seen.digest):
                        self._observe("checksum", path)

    def _baseline(self, target: _Target) -> dict[str, Inspection]:
        """Modes (and digests) of the target and the matching files under it (blocking)."""
        paths = [target.path]
        if target.is_dir:
            paths += below(target.path, self._settings.patterns, self._settings.recursive)
        found = {path: inspect(path, self._hash_limit) for path in paths}
        return {path: seen for path, seen in found.items() if seen is not None}


def _event_types() -> list[type[FileSystemEvent]]:
    from watchdog.events import (
        DirAttribEvent,
        DirCreatedEvent,
        DirDeletedEvent,
        DirMovedEvent,
        FileAttribEvent,
        FileCreatedEvent,
        FileDeletedEvent,
        FileModifiedEvent,
        FileMovedEvent,
    )

    return [
        FileCreatedEvent,
        DirCreatedEvent,
        FileDeletedEvent,
        DirDeletedEvent,
        FileModifiedEvent,  # also puts IN_ATTRIB in the inotify mask
        FileMovedEvent,
        DirMovedEvent,
        FileAttribEvent,
        DirAttribEvent,
    ]
