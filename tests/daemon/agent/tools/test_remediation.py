"""Remediation tools against real programs, real processes and real files."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest

from daemon.agent.tools import evidence, remediation
from daemon.agent.tools.base import Tier, ToolContext
from daemon.agent.tools.commands import CommandResult
from daemon.agent.tools.registry import default_registry
from daemon.agent.tools.remediation import (
    TOOLS,
    CleanResult,
    SignalResult,
    clean_directory,
    restart_service,
    stop_process,
)
from daemon.config import Settings
from daemon.core.clock import ManualClock, SystemClock
from daemon.core.errors import PolicyDeniedError, ToolError

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
# Writes its arguments, one a line, to the file named by the first: proof of the exact argv.
RECORD_ARGV = "import sys; open(sys.argv[1], 'w').write('\\n'.join(sys.argv[2:]))"


def make_ctx(*, unattended: bool = False, clock: Any = None, **remediation: Any) -> ToolContext:
    settings = Settings()
    for key, value in remediation.items():
        setattr(settings.incidents.remediation, key, value)
    return ToolContext(
        actor="test",
        reason="test",
        settings=settings,
        clock=clock or SystemClock(),
        unattended=unattended,
    )


# -- restart_service ----------------------------------------------------------------------------


async def test_the_service_name_lands_in_argv_and_nothing_is_shell_interpreted(
    tmp_path: Path,
) -> None:
    command = [sys.executable, "-c", RECORD_ARGV, f"{tmp_path}/marker-{{service}}"]
    command += ["restart", "{service}", "$HOME;`id`|x", "unit={service}.d"]
    ctx = make_ctx(restart_command=command, unattended=True)  # approved before it runs
    result = await restart_service.invoke(ctx, {"service": "getty@tty1.service", "reason": "hung"})
    assert isinstance(result, CommandResult)
    assert result.exit_code == 0
    marker = tmp_path / "marker-getty@tty1.service"
    assert marker.read_text().splitlines() == [
        "restart",
        "getty@tty1.service",
        "$HOME;`id`|x",
        "unit=getty@tty1.service.d",
    ]
    assert "getty@tty1.service" in result.command


async def test_a_failed_restart_is_reported_not_raised() -> None:
    code = "import sys; print('Unit', sys.argv[1], 'not found', file=sys.stderr); sys.exit(5)"
    ctx = make_ctx(restart_command=[sys.executable, "-c", code, "{service}"])
    result = await restart_service.invoke(ctx, {"service": "nginx"})
    assert result.exit_code == 5 and result.stderr == "Unit nginx not found\n"


@pytest.mark.parametrize(
    "service", ["nginx; rm -rf /", "a b", "$(id)", "nginx\n", "", "--no-block", "-h", "x" * 300]
)
async def test_bad_service_names_are_refused_before_anything_runs(
    service: str, tmp_path: Path
) -> None:
    ctx = make_ctx(
        restart_command=[sys.executable, "-c", RECORD_ARGV, f"{tmp_path}/m", "{service}"]
    )
    with pytest.raises(ToolError, match="invalid service name"):
        await restart_service.invoke(ctx, {"service": service})
    assert not (tmp_path / "m").exists()


async def test_restart_command_problems_are_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"has no \{service\} placeholder"):
        make_ctx(restart_command=["systemctl", "restart"])  # refused by the config already
    missing = make_ctx(restart_command=["no-such-service-manager", "{service}"])
    with pytest.raises(ToolError, match="command not found: 'no-such-service-manager'"):
        await restart_service.invoke(missing, {"service": "nginx"})


# -- stop_process -------------------------------------------------------------------------------


@pytest.fixture
async def sleeper() -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec("sleep", "60")
    yield proc
    if proc.returncode is None:
        proc.kill()
        await proc.wait()


@pytest.fixture
async def stubborn() -> AsyncIterator[asyncio.subprocess.Process]:
    """A child that ignores SIGTERM (and says so once it does)."""
    code = (
        "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    assert await asyncio.wait_for(proc.stdout.readline(), 20) == b"ready\n"
    yield proc
    if proc.returncode is None:
        proc.kill()
    await proc.wait()


async def test_term_stops_a_process_and_says_which(
    sleeper: asyncio.subprocess.Process,
) -> None:
    result = await stop_process.invoke(make_ctx(), {"pid": sleeper.pid, "reason": "runaway"})
    assert isinstance(result, SignalResult)
    assert (result.pid, result.name, result.signal, result.gone) == (
        sleeper.pid,
        "sleep",
        "TERM",
        True,
    )
    assert result.cmdline == "sleep 60" and result.status is None
    assert await asyncio.wait_for(sleeper.wait(), 20) == -15


async def test_a_process_ignoring_term_is_reported_alive_then_killed(
    stubborn: asyncio.subprocess.Process, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(remediation.GRACE_SECONDS, "TERM", 0.3)
    ctx = make_ctx()
    ignored = await stop_process.invoke(ctx, {"pid": stubborn.pid})
    assert not ignored.gone and ignored.status in {"sleeping", "running"}
    assert ignored.waited_seconds >= 0.3
    killed = await stop_process.invoke(ctx, {"pid": stubborn.pid, "signal": "KILL"})
    assert killed.gone and killed.signal == "KILL"
    assert await asyncio.wait_for(stubborn.wait(), 20) == -9


async def test_vital_processes_are_refused() -> None:
    ctx = make_ctx()
    cases = [
        (1, "only single processes above 1"),
        (0, "only single processes above 1"),
        (-5, "only single processes above 1"),
        (os.getpid(), "nightshift itself"),
    ]
    if os.getppid() > 1:  # an orphaned test run's parent is init, refused as pid 1 above
        cases.append((os.getppid(), "nightshift's parent"))
    for pid, why in cases:
        with pytest.raises(PolicyDeniedError, match=why):
            await stop_process.invoke(ctx, {"pid": pid, "signal": "KILL"})
    assert psutil.Process().is_running()


async def test_kernel_threads_are_refused() -> None:
    kernel = next(
        (p for p in psutil.process_iter() if p.pid > 2 and remediation._is_kernel_thread(p)), None
    )
    if kernel is None:
        pytest.skip("no kernel thread is visible here (a PID namespace)")
    with pytest.raises(PolicyDeniedError, match="kernel thread"):
        await stop_process.invoke(make_ctx(), {"pid": kernel.pid})
    assert kernel.is_running()


async def test_unknown_pids_and_signals_are_clear_errors() -> None:
    unused = max(psutil.pids()) + 10_000
    with pytest.raises(ToolError, match=f"no process with pid {unused}"):
        await stop_process.invoke(make_ctx(), {"pid": unused})
    with pytest.raises(ToolError, match="signal"):
        await stop_process.invoke(make_ctx(), {"pid": unused, "signal": "STOP"})


# -- clean_directory ----------------------------------------------------------------------------


def aged(path: Path, days: float, size: int = 1000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    when = (NOW - timedelta(days=days)).timestamp()
    os.utime(path, (when, when))
    return path


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    """old.log, sub/old2.log (10 days), new.log (1 day), old.txt (10 days), an old symlink."""
    root = tmp_path / "cache"
    aged(root / "old.log", 10, size=1500)
    aged(root / "sub" / "old2.log", 10, size=2500)
    aged(root / "new.log", 1)
    aged(root / "old.txt", 10)
    outside = aged(tmp_path / "precious.log", 30)
    (root / "link.log").symlink_to(outside)
    when = (NOW - timedelta(days=20)).timestamp()
    os.utime(root / "link.log", (when, when), follow_symlinks=False)
    os.utime(root / "sub", (when, when))
    return root


async def test_old_matching_files_are_removed_and_nothing_else(cache: Path) -> None:
    ctx = make_ctx(clock=ManualClock(NOW), clean_dirs=[cache])
    result = await clean_directory.invoke(
        ctx, {"path": str(cache), "older_than_days": 7, "pattern": "*.log"}
    )
    assert isinstance(result, CleanResult)
    assert (result.files_removed, result.bytes_freed, result.newer_kept) == (2, 4000, 1)
    assert sorted(result.removed) == [str(cache / "old.log"), str(cache / "sub" / "old2.log")]
    assert (result.failed, result.complete, result.note) == (0, True, None)
    assert listing(cache) == ["link.log", "new.log", "old.txt", "sub"]
    assert (cache.parent / "precious.log").read_bytes() == b"x" * 1000


async def test_a_dry_run_removes_nothing(cache: Path) -> None:
    ctx = make_ctx(clock=ManualClock(NOW), clean_dirs=[cache])
    arguments = {"path": str(cache), "older_than_days": 5, "dry_run": True}
    result = await clean_directory.invoke(ctx, arguments)
    assert (result.dry_run, result.files_removed, result.bytes_freed) == (True, 3, 5000)
    assert (cache / "old.log").exists() and (cache / "old.txt").exists()


async def test_the_daemons_own_state_is_never_cleaned(cache: Path) -> None:
    """A clean_dir holding the state directory (say /var/lib): the database stays."""
    ctx = make_ctx(clock=ManualClock(NOW), clean_dirs=[cache])
    assert isinstance(ctx.settings, Settings)
    ctx.settings.state.dir = cache / "sub"
    result = await clean_directory.invoke(ctx, {"path": str(cache), "older_than_days": 7})
    assert (cache / "sub" / "old2.log").exists()
    assert str(cache / "sub" / "old2.log") not in result.removed
    assert "deny_paths skipped" in (result.note or "")


async def test_a_directory_below_a_clean_dir_may_be_cleaned(cache: Path) -> None:
    ctx = make_ctx(clock=ManualClock(NOW), clean_dirs=[cache])
    result = await clean_directory.invoke(ctx, {"path": str(cache / "sub"), "older_than_days": 7})
    assert result.removed == (str(cache / "sub" / "old2.log"),)
    assert (cache / "old.log").exists()


async def test_paths_outside_clean_dirs_are_refused(cache: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    aged(outside / "victim.log", 100)
    (cache / "escape").symlink_to(outside)
    ctx = make_ctx(clock=ManualClock(NOW), clean_dirs=[cache])
    for path, shown in [
        (outside, "elsewhere is not one of"),
        (cache / "escape", f"resolves to {outside}"),
        (cache / ".." / "elsewhere", "is not one of"),
        (Path(f"{cache}-sibling"), "is not one of"),
    ]:
        with pytest.raises(PolicyDeniedError, match=r"\[incidents.remediation\] clean_dirs") as e:
            await clean_directory.invoke(ctx, {"path": str(path), "older_than_days": 1})
        assert shown in str(e.value)
    assert (outside / "victim.log").exists()
    nothing = make_ctx(clock=ManualClock(NOW))
    with pytest.raises(PolicyDeniedError, match="clean_dirs is empty"):
        await clean_directory.invoke(nothing, {"path": str(cache), "older_than_days": 1})


async def test_symlinked_subdirectories_are_not_followed(cache: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    aged(outside / "victim.log", 100)
    (cache / "sub" / "escape").symlink_to(outside, target_is_directory=True)
    ctx = make_ctx(clock=ManualClock(NOW), clean_dirs=[cache])
    result = await clean_directory.invoke(ctx, {"path": str(cache), "older_than_days": 7})
    assert str(outside / "victim.log") not in result.removed
    assert (outside / "victim.log").exists() and (cache / "sub" / "escape").is_symlink()


async def test_bad_clean_arguments_are_clear_errors(cache: Path) -> None:
    ctx = make_ctx(clock=ManualClock(NOW), clean_dirs=[cache])
    for days in (0, -1, float("nan")):
        with pytest.raises(ToolError, match="older_than_days must be a number more than 0"):
            await clean_directory.invoke(ctx, {"path": str(cache), "older_than_days": days})
    assert (cache / "new.log").exists()
    with pytest.raises(ToolError, match="matches file names"):
        await clean_directory.invoke(
            ctx, {"path": str(cache), "older_than_days": 1, "pattern": "sub/*.log"}
        )
    with pytest.raises(ToolError, match="not absolute"):
        await clean_directory.invoke(ctx, {"path": "cache", "older_than_days": 1})
    with pytest.raises(ToolError, match="is not a directory"):
        await clean_directory.invoke(ctx, {"path": str(cache / "old.txt"), "older_than_days": 1})


# -- the tool set -------------------------------------------------------------------------------


def test_remediation_tools_are_privileged_and_not_in_the_default_registry() -> None:
    assert [t.name for t in TOOLS] == ["restart_service", "stop_process", "clean_directory"]
    assert all(t.tier is Tier.PRIVILEGED and t.classify is None for t in TOOLS)
    signal = stop_process.schema()["function"]["parameters"]["properties"]["signal"]
    assert signal["enum"] == ["TERM", "KILL", "INT", "HUP"] and signal["description"]
    offered = set(default_registry().names())
    assert not offered & {t.name for t in [*TOOLS, *evidence.TOOLS]}
