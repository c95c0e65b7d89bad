"""Shared bench helpers: start `nightshift run` and read its resource use from /proc."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def start_daemon(
    workdir: Path, config: Path | None = None, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], float]:
    """Start the daemon; return it and the seconds until it sent READY=1."""
    notify = workdir / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    sock.settimeout(30)
    args = [sys.executable, "-m", "daemon.cli.main", "run", "--state-dir", str(workdir / "state")]
    if config:
        args += ["--config", str(config)]
    full_env = {**os.environ, "NOTIFY_SOCKET": str(notify), "PYTHONPATH": str(ROOT), **(env or {})}
    started = time.perf_counter()
    log = (workdir / "daemon.log").open("ab")
    proc = subprocess.Popen(args, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    try:
        while b"READY=1" not in sock.recv(4096):
            pass
    finally:
        sock.close()
    return proc, time.perf_counter() - started


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def memory_kb(pid: int) -> dict[str, int]:
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, amount = line.split(":", 1)
        values[name.strip()] = int(amount.split()[0])
    return {"pss_kb": values["Pss"], "rss_kb": values["Rss"]}


def stop(proc: subprocess.Popen[bytes]) -> int:
    proc.terminate()
    return proc.wait(30)
