"""Remediation tools: restart a service, signal a process, prune old files.

All PRIVILEGED: the executor asks a person (or an exact ``[[incidents.remediation.auto]]``
entry) before any of them runs, so they are offered to remediation only. Having been approved,
they do not repeat run_command's unattended guard; they do check their own arguments.

restart_service and stop_process have a read-only ``verify`` probe: after a restart of the
daemon, a call whose outcome was not recorded is checked (did the unit re-enter "active" after
the call began; is the process gone) rather than run again.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import math
import os
import re
import signal as signals
import stat
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import psutil

from daemon.agent import sandbox
from daemon.agent.tools._walk import Walk, deny_roots
from daemon.agent.tools.base import Tier, Tool, ToolContext, Verdict, tool
from daemon.agent.tools.commands import CommandResult, run_argv
from daemon.core.errors import PolicyDeniedError, ToolError
from daemon.core.redact import redact

__all__ = ["CleanResult", "SignalResult", "TOOLS"]

log = logging.getLogger(__name__)

SERVICE_NAME = re.compile(r"^[A-Za-z0-9@._:-]+$")
MAX_SERVICE_CHARS = 256
# How long stop_process waits for the process to go after each signal.
GRACE_SECONDS = {"TERM": 5.0, "INT": 5.0, "KILL": 5.0, "HUP": 1.0}
_POLL_SECONDS = 0.05
_PF_KTHREAD = 0x00200000  # /proc/<pid>/stat flags bit of kernel threads
CMDLINE_CHARS = 300
CLEAN_BUDGET = 200_000  # entries looked at per clean_directory call
SHOWN_PATHS = 20


@dataclass(frozen=True, slots=True, kw_only=True)
class SignalResult:
    """Which process got which signal, and whether it is gone."""

    pid: int
    name: str
    cmdline: str
    user: str | None
    signal: str
    gone: bool
    status: str | None  # while still running, e.g. "sleeping"
    waited_seconds: float


@dataclass(frozen=True, slots=True, kw_only=True)
class CleanResult:
    """What clean_directory removed (or, with dry_run, would remove)."""

    path: str
    pattern: str
    older_than_days: float
    dry_run: bool
    files_removed: int
    bytes_freed: int  # apparent sizes; space held by open files or other hard links stays used
    newer_kept: int  # matching files not old enough
    failed: int  # files that could not be removed
    scanned_entries: int
    complete: bool
    note: str | None
    removed: tuple[str, ...]  # the first paths removed


# -- restart_service ----------------------------------------------------------------------------


@tool(tier=Tier.PRIVILEGED)
async def restart_service(ctx: ToolContext, service: str, reason: str = "") -> CommandResult:
    """Restart a service with the configured restart command (systemctl restart by default).

    Args:
        service: The unit name, e.g. "nginx" or "nginx.service" or "getty@tty1.service".
        reason: Why it should be restarted, in a few words; shown to the person asked to approve.
    """
    if not SERVICE_NAME.fullmatch(service) or len(service) > MAX_SERVICE_CHARS:
        raise ToolError(
            f"invalid service name {service!r}: use only letters, digits and @ . _ : - "
            f"(at most {MAX_SERVICE_CHARS} characters), e.g. nginx.service"
        )
    if service.startswith("-"):
        raise ToolError(f"invalid service name {service!r}: it must not start with '-'")
    template = ctx.settings.incidents.remediation.restart_command
    if not any("{service}" in part for part in template):
        raise ToolError(
            "[incidents.remediation] restart_command has no {service} placeholder, so it "
            "cannot name the service; an operator can fix it, e.g. "
            '["systemctl", "restart", "{service}"]'
        )
    argv = [part.replace("{service}", service) for part in template]
    result = await run_argv(ctx, argv, timeout_seconds=None, reason=reason)
    log.info("restart_service %s for %s exited %d", service, ctx.actor, result.exit_code)
    return result


async def _restarted(ctx: ToolContext, arguments: dict[str, object], since: datetime) -> Verdict:
    """Did the unit re-enter "active" after ``since``? Asks ``systemctl show`` (read-only);
    only when the restart command is systemctl's, else it cannot tell."""
    service = str(arguments.get("service", ""))
    template = ctx.settings.incidents.remediation.restart_command
    if os.path.basename(template[0]) != "systemctl" or not SERVICE_NAME.fullmatch(service):
        return Verdict(None, "the restart command is not systemctl's: its effect cannot be read")
    argv = [template[0], "show", "--property=ActiveState,ActiveEnterTimestampMonotonic",
            "--", service]  # fmt: skip
    # outside the sandbox, as the restart itself: systemctl needs the system bus; the argv is
    # ours and only reads
    shown = await run_argv(ctx, argv, reason="verify an interrupted restart")
    values = dict(line.split("=", 1) for line in shown.stdout.splitlines() if "=" in line)
    state = values.get("ActiveState", "")
    try:
        entered = int(values.get("ActiveEnterTimestampMonotonic", "")) / 1e6
    except ValueError:
        return Verdict(None, f"systemctl show gave no start time for {service} ({state or '?'})")
    began = time.monotonic() - max((ctx.clock.now() - since).total_seconds(), 0.0)
    if state != "active":
        return Verdict(None, f"{service} is {state or 'in an unknown state'}")
    if entered >= began - 1.0:  # a second's slack for the clocks' rounding
        return Verdict(True, f"{service} is active, (re)started after the call began")
    return Verdict(False, f"{service} has been active since before the call: not restarted")


