"""One watchdog Observer per watcher, with its events handed to the asyncio loop in batches.

watchdog calls handlers on its own threads; `Inotify` collects the accepted events in a deque on
that thread and schedules one loop callback per batch (``loop.call_soon_threadsafe``), so a burst
of writes costs the loop one wake-up, not one per event. inotify limits (ENOSPC, EMFILE) are
turned into messages naming the sysctl to raise. The instance limit (EMFILE) surfaces as
`InstanceLimitError` whether watchdog hits it in ``Observer.start()`` (up to 7.1.0) or at the
first ``schedule()`` (7.1.1 opens one shared inotify descriptor lazily), so callers report it
the same way either way.

Known watchdog 7.1 behaviours callers live with: a file moved out of a watched directory holds
the event queue for 0.5 s (it waits for a matching move-in), and with ``recursive`` a watch limit
reached below the top directory leaves those subdirectories unwatched without an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
from collections import deque
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import TYPE_CHECKING

from daemon.core.errors import NightshiftError

if TYPE_CHECKING:
    from watchdog.events import FileSystemEvent
    from watchdog.observers.api import BaseObserver, ObservedWatch

log = logging.getLogger(__name__)

STOP_TIMEOUT = 5.0  # seconds to wait for watchdog's threads to end
_SYSCTL = Path("/proc/sys/fs/inotify")


class InstanceLimitError(NightshiftError, OSError):
    """No inotify instance could be had (EMFILE), from ``start()`` or ``schedule()`` alike."""


def _instance_limit(exc: OSError) -> OSError:
    if exc.errno == errno.EMFILE and not isinstance(exc, InstanceLimitError):
        return InstanceLimitError(errno.EMFILE, exc.strerror or "inotify instance limit reached")
    return exc


def limit_message(exc: OSError) -> str | None:
    """A clear message for an exhausted inotify limit, or None for any other error."""
    if exc.errno == errno.ENOSPC:
        key, what = "max_user_watches", "watch"
        hint = "or watch fewer directories (recursive = false)"
    elif exc.errno == errno.EMFILE:
        key, what = "max_user_instances", "instance"
        hint = "or run fewer file and log watchers"
    else:
        return None
    try:
        current = (_SYSCTL / key).read_text().strip()
    except OSError:
        current = "?"
    return (
        f"inotify {what} limit reached (fs.inotify.{key} = {current}): raise it, e.g. "
        f"`sysctl -w fs.inotify.{key}=<larger>` (persist it in /etc/sysctl.d/), {hint}"
    )


def dir_id(directory: str) -> tuple[int, int] | None:
    """(st_dev, st_ino) of ``directory``: a deleted and recreated one gets a new id."""
    try:
        info = os.stat(directory)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def describe(exc: OSError, path: str) -> str:
    """What went wrong watching or reading ``path``, in words an operator can act on."""
    message = limit_message(exc)
    if message is not None:
        return message
    if isinstance(exc, PermissionError):
        return f"permission denied on {path}: give the nightshift user read access"
    if isinstance(exc, FileNotFoundError):
        return f"{path} does not exist"
    return f"cannot watch {path}: {exc.strerror or exc}"


class Inotify:
    """A started watchdog Observer whose accepted events reach ``on_events`` on the loop.

    Each `schedule` call gets its own handler, so events carry the tag of the watch that saw
    them (two overlapping watches report one change twice). ``accept`` runs on watchdog's thread
    and must be cheap and thread-safe; ``on_events`` runs on the loop with the events in arrival
    order. All methods but the constructor block: call them with ``asyncio.to_thread``.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_events: Callable[[list[tuple[Hashable, FileSystemEvent]]], None],
        accept: Callable[[FileSystemEvent], bool],
        event_types: list[type[FileSystemEvent]],
    ) -> None:
        self._loop = loop
        self._on_events = on_events
        self._accept = accept
        self._event_types = event_types
        self._batch: deque[tuple[Hashable, FileSystemEvent]] = deque()
        self._scheduled = False
        self._observer: BaseObserver | None = None

    def start(self) -> None:
        """Create and start the Observer (raises OSError, e.g. EMFILE)."""
        from watchdog.observers import Observer

        observer = Observer()
        try:
            observer.start()
        except OSError as exc:
            _stop(observer)
            raise _instance_limit(exc) from exc
        except BaseException:
            _stop(observer)
            raise
        self._observer = observer

    def schedule(self, directory: str, *, recursive: bool, tag: Hashable = None) -> ObservedWatch:
        """Watch ``directory``; its events arrive as ``(tag, event)``.

        Raises OSError; `InstanceLimitError` when no inotify instance is left.
        """
        from watchdog.events import FileSystemEventHandler

        assert self._observer is not None, "start() first"
        queue = self._queue

        class _Handler(FileSystemEventHandler):
            def dispatch(self, event: FileSystemEvent) -> None:
                queue(tag, event)

        try:
            return self._observer.schedule(
                _Handler(), directory, recursive=recursive, event_filter=self._event_types
            )
        except OSError as exc:
            raise _instance_limit(exc) from exc

    def unschedule(self, watch: ObservedWatch) -> None:
        """Stop watching; a watch watchdog already dropped is fine."""
        if self._observer is not None:
            with contextlib.suppress(KeyError):
                self._observer.unschedule(watch)

    def alive(self, watch: ObservedWatch) -> bool:
        """False once watchdog stopped the watch (its directory was deleted)."""
        if self._observer is None:
            return False
        return any(e.watch == watch and e.is_alive() for e in list(self._observer.emitters))

    def stop(self) -> None:
        """Stop and join every thread of the Observer."""
        observer, self._observer = self._observer, None
        if observer is not None:
            _stop(observer)

    def _queue(self, tag: Hashable, event: FileSystemEvent) -> None:  # on watchdog's thread
        if not self._accept(event):
            return
        self._batch.append((tag, event))
        if not self._scheduled:
            self._scheduled = True
            with contextlib.suppress(RuntimeError):  # the loop is closed: we are shutting down
                self._loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:  # on the loop
        self._scheduled = False
        events: list[tuple[Hashable, FileSystemEvent]] = []
        while self._batch:
            events.append(self._batch.popleft())
        if events:
            self._on_events(events)


def _stop(observer: BaseObserver) -> None:
    observer.stop()
    if observer.ident is not None:
        observer.join(STOP_TIMEOUT)
        if observer.is_alive():
            log.warning("watchdog observer did not stop within %.0fs", STOP_TIMEOUT)
