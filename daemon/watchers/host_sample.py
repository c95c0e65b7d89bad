"""One reading of the host's metrics with psutil, shared by the host watcher and the agent's
``host_metrics`` tool."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import psutil

# Filesystems that hold no user data (or are read-only images, like snaps); never reported.
PSEUDO_FILESYSTEMS = frozenset({
    "autofs", "binfmt_misc", "bpf", "cgroup", "cgroup2", "configfs", "debugfs", "devpts",
    "devtmpfs", "efivarfs", "fusectl", "hugetlbfs", "mqueue", "nsfs", "proc", "pstore", "ramfs",
    "rpc_pipefs", "securityfs", "selinuxfs", "squashfs", "sysfs", "tmpfs", "tracefs", "iso9660",
    "fuse.gvfsd-fuse", "fuse.portal", "fuse.lxcfs", "nfsd", "overlay",
})  # fmt: skip


# A short sample used when no recent non-blocking baseline exists.
CPU_SAMPLE_SECONDS = 0.2
_MIN_CPU_WINDOW = 0.1


@dataclass(frozen=True, slots=True, kw_only=True)
class DiskUsage:
    """Usage of one mounted filesystem."""

    mountpoint: str
    device: str
    fstype: str
    total_bytes: int
    used_bytes: int
    free_bytes: int
    percent: float


@dataclass(frozen=True, slots=True, kw_only=True)
class NetErrors:
    """Network counters since boot, summed over interfaces."""

    bytes_sent: int
    bytes_recv: int
    errin: int
    errout: int
    dropin: int
    dropout: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Temperature:
    """One temperature sensor reading in °C."""

    sensor: str
    label: str
    current: float
    high: float | None
    critical: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class HostSample:
    """One reading of the host's vital signs."""

    cpu_percent: float
    cpu_count: int
    load1: float
    load5: float
    load15: float
    memory_total_bytes: int
    memory_available_bytes: int
    memory_used_bytes: int
    memory_percent: float
    swap_total_bytes: int
    swap_used_bytes: int
    swap_percent: float
    disks: tuple[DiskUsage, ...]
    boot_time: datetime
    uptime_seconds: float
    net: NetErrors | None
    temperatures: tuple[Temperature, ...]

    @property
    def disk_percent(self) -> float:
        """The fullest filesystem's usage (0 when none is reported)."""
        return max((disk.percent for disk in self.disks), default=0.0)

    def metrics(self) -> dict[str, float]:
        """The values rules can test, by the metric names ``[[rules]] metric`` accepts."""
        return {
            "cpu_percent": self.cpu_percent,
            "memory_percent": self.memory_percent,
            "swap_percent": self.swap_percent,
            "load1": self.load1,
            "load5": self.load5,
            "load15": self.load15,
            "disk_percent": self.disk_percent,
        }


@dataclass(frozen=True, slots=True)
class _CpuMark:
    at: float  # time.monotonic()
    busy: float
    total: float


def _cpu_mark() -> _CpuMark:
    """The host's CPU time so far, as psutil counts it for ``cpu_percent``."""
    times = psutil.cpu_times()
    total = sum(times)
    # Linux counts guest time inside user and nice already.
    total -= getattr(times, "guest", 0.0) + getattr(times, "guest_nice", 0.0)
    busy = total - times.idle - getattr(times, "iowait", 0.0)
    return _CpuMark(time.monotonic(), busy, total)


def _percent(start: _CpuMark, end: _CpuMark) -> float:
    busy, total = end.busy - start.busy, end.total - start.total
    return 0.0 if total <= 0 else round(min(100.0, max(0.0, busy / total * 100)), 1)


_baseline: _CpuMark | None = None  # the newest reading; replaced whole, so read without a lock


def _cpu_percent() -> float:
    """CPU use since the previous reading, or over a short sample if that was too recent.

    Each caller measures against the newest baseline or its own short sample; no lock is held,
    so concurrent callers (the host watcher, the agent's tool) never queue behind each other.
    """
    global _baseline
    before = _baseline
    if before is None or time.monotonic() - before.at < _MIN_CPU_WINDOW:
        before = _cpu_mark()
        time.sleep(CPU_SAMPLE_SECONDS)
    now = _cpu_mark()
    if _baseline is None or _baseline.at < now.at:
        _baseline = now
    return _percent(before, now)


def _disks() -> tuple[DiskUsage, ...]:
    seen: dict[str, DiskUsage] = {}
    partitions = sorted(psutil.disk_partitions(all=True), key=lambda p: len(p.mountpoint))
    for part in partitions:
        if part.fstype in PSEUDO_FILESYSTEMS and not (
            part.fstype == "overlay" and part.mountpoint == "/"  # a container's root
        ):
            continue
        if part.device in seen and part.device != "none":
            continue  # a bind mount of a device already listed (e.g. /etc/hosts in a container)
        if part.mountpoint.startswith(("/proc/", "/sys/", "/dev/")):
            continue
        try:
            usage = psutil.disk_usage(part.mountpoint)
        except OSError:
            continue
        if usage.total == 0:
            continue
        seen[part.device] = DiskUsage(
            mountpoint=part.mountpoint,
            device=part.device,
            fstype=part.fstype,
            total_bytes=usage.total,
            used_bytes=usage.used,
            free_bytes=usage.free,
            percent=usage.percent,
        )
    return tuple(seen.values())


def _net() -> NetErrors | None:
    try:
        counters = psutil.net_io_counters()
    except OSError:
        return None
    if counters is None:
        return None
    return NetErrors(
        bytes_sent=counters.bytes_sent,
        bytes_recv=counters.bytes_recv,
        errin=counters.errin,
        errout=counters.errout,
        dropin=counters.dropin,
        dropout=counters.dropout,
    )


def _temperatures() -> tuple[Temperature, ...]:
    reader = getattr(psutil, "sensors_temperatures", None)
    if reader is None:
        return ()
    try:
        sensors = reader()
    except (OSError, RuntimeError):  # unreadable hwmon files on some kernels
        return ()
    return tuple(
        Temperature(
            sensor=name,
            label=entry.label or name,
            current=entry.current,
            high=entry.high,
            critical=entry.critical,
        )
        for name, entries in sorted(sensors.items())
        for entry in entries
    )


def sample_host() -> HostSample:
    """Read the host's metrics (blocking, up to ~0.2 s; call it from a worker thread)."""
    cpu = _cpu_percent()
    load1, load5, load15 = psutil.getloadavg()
    memory = psutil.virtual_memory()
    swap = psutil.swap_memory()
    boot = psutil.boot_time()
    return HostSample(
        cpu_percent=cpu,
        cpu_count=psutil.cpu_count() or os.cpu_count() or 1,
        load1=load1,
        load5=load5,
        load15=load15,
        memory_total_bytes=memory.total,
        memory_available_bytes=memory.available,
        memory_used_bytes=memory.used,
        memory_percent=memory.percent,
        swap_total_bytes=swap.total,
        swap_used_bytes=swap.used,
        swap_percent=swap.percent,
        disks=_disks(),
        boot_time=datetime.fromtimestamp(boot, UTC),
        uptime_seconds=max(0.0, time.time() - boot),
        net=_net(),
        temperatures=_temperatures(),
    )