restart_service = restart_service.with_verify(_restarted)


# -- stop_process -------------------------------------------------------------------------------


def _is_kernel_thread(proc: psutil.Process) -> bool:
    try:
        with open(f"/proc/{proc.pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        return bool(int(fields[6]) & _PF_KTHREAD)  # flags: field 9, the 7th after ")"
    except (OSError, IndexError, ValueError):
        try:
            return bool(proc.pid == 2 or proc.ppid() == 2)  # kthreadd and its children
        except psutil.Error:
            return False


def _describe(proc: psutil.Process) -> tuple[str, str, str | None]:
    with proc.oneshot():
        try:
            name = proc.name()
        except psutil.Error:
            name = "?"
        try:
            cmdline = " ".join(proc.cmdline()) or f"[{name}]"
        except psutil.Error:
            cmdline = f"[{name}]"
        try:
            user: str | None = proc.username()
        except (psutil.Error, KeyError):
            user = None
    cmdline = redact(cmdline)
    if len(cmdline) > CMDLINE_CHARS:
        cmdline = cmdline[: CMDLINE_CHARS - 1] + "…"
    return name, cmdline, user


def _state(proc: psutil.Process) -> str | None:
    """The process's status, or None once it is gone (a zombie has finished: it is gone)."""
    try:
        status = str(proc.status())
    except psutil.NoSuchProcess:
        return None
    return None if status == psutil.STATUS_ZOMBIE else status


@tool(tier=Tier.PRIVILEGED)
async def stop_process(
    ctx: ToolContext,
    pid: int,
    signal: Literal["TERM", "KILL", "INT", "HUP"] = "TERM",
    reason: str = "",
) -> SignalResult:
    """Send a signal to one process (TERM by default) and report whether it went away.

    Args:
        pid: The process id, e.g. from list_processes.
        signal: TERM (ask to stop), KILL (force), INT (interrupt) or HUP (often: reload).
        reason: Why it should be stopped, in a few words; shown to the person asked to approve.
    """
    if pid <= 1:
        raise PolicyDeniedError(f"refusing to signal pid {pid}: only single processes above 1")
    own = {os.getpid(): "nightshift itself", os.getppid(): "nightshift's parent"}
    if pid in own:
        raise PolicyDeniedError(f"refusing to signal pid {pid}: it is {own[pid]}")
    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        raise ToolError(f"no process with pid {pid} (it may have exited already)") from None
    if _is_kernel_thread(proc):
        raise PolicyDeniedError(f"refusing to signal pid {pid}: it is a kernel thread")
    name, cmdline, user = _describe(proc)
    try:
        proc.send_signal(signals.Signals[f"SIG{signal}"])  # checks the pid was not reused
    except psutil.NoSuchProcess:
        raise ToolError(f"pid {pid} ({name}) exited before it could be signalled") from None
    except psutil.AccessDenied:
        owner = f" (it belongs to {user})" if user else ""
        raise ToolError(
            f"permission denied signalling pid {pid} ({name}){owner}: the nightshift service "
            "user may not signal it"
        ) from None
    log.info("stop_process SIG%s to %d (%s) for %s: %s", signal, pid, name, ctx.actor, reason)
    started = ctx.clock.monotonic()
    status = _state(proc)
    try:
        async with asyncio.timeout(GRACE_SECONDS[signal]):
            while status is not None:
                await asyncio.sleep(_POLL_SECONDS)
                status = _state(proc)
    except TimeoutError:
        pass
    return SignalResult(
        pid=pid,
        name=name,
        cmdline=cmdline,
        user=user,
        signal=signal,
        gone=status is None,
        status=status,
        waited_seconds=round(ctx.clock.monotonic() - started, 2),
    )


