"""Evidence tools for investigations: metric history, what fills a disk, what changed, log greps.

All read-only. Path arguments pass the same ``[policy]`` read/deny checks as ``read_file``;
directory walks never follow symlinks, never cross into another filesystem, skip what they
cannot read (and count it) and stop after ``WALK_BUDGET`` entries, saying so.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from daemon.agent import sandbox
from daemon.agent.tools._shared import ToolGate
from daemon.agent.tools._walk import Walk, deny_roots
from daemon.agent.tools.base import Tier, Tool, ToolContext, tool
from daemon.agent.tools.files import checked_path, scan_off_loop
from daemon.core.errors import PatternError, ToolError
from daemon.core.patterns import compile_untrusted
from daemon.core.redact import redact

__all__ = ["DiskUsageReport", "FileChanges", "LogMatches", "MetricHistory", "TOOLS"]

log = logging.getLogger(__name__)

# The host watcher's metrics (HostSample.metrics()), in the order the error message lists them.
HOST_METRICS = (
    "cpu_percent", "memory_percent", "swap_percent", "load1", "load5", "load15", "disk_percent",
)  # fmt: skip
MAX_POINTS = 120  # more readings than this in the window are thinned evenly (stats use all)
WALK_BUDGET = 200_000  # directory entries looked at per walk
MAX_DEPTH = 5
MAX_LIMIT = 200
MAX_HISTORY_MINUTES = 7 * 24 * 60
MAX_CHANGE_MINUTES = 366 * 24 * 60
MAX_GREP_LINES = 1000
MAX_GREP_SCAN_BYTES = 200_000_000
LINE_CHARS = 2000  # longer matching lines are cut here
_LINE_CAP_BYTES = 1024 * 1024  # a longer line is matched on its last MiB only


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricHistory:
    """Recent readings of one host metric, oldest first, with their summary."""

    metric: str
    minutes: float
    samples: int
    min: float | None = None
    max: float | None = None
    avg: float | None = None
    latest: float | None = None
    latest_at: str | None = None
    note: str | None = None
    points: tuple[tuple[str, float], ...] = ()  # (ISO 8601 UTC time, value)


@dataclass(frozen=True, slots=True, kw_only=True)
class PathSize:
    """Disk space used by one file or directory (directories: everything below it)."""

    path: str
    kind: str  # "directory", "file" or "other"
    size: str  # human-readable disk usage, e.g. "1.5 GiB"
    size_bytes: int  # allocated on disk, like du
    apparent_bytes: int  # sum of the sizes of the files (and symlinks) below it
    files: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DiskUsageReport:
    """The biggest entries under a directory, biggest first."""

    path: str
    depth: int
    total: str
    total_bytes: int
    scanned_entries: int
    unreadable: int
    complete: bool
    note: str | None
    entries: tuple[PathSize, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class FileChange:
    path: str
    modified: str  # ISO 8601, UTC
    size_bytes: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FileChanges:
    """Files modified recently under a directory, newest first."""

    path: str
    minutes: float
    matched: int
    scanned_entries: int
    unreadable: int
    complete: bool
    note: str | None
    files: tuple[FileChange, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class LogMatches:
    """The last lines of a log matching a pattern, oldest first."""

    path: str
    size: int
    pattern: str
    matched: int
    scanned_bytes: int
    reached_start: bool
    note: str | None
    lines: tuple[str, ...]


def _taken_at(sample: Any) -> datetime:
    """When a HostSample was read: its uptime counts from boot at that moment."""
    at = getattr(sample, "at", None)
    if isinstance(at, datetime):
        return at
    taken: datetime = sample.boot_time + timedelta(seconds=sample.uptime_seconds)
    return taken


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="seconds")


@tool(tier=Tier.READ_ONLY)
async def metrics_history(ctx: ToolContext, metric: str, minutes: float = 30) -> MetricHistory:
    """Recent readings of one host metric from the host watcher, with min, max, average, latest.

    Args:
        metric: One of cpu_percent, memory_percent, swap_percent, load1, load5, load15,
            disk_percent (the fullest filesystem).
        minutes: How far back to look.
    """
    if metric not in HOST_METRICS:
        raise ToolError(f"unknown metric {metric!r}; known metrics: {', '.join(HOST_METRICS)}")
    if not 0 < minutes <= MAX_HISTORY_MINUTES:  # also refuses NaN
        raise ToolError(f"minutes must be more than 0 and at most {MAX_HISTORY_MINUTES}")
    history: Sequence[Any] = ctx.services.host_history() if ctx.services is not None else ()
    since = ctx.clock.now() - timedelta(minutes=minutes)
    readings = [(at, float(s.metrics()[metric])) for s in history if (at := _taken_at(s)) >= since]
    if not readings:
        empty = "no samples yet: the host watcher has not taken a reading (or is disabled)"
        if history:
            newest = _iso(_taken_at(history[-1]))
            empty = f"no samples in the last {minutes:g} minutes; the newest is from {newest}"
        return MetricHistory(metric=metric, minutes=minutes, samples=0, note=empty)
    values = [value for _, value in readings]
    shown, note = readings, None
    if len(readings) > MAX_POINTS:
        step = len(readings) / MAX_POINTS
        shown = [readings[int(i * step)] for i in range(MAX_POINTS - 1)] + [readings[-1]]
        note = f"[showing {len(shown)} of {len(readings)} readings, evenly spaced]"
    return MetricHistory(
        metric=metric,
        minutes=minutes,
        samples=len(readings),
        min=min(values),
        max=max(values),
        avg=round(sum(values) / len(values), 3),
        latest=values[-1],
        latest_at=_iso(readings[-1][0]),
        note=note,
        points=tuple((_iso(at), value) for at, value in shown),
    )


# Each walks the disk or reads up to tens of MB: a few at a time, the rest wait.
DU_GATE = ToolGate("disk_usage_by_directory")
CHANGES_GATE = ToolGate("recent_file_changes")
GREP_GATE = ToolGate("grep_log")


def _directory(path: str, ctx: ToolContext) -> tuple[Path, Walk]:
    """The resolved directory (read policy checked) and a bounded walk that skips deny_paths."""
    resolved = checked_path(path, ctx.settings)
    if not resolved.is_dir():
        what = "does not exist" if not resolved.exists() else "is not a directory"
        raise ToolError(f"{path} {what}; give a directory, e.g. /var/log")
    deny = deny_roots([*ctx.settings.policy.deny_paths, *sandbox.hidden_paths(ctx.settings)])
    return resolved, Walk(budget=WALK_BUDGET, deny=deny)


def _human(size: int) -> str:
    """1536 -> "1.5 KiB"."""
    power = min(4, max(0, (size.bit_length() - 1) // 10))
    return f"{size} B" if power == 0 else f"{size / 1024**power:.1f} {'BKMGT'[power]}iB"


def _usage(root: str, depth: int, walk: Walk) -> tuple[list[PathSize], int]:
    """Sizes of every entry down to ``depth`` levels below ``root`` (blocking)."""
    records: list[list[Any]] = []  # [path, kind, bytes, apparent, files], parents first
    open_dirs: list[int] = []  # records of the reported directories on the current path
    seen_links: set[tuple[int, int]] = set()
    total = 0
    for entry in walk.entries(root):
        info = entry.info
        is_dir, is_file = stat.S_ISDIR(info.st_mode), stat.S_ISREG(info.st_mode)
        if info.st_nlink > 1 and not is_dir:
            if (info.st_dev, info.st_ino) in seen_links:
                continue  # a hard link counts once, like du
            seen_links.add((info.st_dev, info.st_ino))
        used, apparent = info.st_blocks * 512, 0 if is_dir else info.st_size
        total += used
        del open_dirs[entry.depth - 1 :]  # depth first: leave the directories we are done with
        for n in open_dirs:
            records[n][2] += used
            records[n][3] += apparent
            records[n][4] += is_file
        if entry.depth <= depth:
            if is_dir:
                open_dirs.append(len(records))
            kind = "directory" if is_dir else "file" if is_file else "other"
            records.append([entry.path, kind, used, apparent, int(is_file)])
    sizes = [
        PathSize(path=p, kind=k, size=_human(b), size_bytes=b, apparent_bytes=a, files=f)
        for p, k, b, a, f in records
    ]
    return sizes, total


@tool(tier=Tier.READ_ONLY)
async def disk_usage_by_directory(
    ctx: ToolContext, path: str, depth: int = 1, limit: int = 15
) -> DiskUsageReport:
    """The biggest subdirectories and files under a directory (like du, on one filesystem).

    Args:
        path: Absolute path of the directory, e.g. /var/log.
        depth: How many levels below path to report, 1 to 5 (sizes always include everything).
        limit: How many of the biggest entries to return, 1 to 200.
    """
    root, walk = _directory(path, ctx)
    if not 1 <= depth <= MAX_DEPTH:
        raise ToolError(f"depth must be between 1 and {MAX_DEPTH}")
    if not 1 <= limit <= MAX_LIMIT:
        raise ToolError(f"limit must be between 1 and {MAX_LIMIT}")
    async with DU_GATE.slot(ctx):
        sizes, total = await asyncio.to_thread(_usage, str(root), depth, walk)
    biggest = heapq.nlargest(limit, sizes, key=lambda s: (s.size_bytes, s.apparent_bytes))
    log.debug("disk_usage_by_directory %s for %s: %d entries", root, ctx.actor, walk.scanned)
    return DiskUsageReport(
        path=str(root),
        depth=depth,
        total=_human(total),
        total_bytes=total,
        scanned_entries=walk.scanned,
        unreadable=walk.unreadable,
        complete=not walk.cut,
        note=" ".join(walk.notes()) or None,
        entries=tuple(biggest),
    )


def _changes(root: str, since: float, limit: int, walk: Walk) -> tuple[list[FileChange], int]:
    newest: list[tuple[float, str, int]] = []  # a min-heap of the newest ``limit`` files
    matched = 0
    for entry in walk.entries(root):
        info = entry.info
        if not stat.S_ISREG(info.st_mode) or info.st_mtime < since:
            continue
        matched += 1
        item = (info.st_mtime, entry.path, info.st_size)
        if len(newest) < limit:
            heapq.heappush(newest, item)
        elif item > newest[0]:
            heapq.heapreplace(newest, item)
    files = [
        FileChange(path=p, modified=_iso(datetime.fromtimestamp(m, UTC)), size_bytes=s)
        for m, p, s in sorted(newest, reverse=True)
    ]
    return files, matched


@tool(tier=Tier.READ_ONLY)
async def recent_file_changes(
    ctx: ToolContext, path: str, minutes: float = 60, limit: int = 30
) -> FileChanges:
    """Files under a directory modified in the last minutes, newest first.

    Args:
        path: Absolute path of the directory, e.g. /etc or /opt/app.
        minutes: How far back to look.
        limit: How many files to return at most, 1 to 200.
    """
    root, walk = _directory(path, ctx)
    if not 0 < minutes <= MAX_CHANGE_MINUTES:  # also refuses NaN
        raise ToolError(f"minutes must be more than 0 and at most {MAX_CHANGE_MINUTES}")
    if not 1 <= limit <= MAX_LIMIT:
        raise ToolError(f"limit must be between 1 and {MAX_LIMIT}")
    since = ctx.clock.now().timestamp() - minutes * 60
    async with CHANGES_GATE.slot(ctx):
        files, matched = await asyncio.to_thread(_changes, str(root), since, limit, walk)
    notes = walk.notes()
    if matched > len(files):
        notes.insert(0, f"[showing the newest {len(files)} of {matched} changed files]")
    return FileChanges(
        path=str(root),
        minutes=minutes,
        matched=matched,
        scanned_entries=walk.scanned,
        unreadable=walk.unreadable,
        complete=not walk.cut,
        note=" ".join(notes) or None,
        files=tuple(files),
    )


@tool(tier=Tier.READ_ONLY)
async def grep_log(
    ctx: ToolContext, path: str, pattern: str, lines: int = 50, max_scan_bytes: int = 20_000_000
) -> LogMatches:
    """The last lines of a log file matching a regular expression (reads from the end).

    Args:
        path: Absolute path of the log, e.g. /var/log/syslog.
        pattern: Regular expression (RE2 syntax: no backreferences or lookaround), e.g.
            "(?i)out of memory|oom-killer".
        lines: How many matching lines to return (the newest), 1 to 1000.
        max_scan_bytes: Search at most this many bytes back from the end of the file.
    """
    policy = ctx.settings.policy
    resolved = checked_path(path, ctx.settings)
    if not pattern:
        raise ToolError("pattern is empty; to see the last lines of a log use tail_log")
    try:
        regex = compile_untrusted(pattern, where="pattern")
    except PatternError as exc:
        raise ToolError(
            f"{exc} (RE2 syntax: no backreferences or lookaround; escape literal characters "
            "such as ( [ . with a backslash)"
        ) from None
    if not 1 <= lines <= MAX_GREP_LINES:
        raise ToolError(f"lines must be between 1 and {MAX_GREP_LINES}")
    if not 1 <= max_scan_bytes <= MAX_GREP_SCAN_BYTES:
        raise ToolError(f"max_scan_bytes must be between 1 and {MAX_GREP_SCAN_BYTES}")
    status = await sandbox.current(ctx.settings)
    async with GREP_GATE.slot(ctx):
        scan, size = await scan_off_loop(
            resolved, lines, regex, _LINE_CAP_BYTES, max_scan_bytes, settings=ctx.settings,
            status=status,
        )  # fmt: skip
    kept: list[str] = []
    budget, capped, cut = policy.max_read_bytes, False, 0
    for line in scan.lines:  # newest first: keep the newest lines that fit in the budget
        if len(line) > LINE_CHARS:
            line, cut = line[:LINE_CHARS] + f"… [{len(line) - LINE_CHARS} more chars]", cut + 1
        cost = len(line.encode()) + 1
        if cost > budget:
            if not kept:  # one line bigger than the whole budget: keep its start
                kept.append(line.encode()[: budget - 4].decode("utf-8", "ignore") + "…")
            capped = True
            break
        kept.append(line)
        budget -= cost
    notes = []
    if not scan.lines:
        notes.append(f"[no line matched {pattern!r}]")
    if capped:
        notes.append(
            f"[showing the newest {len(kept)} matches within {policy.max_read_bytes} bytes]"
        )
    if cut:
        notes.append(f"[{cut} lines longer than {LINE_CHARS} characters were cut]")
    if not scan.reached_start and len(scan.lines) < lines:
        notes.append(f"[searched only the last {scan.scanned} of {size} bytes (max_scan_bytes)]")
    return LogMatches(
        path=str(resolved),
        size=size,
        pattern=pattern,
        matched=len(kept),
        scanned_bytes=scan.scanned,
        reached_start=scan.reached_start,
        note=" ".join(notes) or None,
        lines=tuple(redact(line, policy.redact_patterns) for line in reversed(kept)),
    )


TOOLS: list[Tool] = [metrics_history, disk_usage_by_directory, recent_file_changes, grep_log]
