"""Process tools: the busiest processes, and one process in detail."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

import psutil

from daemon.agent.tools._shared import ToolGate
from daemon.agent.tools.base import Tier, Tool, ToolContext, tool
from daemon.core.errors import ToolError
from daemon.core.redact import redact

__all__ = ["ChildProcess", "ProcessDetails", "ProcessInfo", "ProcessList", "TOOLS"]

log = logging.getLogger(__name__)

CMDLINE_CHARS = 200
MAX_LIMIT = 200
# How long per-process CPU use is measured over (psutil needs two readings).
CPU_SAMPLE_SECONDS = 0.25
_ATTRS = ["pid", "name", "username", "memory_info", "status", "create_time", "cmdline"]

T = TypeVar("T")

PROCESSES_GATE = ToolGate("list_processes")


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessInfo:
    """One line of a process listing; None where the OS refused to tell."""

    pid: int
    name: str
    user: str | None
    cpu_percent: float | None
    rss_mb: float | None
    status: str | None
    started: datetime | None
    cmdline: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessList:
    """The top processes and how many there were in all (after the name filter)."""

    total: int
    sort_by: str
    processes: tuple[ProcessInfo, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ChildProcess:
    pid: int
    name: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessDetails:
    """One process in detail; None where the OS refused to tell (usually another user's)."""

    pid: int
    ppid: int | None
    name: str | None
    exe: str | None
    cmdline: str | None
    user: str | None
    status: str | None
    started: datetime | None
    cpu_percent: float | None
    rss_mb: float | None
    vms_mb: float | None
    memory_percent: float | None
    num_threads: int | None
    open_files_count: int | None
    connections_count: int | None
    cwd: str | None
    nice: int | None
    children: tuple[ChildProcess, ...]


def _mb(value: int | None) -> float | None:
    return None if value is None else round(value / 1_048_576, 1)


def _started(create_time: float | None) -> datetime | None:
    return None if create_time is None else datetime.fromtimestamp(create_time, UTC)


def _cmdline(parts: list[str] | None, name: str, limit: int) -> str:
    text = " ".join(parts) if parts else f"[{name}]"  # kernel threads have no command line
    text = redact(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _matches(info: dict[str, Any], needle: str) -> bool:
    name = str(info.get("name") or "").lower()
    cmdline = " ".join(info.get("cmdline") or []).lower()
    return needle in name or needle in cmdline


def _prime() -> list[tuple[psutil.Process, dict[str, Any]]]:
    """Read every process and start its CPU measurement (psutil needs a baseline reading).

    ``as_dict`` rather than ``process_iter(attrs).info``: psutil shares cached Process objects
    between threads, and another caller's process_iter would overwrite ``.info`` under us.
    """
    procs = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            info = proc.as_dict(_ATTRS)  # AccessDenied fields are None
            proc.cpu_percent(None)
            procs.append((proc, info))
    return procs


def _collect(
    procs: list[tuple[psutil.Process, dict[str, Any]]],
    sort_by: str,
    limit: int,
    name_filter: str | None,
) -> ProcessList:
    needle = name_filter.lower() if name_filter else None
    rows: list[ProcessInfo] = []
    for proc, info in procs:
        if needle and not _matches(info, needle):
            continue
        try:
            cpu: float | None = proc.cpu_percent(None)
        except (psutil.AccessDenied, psutil.ZombieProcess):
            cpu = None
        except psutil.NoSuchProcess:
            continue  # exited while we measured
        memory = info.get("memory_info")
        name = info.get("name") or "?"
        rows.append(
            ProcessInfo(
                pid=proc.pid,
                name=name,
                user=info.get("username"),
                cpu_percent=cpu,
                rss_mb=_mb(memory.rss if memory else None),
                status=info.get("status"),
                started=_started(info.get("create_time")),
                cmdline=_cmdline(info.get("cmdline"), name, CMDLINE_CHARS),
            )
        )
    if sort_by == "cpu":
        rows.sort(key=lambda row: (row.cpu_percent or 0.0, row.rss_mb or 0.0), reverse=True)
    else:
        rows.sort(key=lambda row: (row.rss_mb or 0.0, row.cpu_percent or 0.0), reverse=True)
    return ProcessList(total=len(rows), sort_by=sort_by, processes=tuple(rows[:limit]))


@tool(tier=Tier.READ_ONLY)
async def list_processes(
    ctx: ToolContext,
    sort_by: Literal["cpu", "memory"] = "memory",
    limit: int = 15,
    name_filter: str | None = None,
) -> ProcessList:
    """List the processes using the most memory or CPU, with owner, status and command line.

    Args:
        sort_by: "memory" (resident memory) or "cpu" (CPU use over a quarter second).
        limit: How many processes to return, 1 to 200.
        name_filter: Only processes whose name or command line contains this text
            (case-insensitive), e.g. "nginx".
    """
    limit = max(1, min(limit, MAX_LIMIT))
    async with PROCESSES_GATE.slot(ctx):  # each call reads every process in /proc twice
        procs = await asyncio.to_thread(_prime)
        await asyncio.sleep(CPU_SAMPLE_SECONDS)
        return await asyncio.to_thread(_collect, procs, sort_by, limit, name_filter)


def _field(getter: Callable[[], T]) -> T | None:
    """One attribute of a live process, or None if the OS refuses to tell us."""
    try:
        return getter()
    except (psutil.AccessDenied, psutil.ZombieProcess):
        return None


def _inspect(pid: int) -> ProcessDetails:
    proc = psutil.Process(pid)
    cpu = _field(lambda: proc.cpu_percent(interval=CPU_SAMPLE_SECONDS))
    with proc.oneshot():
        memory = _field(proc.memory_info)
        name = _field(proc.name)
        cmdline = _field(proc.cmdline)
        open_files = _field(proc.open_files)
        connections = _field(proc.net_connections)
        memory_percent = _field(proc.memory_percent)
        return ProcessDetails(
            pid=pid,
            ppid=_field(proc.ppid),
            name=name,
            exe=_field(proc.exe),
            cmdline=None if cmdline is None else _cmdline(cmdline, name or "?", 2000),
            user=_field(proc.username),
            status=_field(proc.status),
            started=_started(_field(proc.create_time)),
            cpu_percent=cpu,
            rss_mb=_mb(memory.rss if memory else None),
            vms_mb=_mb(memory.vms if memory else None),
            memory_percent=None if memory_percent is None else round(memory_percent, 2),
            num_threads=_field(proc.num_threads),
            open_files_count=None if open_files is None else len(open_files),
            connections_count=None if connections is None else len(connections),
            cwd=_field(proc.cwd),
            nice=_field(proc.nice),
            children=tuple(
                ChildProcess(pid=child.pid, name=_child_name(child))
                for child in _field(proc.children) or []
            ),
        )


def _child_name(child: psutil.Process) -> str | None:
    try:
        name: str = child.name()
    except psutil.Error:
        return None
    return name


@tool(tier=Tier.READ_ONLY)
async def inspect_process(ctx: ToolContext, pid: int) -> ProcessDetails:
    """Show one process in detail: command, owner, memory, CPU, open files, connections, children.

    Args:
        pid: The process id, e.g. from list_processes.
    """
    if pid < 1:
        raise ToolError(f"no process with pid {pid}")
    try:
        return await asyncio.to_thread(_inspect, pid)
    except psutil.NoSuchProcess:
        raise ToolError(
            f"no process with pid {pid} (it may have exited; list_processes shows live ones)"
        ) from None


TOOLS: list[Tool] = [list_processes, inspect_process]
