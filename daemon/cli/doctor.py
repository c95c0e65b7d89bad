"""`nightshift doctor`: check config, state directory, database, daemon, LLM and permissions."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import psutil

from daemon.config import Settings
from daemon.core.redact import redact

OK, WARN, FAIL = "ok  ", "warn", "FAIL"
Report = Callable[[str, str, str], None]


async def run_doctor(settings: Settings, config_path: Path | None) -> int:
    """Print one line per check; exit 1 if anything failed."""
    results: list[tuple[str, str, str]] = []

    def report(level: str, name: str, detail: str) -> None:
        results.append((level, name, detail))
        print(redact(f"{level}  {name}: {detail}"))  # errors may quote URLs or headers

    report(OK, "config", f"{config_path or 'embedded defaults'} is valid")
    state_dir = settings.state_dir
    if not state_dir.exists():
        report(WARN, "state dir", f"{state_dir} does not exist yet (created at first run)")
    elif os.access(state_dir, os.R_OK | os.W_OK | os.X_OK):
        mode = oct(state_dir.stat().st_mode & 0o777)
        report(OK, "state dir", f"{state_dir} is writable (mode {mode})")
    else:
        report(FAIL, "state dir", f"{state_dir} is not writable by uid {os.getuid()}")
    await _check_database(settings, report)
    await _check_daemon(settings, report)
    await _check_llm(settings, report)
    _check_sandbox(settings, report)
    _check_processes(report)
    return 1 if any(level == FAIL for level, _, _ in results) else 0


async def _check_database(settings: Settings, report: Report) -> None:
    from daemon.core.errors import StoreError
    from memory.store import SqliteStore

    path = settings.database_path
    if not path.exists():
        report(WARN, "database", f"{path} not created yet (created at first run)")
        return
    try:
        async with await SqliteStore.open(path) as store:
            check = await store.check()
    except StoreError as exc:
        report(FAIL, "database", str(exc))
        return
    detail = ", ".join(f"{k} {v}" for k, v in check.items())
    report(OK, "database", f"{path}: {detail}")


async def _check_daemon(settings: Settings, report: Report) -> None:
    from daemon.cli.client import DaemonClient
    from daemon.core.errors import DaemonNotRunning

    try:
        async with DaemonClient(settings.socket_path, timeout=5) as client:
            status = await client.get("/v1/status")
    except DaemonNotRunning:
        report(WARN, "daemon", f"not running (no answer on {settings.socket_path})")
        return
    mode = oct(settings.socket_path.stat().st_mode & 0o777)
    level = OK if mode == "0o600" else FAIL
    report(level, "daemon", f"pid {status['pid']}, {status['health']}, socket mode {mode}")
    box = str(status.get("sandbox", "unknown"))
    report(OK if box.startswith("available") else WARN, "daemon sandbox", box)


async def _check_llm(settings: Settings, report: Report) -> None:
    available, reason = settings.agent_available
    if not available:
        report(WARN, "llm", reason)
        return
    from daemon.agent.llm import LlmClient
    from daemon.core.errors import NightshiftError

    client = LlmClient(settings.llm, settings.agent.budget)
    try:
        detail = await client.ping()
        report(OK, "llm", f"{settings.llm.base_url}: {detail}")
    except NightshiftError as exc:
        report(FAIL, "llm", f"{settings.llm.base_url}: {exc}")
    finally:
        await client.close()


def _check_sandbox(settings: Settings, report: Report) -> None:
    from daemon.agent.sandbox import status_for

    status = status_for(settings)
    report(OK if status.available else WARN, "sandbox", status.describe())


def _check_processes(report: Report) -> None:
    visible = readable = 0
    for process in psutil.process_iter(["username"]):
        visible += 1
        try:
            process.cmdline()
            readable += 1
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            pass
    level = OK if visible > 1 else WARN
    report(level, "processes", f"{visible} visible, {readable} with readable command lines")
