"""Samples host metrics (psutil) on an interval: a short history, Prometheus gauges, Observations.

Each interval emits cpu_percent, memory_percent, swap_percent and load1/5/15 (no labels),
disk_percent and inode_percent per mount (label ``mount``), net_errors per interface (errors plus
drops per second since the previous sample, label ``interface``) and temperature_c per sensor
(label ``sensor``) where the host has sensors. A mount listed in ``settings.mounts`` that is not
mounted is reported as a ``watcher_error`` for that mount while the rest keeps flowing.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psutil

from daemon.core.alerts import Observation
from daemon.core.clock import Clock
from daemon.watchers.base import Emit, ErrorReporter
from daemon.watchers.host_sample import HostSample, Temperature, sample_host
from daemon.watchers.polling import PollingWatcher, Sleep
from daemon.watchers.settings import HostWatcherSettings

log = logging.getLogger(__name__)

SOURCE = "host"


@dataclass(frozen=True, kw_only=True, slots=True)
class MountUsage:
    """Space and inode use of one mounted filesystem."""

    mount: str
    disk_percent: float
    inode_percent: float | None  # None when the filesystem has no inode table (btrfs, vfat)


@dataclass(frozen=True, kw_only=True, slots=True)
class HostReading:
    """One pass over the host: the shared sample plus per-mount and per-interface detail."""

    sample: HostSample
    mounts: tuple[MountUsage, ...]
    unreadable: tuple[tuple[str, str], ...]  # (mount, reason) for explicit mounts not readable
    net_errors: dict[str, int]  # interface -> errors + drops since boot


def read_host(mounts: Sequence[str] = ()) -> HostReading:
    """Read everything the watcher emits (blocking; call it from a worker thread).

    ``mounts`` empty: every real filesystem (as the ``host_metrics`` tool reports them);
    otherwise exactly those mount points, pseudo filesystems such as tmpfs included.
    """
    sample = sample_host()
    usages: list[MountUsage] = []
    unreadable: list[tuple[str, str]] = []
    if mounts:
        mounted = {part.mountpoint for part in psutil.disk_partitions(all=True)}
        for mount in mounts:
            if mount not in mounted and os.path.realpath(mount) not in mounted:
                unreadable.append((mount, "not mounted"))
                continue
            try:
                usages.append(_usage(mount, psutil.disk_usage(mount).percent))
            except OSError as exc:
                unreadable.append((mount, f"cannot read usage: {exc.strerror or exc}"))
    else:
        for disk in sample.disks:
            try:
                usages.append(_usage(disk.mountpoint, disk.percent))
            except OSError as exc:  # unmounted between the two reads: gone, not an error
                log.debug("skipping %s: %s", disk.mountpoint, exc)
    return HostReading(
        sample=sample,
        mounts=tuple(usages),
        unreadable=tuple(unreadable),
        net_errors=_net_errors(),
    )


def _usage(mount: str, disk_percent: float) -> MountUsage:
    stat = os.statvfs(mount)
    inode_percent = None
    if stat.f_files > 0:
        inode_percent = round((stat.f_files - stat.f_ffree) / stat.f_files * 100, 1)
    return MountUsage(mount=mount, disk_percent=disk_percent, inode_percent=inode_percent)


def _net_errors() -> dict[str, int]:
    try:
        counters = psutil.net_io_counters(pernic=True)
    except OSError:
        return {}
    return {nic: c.errin + c.errout + c.dropin + c.dropout for nic, c in sorted(counters.items())}


def _sensor_names(temperatures: Sequence[Temperature]) -> list[tuple[str, float]]:
    """A unique ``sensor`` label per reading: chip, chip/label, then #2, #3 for repeats."""
    named: list[tuple[str, float]] = []
    seen: dict[str, int] = {}
    for temp in temperatures:
        base = temp.sensor if temp.label in ("", temp.sensor) else f"{temp.sensor}/{temp.label}"
        seen[base] = seen.get(base, 0) + 1
        named.append((base if seen[base] == 1 else f"{base}#{seen[base]}", temp.current))
    return named


