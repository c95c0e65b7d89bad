"""Watches one named process, matched by exact name, command-line regex or pidfile.

Each interval emits, labelled ``process=<name>``: process_up (1/0), process_count,
process_restarts (restarts seen since the watcher started: the matched processes vanished and
came back, or were all replaced between two samples), process_rss_mb and process_cpu_percent
(sums over the matched processes; CPU is measured against this watcher's own per-pid baseline,
so it reads 0 for a process's first sample).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import psutil
from pydantic import Field, field_validator, model_validator

from daemon.core.alerts import Observation
from daemon.core.clock import Clock
from daemon.core.errors import NightshiftError
from daemon.core.patterns import compile_pattern
from daemon.core.section import Section, check_regex
from daemon.watchers.base import Emit, ErrorReporter
from daemon.watchers.polling import PollingWatcher, Sleep

log = logging.getLogger(__name__)

PIDFILE_MAX_BYTES = 64  # a pidfile holds one number; anything longer is garbage
MAX_SNAPSHOT_AGE_SECONDS = 1.0  # process watchers waking within this share one /proc walk

ProcessKey = tuple[int, float]  # (pid, create time): a reused pid is a different process


class ProcessWatchSettings(Section):
    """A process to watch, matched by exactly one of process, cmdline or pidfile."""

    name: str = Field(min_length=1)  # the label value: process=<name>
    process: str | None = Field(default=None, min_length=1)  # exact process name, e.g. "nginx"
    cmdline: str | None = Field(default=None, min_length=1)  # regex searched in the command line
    pidfile: Path | None = None  # a file holding the pid, e.g. /run/nginx.pid
    interval_seconds: float = Field(default=10.0, ge=0.05)  # how often to look

    @field_validator("cmdline")
    @classmethod
    def _cmdline_compiles(cls, value: str | None) -> str | None:
        return None if value is None else check_regex(value)

    @model_validator(mode="after")
    def _one_matcher(self) -> Self:
        given = [key for key in ("process", "cmdline", "pidfile") if getattr(self, key) is not None]
        if len(given) != 1:
            found = ", ".join(given) if given else "none"
            raise ValueError(
                f"process watch {self.name!r} needs exactly one of process, cmdline or pidfile "
                f"(found: {found})"
            )
        return self


@dataclass(frozen=True, kw_only=True, slots=True)
class ProcessSample:
    """The processes matched by one scan and their summed resource use."""

    keys: frozenset[ProcessKey]
    rss_bytes: int
    cpu_percent: float


class PidfileUnreadable(NightshiftError, OSError):
    """The pidfile exists but cannot be read (permissions, a directory…)."""


def read_pidfile(path: Path) -> int | None:
    """The pid in ``path``; None when the file is missing or holds no valid pid."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(PIDFILE_MAX_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise PidfileUnreadable(
            f"cannot read pidfile: {reason} (check the path and that the "
            "nightshift user may read it)"
        ) from exc
    if len(raw) > PIDFILE_MAX_BYTES:
        return None
    try:
        pid = int(raw.decode("ascii", errors="strict").strip())
    except (UnicodeDecodeError, ValueError):
        return None
    return pid if pid > 0 else None


@dataclass(frozen=True, kw_only=True, slots=True)
class ProcessEntry:
    """One row of the process table."""

    pid: int
    name: str
    cmdline: str  # arguments joined by spaces; empty for kernel threads and zombies


class ProcessTable:
    """A snapshot of /proc shared by every process watcher (thread-safe).

    Walking /proc is most of a scan's cost; watchers on the same interval wake together, so
    a snapshot younger than the caller's ``max_age`` is reused instead of walking it again —
    unless it was taken before ``newer_than`` (the caller's previous snapshot or start).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._taken = -math.inf
        self._entries: tuple[ProcessEntry, ...] = ()

    def snapshot(self, max_age: float, newer_than: float) -> tuple[float, tuple[ProcessEntry, ...]]:
        """(when it was taken, the entries) — fresh unless the last one is recent enough."""
        with self._lock:
            if self._taken <= newer_than or time.monotonic() - self._taken > max_age:
                self._entries = tuple(_entries())
                self._taken = time.monotonic()
            return self._taken, self._entries


def _entries() -> list[ProcessEntry]:
    """Every process's name and command line. ``as_dict``, not ``process_iter(attrs).info``:
    psutil shares cached Process objects, and another thread's scan would rewrite ``.info``."""
    found = []
    for proc in psutil.process_iter():
        try:
            info = proc.as_dict(["name", "cmdline"])
        except psutil.NoSuchProcess:
            continue
        found.append(
            ProcessEntry(
                pid=proc.pid, name=info["name"] or "", cmdline=" ".join(info["cmdline"] or ())
            )
        )
    return found