async def _stopped(ctx: ToolContext, arguments: dict[str, object], since: datetime) -> Verdict:
    """Is the process gone? (Still running: the signal may have been sent and ignored, or
    never sent; that a probe cannot tell.)"""
    pid = arguments.get("pid")
    if not isinstance(pid, int):
        return Verdict(None, "no pid")
    try:
        proc = psutil.Process(pid)
        started = proc.create_time()
    except psutil.NoSuchProcess:
        return Verdict(True, f"pid {pid} is gone")
    if started > since.timestamp():
        return Verdict(True, f"pid {pid} is gone (the number now belongs to a newer process)")
    return Verdict(None, f"pid {pid} is still running ({_state(proc) or 'state unknown'})")


stop_process = stop_process.with_verify(_stopped)


# -- clean_directory ----------------------------------------------------------------------------


def _cleanable(path: str, ctx: ToolContext) -> str:
    """The resolved ``path`` if it is one of clean_dirs or below one; a clear error otherwise."""
    configured = ctx.settings.incidents.remediation.clean_dirs
    if not configured:
        raise PolicyDeniedError(
            "no directory may be cleaned: [incidents.remediation] clean_dirs is empty; an "
            "operator can list the directories clean_directory may prune there"
        )
    if "\x00" in path or not os.path.isabs(path):
        raise ToolError(f"path {path!r} is not absolute: give the full path, e.g. /var/tmp/app")
    resolved = os.path.realpath(path)
    for entry in configured:
        root = os.path.realpath(entry).rstrip("/") or "/"
        if resolved == root or resolved.startswith(root.rstrip("/") + "/"):
            break
    else:
        shown = path if resolved == path else f"{path} (resolves to {resolved})"
        allowed = ", ".join(str(entry) for entry in configured)
        raise PolicyDeniedError(
            f"{shown} is not one of [incidents.remediation] clean_dirs ({allowed}) nor below "
            "one; an operator can add it there"
        )
    if not Path(resolved).is_dir():
        what = "does not exist" if not os.path.exists(resolved) else "is not a directory"
        raise ToolError(f"{path} {what}")
    return resolved


@dataclass(slots=True)
class _Tally:
    removed: list[str]
    count: int = 0
    freed: int = 0
    newer: int = 0
    failed: int = 0


def _clean(root: str, pattern: str, cutoff: float, dry_run: bool, walk: Walk) -> _Tally:
    """Remove old regular files matching ``pattern`` below ``root`` (blocking)."""
    tally = _Tally(removed=[])
    for entry in walk.entries(root):
        if not stat.S_ISREG(entry.info.st_mode) or not fnmatch.fnmatchcase(entry.name, pattern):
            continue
        if entry.info.st_mtime >= cutoff:
            tally.newer += 1
            continue
        if not dry_run:
            try:
                # Check again just before: the name may now be something else.
                now = os.stat(entry.name, dir_fd=entry.dir_fd, follow_symlinks=False)
                if not stat.S_ISREG(now.st_mode) or now.st_mtime >= cutoff:
                    continue
                os.unlink(entry.name, dir_fd=entry.dir_fd)  # unlink never follows a symlink
            except FileNotFoundError:
                continue
            except OSError as exc:
                tally.failed += 1
                log.warning("clean_directory: cannot remove %s: %s", entry.path, exc)
                continue
        tally.count += 1
        tally.freed += entry.info.st_size
        if len(tally.removed) < SHOWN_PATHS:
            tally.removed.append(entry.path)
    return tally


