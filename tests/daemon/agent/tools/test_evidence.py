"""Evidence tools on real files, a real log, a real tmpfs mount and the real host watcher."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from daemon.agent.services import ToolServices
from daemon.agent.tools import evidence
from daemon.agent.tools.base import Tier, ToolContext, render_result
from daemon.agent.tools.evidence import (
    TOOLS,
    DiskUsageReport,
    FileChanges,
    LogMatches,
    MetricHistory,
    disk_usage_by_directory,
    grep_log,
    metrics_history,
    recent_file_changes,
)
from daemon.config import Settings
from daemon.core.clock import Clock, ManualClock, SystemClock
from daemon.core.errors import PolicyDeniedError, ToolError
from daemon.watchers.host import HostMetricsWatcher
from daemon.watchers.host_sample import HostSample, sample_host
from daemon.watchers.settings import HostWatcherSettings
from memory.facts import FactRepo
from memory.outbox import OutboxRepo
from memory.store import SqliteStore
from tests.support import mounted_tmpfs

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = await SqliteStore.open(tmp_path / "t.db")
    yield store
    await store.close()


def make_ctx(
    *,
    clock: Clock | None = None,
    store: SqliteStore | None = None,
    history: Sequence[Any] = (),
    **policy: Any,
) -> ToolContext:
    settings = Settings()
    for key, value in policy.items():
        setattr(settings.policy, key, value)
    clock = clock or SystemClock()
    services = None
    if store is not None:
        services = ToolServices(
            facts=FactRepo(store, clock),
            outbox=OutboxRepo(store, clock),
            host_history=lambda: tuple(history),
        )
    return ToolContext(
        actor="test", reason="test", settings=settings, clock=clock, services=services
    )


@pytest.fixture
def root(tmp_path: Path) -> Path:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    return allowed


# -- metrics_history ----------------------------------------------------------------------------


def reading(base: HostSample, at: datetime, cpu: float) -> HostSample:
    """A host reading taken at ``at`` (its uptime counts from boot to that moment)."""
    boot = NOW - timedelta(days=3)
    return dataclasses.replace(
        base, cpu_percent=cpu, boot_time=boot, uptime_seconds=(at - boot).total_seconds()
    )


async def test_history_keeps_the_window_and_summarises_it(store: SqliteStore) -> None:
    base = sample_host()
    cpu = [90.0, 10.0, 20.0, 60.0, 30.0]  # 40, 25, 20, 10 and 0 minutes ago
    ago = [40, 25, 20, 10, 0]
    history = [reading(base, NOW - timedelta(minutes=m), v) for m, v in zip(ago, cpu, strict=True)]
    ctx = make_ctx(clock=ManualClock(NOW), store=store, history=history)
    result = await metrics_history.invoke(ctx, {"metric": "cpu_percent"})
    assert isinstance(result, MetricHistory)
    assert list(result.points) == [
        ("2026-03-01T11:35:00+00:00", 10.0),
        ("2026-03-01T11:40:00+00:00", 20.0),
        ("2026-03-01T11:50:00+00:00", 60.0),
        ("2026-03-01T12:00:00+00:00", 30.0),
    ]  # the 90 % spike 40 minutes ago is outside the default 30-minute window
    assert (result.samples, result.min, result.max, result.avg) == (4, 10.0, 60.0, 30.0)
    assert (result.latest, result.latest_at) == (30.0, "2026-03-01T12:00:00+00:00")
    wider = await metrics_history.invoke(ctx, {"metric": "cpu_percent", "minutes": 60})
    assert (wider.samples, wider.max) == (5, 90.0)
    text = json.loads(render_result(result))
    assert text["points"][0] == ["2026-03-01T11:35:00+00:00", 10.0]


async def test_a_long_history_is_thinned_but_summarised_in_full(store: SqliteStore) -> None:
    base = sample_host()
    history = [reading(base, NOW - timedelta(seconds=600 - i), float(i)) for i in range(600)]
    ctx = make_ctx(clock=ManualClock(NOW), store=store, history=history)
    result = await metrics_history.invoke(ctx, {"metric": "cpu_percent", "minutes": 60})
    assert result.samples == 600 and len(result.points) == evidence.MAX_POINTS
    assert (result.min, result.max, result.latest) == (0.0, 599.0, 599.0)
    assert result.points[-1][1] == 599.0
    assert "showing 120 of 600 readings" in (result.note or "")


async def test_no_history_is_a_result_not_an_error(store: SqliteStore) -> None:
    empty = await metrics_history.invoke(make_ctx(store=store), {"metric": "load1"})
    assert (empty.samples, empty.points, empty.latest) == (0, (), None)
    assert "no samples yet" in (empty.note or "")
    old = [reading(sample_host(), NOW - timedelta(hours=2), 5.0)]
    ctx = make_ctx(clock=ManualClock(NOW), store=store, history=old)
    stale = await metrics_history.invoke(ctx, {"metric": "cpu_percent"})
    assert stale.samples == 0
    assert "newest is from 2026-03-01T10:00:00+00:00" in (stale.note or "")
    no_services = await metrics_history.invoke(make_ctx(), {"metric": "load1"})
    assert no_services.samples == 0


async def test_an_unknown_metric_lists_the_known_ones(store: SqliteStore) -> None:
    with pytest.raises(ToolError, match="unknown metric 'cpu'; known metrics: cpu_percent, mem"):
        await metrics_history.invoke(make_ctx(store=store), {"metric": "cpu"})
    for minutes in (0, float("nan"), 1e12):
        with pytest.raises(ToolError, match="minutes must be more than 0 and at most 10080"):
            await metrics_history.invoke(
                make_ctx(store=store), {"metric": "load1", "minutes": minutes}
            )
    assert set(evidence.HOST_METRICS) == set(sample_host().metrics())


async def test_readings_of_the_real_host_watcher(store: SqliteStore) -> None:
    watcher = HostMetricsWatcher(HostWatcherSettings(interval_seconds=1.0))
    started = datetime.now(UTC).replace(microsecond=0)
    task = asyncio.create_task(watcher.run())
    try:
        for _ in range(1000):  # up to 20 s
            if len(watcher.history) >= 2:
                break
            await asyncio.sleep(0.02)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    history = list(watcher.history)
    assert len(history) >= 2
    result = await metrics_history.invoke(
        make_ctx(store=store, history=history), {"metric": "memory_percent", "minutes": 5}
    )
    assert [value for _, value in result.points] == [s.memory_percent for s in history]
    times = [datetime.fromisoformat(at) for at, _ in result.points]
    assert started <= times[0] <= times[-1] <= datetime.now(UTC)  # when each was taken


# -- disk_usage_by_directory --------------------------------------------------------------------


def write(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return path


@pytest.fixture
def tree(root: Path) -> Path:
    """big/ 500 kB in 2 files (one hard-linked twice), medium/ 100 kB, small.txt 10 kB."""
    write(root / "big" / "a.bin", 300_000)
    os.link(root / "big" / "a.bin", root / "big" / "same-as-a.bin")  # counted once, like du
    write(root / "big" / "sub" / "b.bin", 200_000)
    write(root / "medium" / "c.bin", 100_000)
    write(root / "small.txt", 10_000)
    (root / "etc-link").symlink_to("/etc")  # never followed
    return root


def by_path(report: DiskUsageReport) -> dict[str, tuple[str, int, int]]:
    return {e.path: (e.kind, e.apparent_bytes, e.files) for e in report.entries}


async def test_the_biggest_entries_come_first_with_their_sizes(tree: Path) -> None:
    ctx = make_ctx(read_paths=[str(tree)])
    report = await disk_usage_by_directory.invoke(ctx, {"path": str(tree)})
    assert isinstance(report, DiskUsageReport)
    assert [e.path for e in report.entries[:3]] == [
        str(tree / "big"),
        str(tree / "medium"),
        str(tree / "small.txt"),
    ]
    sizes = by_path(report)
    assert sizes[str(tree / "big")] == ("directory", 500_000, 2)
    assert sizes[str(tree / "medium")] == ("directory", 100_000, 1)
    assert sizes[str(tree / "small.txt")] == ("file", 10_000, 1)
    assert sizes[str(tree / "etc-link")] == ("other", len("/etc"), 0)
    assert report.entries[0].size_bytes >= 500_000 and report.entries[0].size.endswith("KiB")
    assert report.total_bytes >= 610_000 and report.complete and report.note is None
    assert str(tree / "big" / "sub") not in sizes  # depth 1 by default


async def test_depth_and_limit(tree: Path) -> None:
    ctx = make_ctx(read_paths=[str(tree)])
    deep = await disk_usage_by_directory.invoke(ctx, {"path": str(tree), "depth": 2})
    sizes = by_path(deep)
    assert sizes[str(tree / "big" / "sub")][0] == "directory"
    assert sizes[str(tree / "big" / "a.bin")] == ("file", 300_000, 1)
    assert sizes[str(tree / "big")][2] == 2
    top = await disk_usage_by_directory.invoke(ctx, {"path": str(tree), "limit": 1})
    assert [e.path for e in top.entries] == [str(tree / "big")]
    with pytest.raises(ToolError, match="depth must be between 1 and 5"):
        await disk_usage_by_directory.invoke(ctx, {"path": str(tree), "depth": 9})


async def test_disk_usage_obeys_the_read_policy(tree: Path, tmp_path: Path) -> None:
    ctx = make_ctx(read_paths=[str(tree)], deny_paths=[str(tree / "medium")])
    with pytest.raises(PolicyDeniedError, match="read_paths"):
        await disk_usage_by_directory.invoke(ctx, {"path": str(tmp_path)})
    with pytest.raises(PolicyDeniedError, match="deny_paths"):
        await disk_usage_by_directory.invoke(ctx, {"path": str(tree / "medium")})
    report = await disk_usage_by_directory.invoke(ctx, {"path": str(tree)})
    assert str(tree / "medium") not in by_path(report)
    assert "1 entries under [policy] deny_paths skipped" in (report.note or "")
    with pytest.raises(ToolError, match="is not a directory"):
        await disk_usage_by_directory.invoke(ctx, {"path": str(tree / "small.txt")})


async def test_a_walk_stops_at_its_budget_and_says_so(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(100):
        (root / f"f{i:03}").write_bytes(b"x")
    monkeypatch.setattr(evidence, "WALK_BUDGET", 40)
    ctx = make_ctx(read_paths=[str(root)])
    report = await disk_usage_by_directory.invoke(ctx, {"path": str(root), "limit": 200})
    assert (report.complete, report.scanned_entries, len(report.entries)) == (False, 40, 40)
    assert "stopped after 40 entries" in (report.note or "")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every directory")
async def test_unreadable_directories_are_skipped_and_counted(tree: Path) -> None:
    locked = tree / "locked"
    write(locked / "secret.bin", 1000)
    locked.chmod(0)
    try:
        ctx = make_ctx(read_paths=[str(tree)])
        report = await disk_usage_by_directory.invoke(ctx, {"path": str(tree)})
    finally:
        locked.chmod(0o755)
    assert report.unreadable == 1 and "could not be read" in (report.note or "")
    assert by_path(report)[str(tree / "big")][1] == 500_000


@pytest.fixture
def tmpfs(root: Path) -> Iterator[Path]:
    """A tmpfs mounted inside the scanned tree (skips when this host does not allow mounting)."""
    with mounted_tmpfs(root / "mnt", "4m") as mount:
        yield mount


async def test_walks_do_not_cross_into_other_filesystems(root: Path, tmpfs: Path) -> None:
    write(tmpfs / "inside-the-mount.bin", 2_000_000)
    write(root / "here.bin", 1000)
    ctx = make_ctx(read_paths=[str(root)])
    report = await disk_usage_by_directory.invoke(ctx, {"path": str(root)})
    assert list(by_path(report)) == [str(root / "here.bin")]
    assert report.total_bytes < 100_000
    assert "1 mount points of other filesystems skipped" in (report.note or "")
    changes = await recent_file_changes.invoke(ctx, {"path": str(root)})
    assert [f.path for f in changes.files] == [str(root / "here.bin")]


# -- recent_file_changes ------------------------------------------------------------------------


def touch(path: Path, at: datetime, size: int = 10) -> Path:
    write(path, size)
    os.utime(path, (at.timestamp(), at.timestamp()))
    return path


async def test_recent_changes_newest_first_within_the_window(root: Path, tmp_path: Path) -> None:
    touch(root / "etc" / "app.conf", NOW - timedelta(minutes=5), size=42)
    touch(root / "deep" / "er" / "state.json", NOW - timedelta(minutes=50))
    touch(root / "old.conf", NOW - timedelta(hours=3))
    outside = touch(tmp_path / "outside.txt", NOW - timedelta(minutes=1))
    (root / "link.txt").symlink_to(outside)  # a symlink is not a changed file
    ctx = make_ctx(clock=ManualClock(NOW), read_paths=[str(root)])
    changes = await recent_file_changes.invoke(ctx, {"path": str(root)})
    assert isinstance(changes, FileChanges)
    assert [(f.path, f.modified, f.size_bytes) for f in changes.files] == [
        (str(root / "etc" / "app.conf"), "2026-03-01T11:55:00+00:00", 42),
        (str(root / "deep" / "er" / "state.json"), "2026-03-01T11:10:00+00:00", 10),
    ]
    assert (changes.matched, changes.complete, changes.note) == (2, True, None)
    newest = await recent_file_changes.invoke(ctx, {"path": str(root), "limit": 1})
    assert [f.path for f in newest.files] == [str(root / "etc" / "app.conf")]
    assert "showing the newest 1 of 2 changed files" in (newest.note or "")
    wide = await recent_file_changes.invoke(ctx, {"path": str(root), "minutes": 240})
    assert wide.matched == 3


async def test_recent_changes_obey_the_read_policy(root: Path) -> None:
    touch(root / "private" / "key.pem", NOW - timedelta(minutes=1))
    touch(root / "public.txt", NOW - timedelta(minutes=1))
    ctx = make_ctx(clock=ManualClock(NOW), read_paths=[str(root)], deny_paths=[str(root / "pri")])
    both = await recent_file_changes.invoke(ctx, {"path": str(root)})  # "pri" is not "private"
    assert {f.path for f in both.files} == {
        str(root / "private" / "key.pem"),
        str(root / "public.txt"),
    }
    ctx = make_ctx(
        clock=ManualClock(NOW), read_paths=[str(root)], deny_paths=[str(root / "private")]
    )
    changes = await recent_file_changes.invoke(ctx, {"path": str(root)})
    assert [f.path for f in changes.files] == [str(root / "public.txt")]
    with pytest.raises(PolicyDeniedError, match="not absolute"):
        await recent_file_changes.invoke(ctx, {"path": "relative/dir"})
    with pytest.raises(ToolError, match="does not exist"):
        await recent_file_changes.invoke(ctx, {"path": str(root / "nope")})


# -- grep_log -----------------------------------------------------------------------------------


@pytest.fixture
def big_log(root: Path) -> Path:
    """50,000 lines; every 1,000th is an ERROR with its line number."""
    lines = []
    for n in range(1, 50_001):
        level = "ERROR disk full" if n % 1000 == 0 else "INFO request ok"
        lines.append(f"2026-03-01T11:{n % 60:02}:00 app[42]: {level} line={n}\n")
    path = root / "app.log"
    path.write_text("".join(lines))
    return path


def size_of(path: Path) -> int:
    return path.stat().st_size


async def test_grep_returns_the_last_matches_oldest_first(big_log: Path) -> None:
    ctx = make_ctx(read_paths=[str(big_log.parent)])
    found = await grep_log.invoke(ctx, {"path": str(big_log), "pattern": "ERROR", "lines": 3})
    assert isinstance(found, LogMatches)
    assert [line.rsplit("=", 1)[1] for line in found.lines] == ["48000", "49000", "50000"]
    assert found.matched == 3 and found.note is None
    size = size_of(big_log)
    assert found.size == size and found.scanned_bytes < size // 5  # read from the end only
    assert not found.reached_start


async def test_grep_reaches_the_start_when_it_must(big_log: Path) -> None:
    ctx = make_ctx(read_paths=[str(big_log.parent)])
    first = await grep_log.invoke(
        ctx, {"path": str(big_log), "pattern": r"line=1$|line=2$", "lines": 10}
    )
    assert [line.rsplit("=", 1)[1] for line in first.lines] == ["1", "2"]
    assert first.reached_start and first.scanned_bytes >= size_of(big_log) - 1
    none = await grep_log.invoke(ctx, {"path": str(big_log), "pattern": "(?i)segfault"})
    assert none.lines == () and "no line matched" in (none.note or "")


async def test_max_scan_bytes_bounds_the_search(big_log: Path) -> None:
    ctx = make_ctx(read_paths=[str(big_log.parent)])
    found = await grep_log.invoke(
        ctx, {"path": str(big_log), "pattern": "ERROR", "lines": 50, "max_scan_bytes": 200_000}
    )
    assert 0 < found.matched < 50 and found.lines[-1].endswith("line=50000")
    assert found.scanned_bytes <= 200_000 + 65_536
    assert "searched only the last" in (found.note or "")


async def test_long_lines_are_cut_and_secrets_masked(root: Path) -> None:
    log = root / "long.log"
    log.write_text("start\n" + "ERROR " + "x" * 10_000 + "\nERROR password=hunter2\nend\n")
    ctx = make_ctx(read_paths=[str(root)])
    found = await grep_log.invoke(ctx, {"path": str(log), "pattern": "ERROR"})
    long_line, secret = found.lines
    assert long_line.startswith("ERROR xxx") and len(long_line) < 2100
    assert long_line.endswith("… [8006 more chars]")
    assert secret == "ERROR password=[REDACTED]"
    assert "1 lines longer than 2000 characters were cut" in (found.note or "")


async def test_bad_grep_arguments_are_clear_errors(big_log: Path, tmp_path: Path) -> None:
    ctx = make_ctx(read_paths=[str(big_log.parent)])
    with pytest.raises(ToolError, match=r"invalid regular expression '\(unclosed'"):
        await grep_log.invoke(ctx, {"path": str(big_log), "pattern": "(unclosed"})
    with pytest.raises(ToolError, match=r"pattern: .*lookahead `\(\?=…\)` is not supported"):
        await grep_log.invoke(ctx, {"path": str(big_log), "pattern": "error(?=: disk)"})
    with pytest.raises(ToolError, match="pattern: .* 1001 characters long; the limit is 1000"):
        await grep_log.invoke(ctx, {"path": str(big_log), "pattern": "x" * 1001})
    with pytest.raises(ToolError, match="pattern is empty"):
        await grep_log.invoke(ctx, {"path": str(big_log), "pattern": ""})
    with pytest.raises(ToolError, match="lines must be between 1 and 1000"):
        await grep_log.invoke(ctx, {"path": str(big_log), "pattern": "x", "lines": 0})
    (tmp_path / "other.log").write_text("ERROR\n")
    with pytest.raises(PolicyDeniedError, match="read_paths"):
        await grep_log.invoke(ctx, {"path": str(tmp_path / "other.log"), "pattern": "ERROR"})
    with pytest.raises(ToolError, match="is a directory"):
        await grep_log.invoke(ctx, {"path": str(big_log.parent), "pattern": "ERROR"})


# -- the tool set -------------------------------------------------------------------------------


def test_evidence_tools_are_read_only_with_described_arguments() -> None:
    assert [t.name for t in TOOLS] == [
        "metrics_history",
        "disk_usage_by_directory",
        "recent_file_changes",
        "grep_log",
    ]
    for item in TOOLS:
        assert item.tier is Tier.READ_ONLY and item.classify is None
        properties = item.schema()["function"]["parameters"]["properties"]
        assert properties and all(p.get("description") for p in properties.values())
