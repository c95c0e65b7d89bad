"""Watchers: one module per source, each emitting Observations (see base.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from daemon.core.clock import Clock

if TYPE_CHECKING:
    from daemon.watchers.base import Watcher
    from daemon.watchers.settings import WatchersSettings


def build_watchers(settings: WatchersSettings, clock: Clock) -> list[Watcher]:
    """Every configured watcher except the host one (the runtime keeps that one by name)."""
    found: list[Watcher] = []
    if settings.processes:
        from daemon.watchers.process import ProcessWatcher

        found += [ProcessWatcher(item, clock) for item in settings.processes]
    if settings.ports:
        from daemon.watchers.port import PortCheckWatcher

        found += [PortCheckWatcher(item, clock) for item in settings.ports]
    if settings.http:
        from daemon.watchers.http import HttpCheckWatcher

        found += [HttpCheckWatcher(item, clock) for item in settings.http]
    if settings.commands:
        from daemon.watchers.command import CommandCheckWatcher

        found += [CommandCheckWatcher(item, clock) for item in settings.commands]
    if settings.files:
        from daemon.watchers.files import FileWatcher

        found += [FileWatcher(item, clock) for item in settings.files]
    if settings.logs:
        from daemon.watchers.logs import LogFileWatcher

        found += [LogFileWatcher(item, clock) for item in settings.logs]
    return found