@tool(tier=Tier.PRIVILEGED)
async def clean_directory(
    ctx: ToolContext, path: str, older_than_days: float, pattern: str = "*", dry_run: bool = False
) -> CleanResult:
    """Delete old files (by modification time) below a directory listed in clean_dirs.

    Only regular files are removed, never directories; symlinks are neither followed nor
    removed; the walk stays on one filesystem.

    Args:
        path: Absolute path of one of the configured clean_dirs, or a directory below one.
        older_than_days: Remove files last modified more than this many days ago, e.g. 7.
        pattern: Shell-style pattern the file name must match, e.g. "*.log" or "core.*".
        dry_run: Only report what would be removed.
    """
    root = _cleanable(path, ctx)
    if not 0 < older_than_days < math.inf:  # NaN would make every file look old
        raise ToolError("older_than_days must be a number more than 0 (fresh files are kept)")
    if not pattern or "/" in pattern:
        raise ToolError(f"invalid pattern {pattern!r}: it matches file names, e.g. '*.log'")
    cutoff = ctx.clock.now().timestamp() - older_than_days * 86400
    # Never the daemon's own state or credentials, nor deny_paths, whatever clean_dirs holds.
    walk = Walk(budget=CLEAN_BUDGET, deny=deny_roots(sandbox.hidden_paths(ctx.settings)))
    tally = await asyncio.to_thread(_clean, root, pattern, cutoff, dry_run, walk)
    log.info(
        "clean_directory %s %r older than %g days for %s: %d files, %d bytes%s",
        root, pattern, older_than_days, ctx.actor, tally.count, tally.freed,
        " (dry run)" if dry_run else "",
    )  # fmt: skip
    notes = walk.notes()
    if walk.cut:
        notes.append("[run it again to continue]")
    if tally.failed:
        notes.append(f"[{tally.failed} files could not be removed (see the daemon log)]")
    return CleanResult(
        path=root,
        pattern=pattern,
        older_than_days=older_than_days,
        dry_run=dry_run,
        files_removed=tally.count,
        bytes_freed=tally.freed,
        newer_kept=tally.newer,
        failed=tally.failed,
        scanned_entries=walk.scanned,
        complete=not walk.cut,
        note=" ".join(notes) or None,
        removed=tuple(tally.removed),
    )


async def _cleaned(ctx: ToolContext, arguments: dict[str, object], since: datetime) -> Verdict:
    """Is anything the interrupted clean would have removed still there? A dry walk with the
    call's own cutoff (its age counted from when the call began): nothing left means it had
    finished; something left means it had not, and running it again (asked again like any
    privileged call) removes only what is left."""
    try:
        root = _cleanable(str(arguments.get("path", "")), ctx)
        days = float(str(arguments.get("older_than_days", "")))
    except (ToolError, PolicyDeniedError, ValueError) as exc:
        return Verdict(None, f"cannot check: {exc}")
    pattern = str(arguments.get("pattern", "*"))
    if not 0 < days < math.inf or not pattern or "/" in pattern:
        return Verdict(None, "cannot check: its arguments were not valid")
    if arguments.get("dry_run") is True:
        return Verdict(False, "a dry run changes nothing: it runs again")
    walk = Walk(budget=CLEAN_BUDGET, deny=deny_roots(sandbox.hidden_paths(ctx.settings)))
    cutoff = since.timestamp() - days * 86400
    left = await asyncio.to_thread(_clean, root, pattern, cutoff, True, walk)
    if walk.cut:
        return Verdict(None, f"{root} has too many entries to check within the walk's budget")
    what = f"files matching {pattern!r} older than {days:g} days below {root}"
    if left.count == 0:
        return Verdict(True, f"no {what} are left: the clean had finished")
    return Verdict(False, f"{left.count} {what} are still there: it had not finished")


clean_directory = clean_directory.with_verify(_cleaned)

TOOLS: list[Tool] = [restart_service, stop_process, clean_directory]