class HostMetricsWatcher(PollingWatcher):
    """The default watcher: cheap psutil readings every ``interval_seconds``."""

    name = "watcher.host"
    source = SOURCE
    from_start = True
    expected_errors = (OSError, psutil.Error)

    def __init__(
        self,
        settings: HostWatcherSettings,
        clock: Clock | None = None,
        *,
        sleep: Sleep | None = None,
    ) -> None:
        super().__init__(settings.interval_seconds, clock, sleep)
        self._settings = settings
        self.history: deque[HostSample] = deque(maxlen=settings.history)
        self._net_last: tuple[float, dict[str, int]] | None = None  # (monotonic, counters)

    @property
    def latest(self) -> HostSample | None:
        return self.history[-1] if self.history else None

    @property
    def mounts(self) -> list[str]:
        """Explicit mount points to watch (normalised); empty means every real filesystem."""
        return [os.path.normpath(m) for m in getattr(self._settings, "mounts", None) or []]

    def reason(self, exc: Exception) -> str:
        return f"cannot read host metrics: {exc}"

    async def poll(self, emit: Emit, errors: ErrorReporter) -> None:
        """One sample; the blocking psutil calls run in a worker thread."""
        reading = await asyncio.to_thread(read_host, self.mounts)
        errors.ok()
        self.history.append(reading.sample)
        _export(reading.sample)
        self._emit_reading(reading, emit, errors)

    def _emit_reading(self, reading: HostReading, emit: Emit, errors: ErrorReporter) -> None:
        at = self._clock.now()

        def out(metric: str, value: float, labels: dict[str, str] | None = None) -> None:
            emit(Observation(source=SOURCE, metric=metric, at=at, value=value, labels=labels or {}))

        sample = reading.sample
        out("cpu_percent", sample.cpu_percent)
        out("memory_percent", sample.memory_percent)
        out("swap_percent", sample.swap_percent)
        out("load1", sample.load1)
        out("load5", sample.load5)
        out("load15", sample.load15)
        for usage in reading.mounts:
            errors.ok(target=usage.mount)
            out("disk_percent", usage.disk_percent, {"mount": usage.mount})
            if usage.inode_percent is not None:
                out("inode_percent", usage.inode_percent, {"mount": usage.mount})
        for mount, reason in reading.unreadable:
            if errors.failing.get(mount) != reason:
                log.warning("mount %s: %s", mount, reason)
            errors.failed(reason, target=mount)
        for interface, rate in self._net_rates(reading.net_errors).items():
            out("net_errors", rate, {"interface": interface})
        for sensor, celsius in _sensor_names(sample.temperatures):
            out("temperature_c", celsius, {"sensor": sensor})

    def _net_rates(self, counters: dict[str, int]) -> dict[str, float]:
        """Errors+drops per second since the previous sample (nothing on the first one)."""
        now = self._clock.monotonic()
        last, self._net_last = self._net_last, (now, counters)
        if last is None or now <= last[0]:
            return {}
        seconds = now - last[0]
        rates: dict[str, float] = {}
        for interface, total in counters.items():
            before = last[1].get(interface)
            if before is not None and total >= before:  # a reset counter (re-created nic): skip
                rates[interface] = round((total - before) / seconds, 3)
        return rates

    def summary(self) -> dict[str, Any]:
        sample = self.latest
        if sample is None:
            return {"samples": 0}
        return {
            "samples": len(self.history),
            "cpu_percent": sample.cpu_percent,
            "memory_percent": sample.memory_percent,
            "load1": sample.load1,
        }


def _export(sample: HostSample) -> None:
    from daemon.core import metrics

    metrics.HOST_CPU.set(sample.cpu_percent)
    metrics.HOST_MEMORY.set(sample.memory_percent)
    metrics.HOST_LOAD1.set(sample.load1)