SHARED_TABLE = ProcessTable()


class ProcessScanner:
    """Finds the matching processes and measures them (blocking; one thread at a time).

    Keeps its own ``psutil.Process`` objects: psutil's shared ``process_iter`` cache would mix
    the CPU baselines of every watcher looking at the same pid.
    """

    def __init__(self, settings: ProcessWatchSettings, table: ProcessTable | None = None) -> None:
        self._settings = settings
        self._table = table or SHARED_TABLE
        # a snapshot may be this old: shared by watchers waking together, never a scan behind
        self._max_age = min(MAX_SNAPSHOT_AGE_SECONDS, settings.interval_seconds / 2)
        self._last_snapshot = time.monotonic()  # never use a snapshot from before we started
        self._regex = compile_pattern(settings.cmdline) if settings.cmdline is not None else None
        self._tracked: dict[ProcessKey, psutil.Process] = {}

    def scan(self) -> ProcessSample:
        found: dict[ProcessKey, psutil.Process] = {}
        for pid in self._matching_pids():
            try:
                proc = psutil.Process(pid)
                key = (pid, proc.create_time())
                found[key] = self._tracked.get(key, proc)
            except psutil.Error:  # gone since it was listed
                continue
        self._tracked = found
        rss = 0
        cpu = 0.0
        alive: set[ProcessKey] = set()
        for key, proc in found.items():
            try:
                with proc.oneshot():
                    if proc.status() == psutil.STATUS_ZOMBIE:
                        continue
                    cpu += proc.cpu_percent(interval=None)
                    rss += proc.memory_info().rss
            except psutil.AccessDenied:
                pass  # counted as running; its usage is not ours to read
            except psutil.Error:  # exited during the scan
                continue
            alive.add(key)
        return ProcessSample(keys=frozenset(alive), rss_bytes=rss, cpu_percent=cpu)

    def _matching_pids(self) -> list[int]:
        settings = self._settings
        if settings.pidfile is not None:
            pid = read_pidfile(settings.pidfile)
            return [pid] if pid is not None and psutil.pid_exists(pid) else []
        self._last_snapshot, entries = self._table.snapshot(self._max_age, self._last_snapshot)
        if self._regex is not None:
            return [e.pid for e in entries if self._regex.search(e.cmdline)]
        return [e.pid for e in entries if e.name == settings.process]  # zombies: dropped later


class RestartCounter:
    """Counts restarts: matched processes that vanished and came back, or were all replaced."""

    def __init__(self) -> None:
        self.restarts = 0
        self._previous: frozenset[ProcessKey] | None = None
        self._was_up = False

    def update(self, keys: frozenset[ProcessKey]) -> int:
        previous, self._previous = self._previous, keys
        if keys and previous is not None and self._was_up and previous.isdisjoint(keys):
            self.restarts += 1  # back after an absence (empty is disjoint), or all replaced
        self._was_up = self._was_up or bool(keys)
        return self.restarts


class ProcessWatcher(PollingWatcher):
    """Emits process_up, process_count, process_restarts, process_rss_mb, process_cpu_percent;
    scans start ``interval_seconds`` apart."""

    from_start = True
    expected_errors = (OSError, psutil.Error)

    def __init__(
        self,
        settings: ProcessWatchSettings,
        clock: Clock | None = None,
        *,
        sleep: Sleep | None = None,
    ) -> None:
        super().__init__(settings.interval_seconds, clock, sleep)
        self.settings = settings
        self.source = f"process:{settings.name}"
        self.name = f"watcher.{self.source}"
        self.error_target = str(settings.pidfile) if settings.pidfile is not None else ""
        self._scanner = ProcessScanner(settings)
        self._restarts = RestartCounter()

    async def poll(self, emit: Emit, errors: ErrorReporter) -> None:
        """One scan; psutil runs in a worker thread."""
        sample = await asyncio.to_thread(self._scanner.scan)
        errors.ok(target=self.error_target)
        self._emit(sample, emit)

    def _emit(self, sample: ProcessSample, emit: Emit) -> None:
        at = self._clock.now()
        labels = {"process": self.settings.name}
        restarts = self._restarts.update(sample.keys)
        for metric, value in (
            ("process_up", 1.0 if sample.keys else 0.0),
            ("process_count", float(len(sample.keys))),
            ("process_restarts", float(restarts)),
            ("process_rss_mb", round(sample.rss_bytes / 1_048_576, 2)),
            ("process_cpu_percent", round(sample.cpu_percent, 1)),
        ):
            emit(Observation(source=self.source, metric=metric, at=at, value=value, labels=labels))
