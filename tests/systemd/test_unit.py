"""The unit file as systemd itself reads it: `systemd-analyze verify` and `security`.

The unit is rendered into tmp_path with this interpreter as the executable, because verify
checks that the ExecStart= binary exists and is executable. User=nightshift is kept even where
that user does not exist: verify does not resolve users (they are looked up only when the
service starts), so no sysusers setup is needed here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.cli.service import UNIT_NAME, render_unit
from daemon.config import ApiSettings, RuntimeSettings
from daemon.runtime.http_guard import connection_cap

# 2.0 before the read-only tools' sandbox: bubblewrap needs user, mount, pid and net
# namespaces, the mount/pivot_root/capset system calls, and a /proc without systemd's
# ProtectKernelTunables/ProtectKernelLogs masks (see the unit's comments): 0.7 more.
MAX_EXPOSURE = 3.0


@pytest.fixture(scope="module")
def analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.skip("systemd-analyze is not installed (CI installs systemd)")
    return path


@pytest.fixture
def unit_path(tmp_path: Path) -> Path:
    path = tmp_path / UNIT_NAME
    path.write_text(render_unit(sys.executable))
    return path


def directives(text: str) -> dict[str, list[str]]:
    """Key -> values in order; systemd allows a key more than once."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def seconds(value: str) -> float:
    """A systemd time span such as 45, 45s, 1min 30s."""
    units = {"": 1, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600, "ms": 0.001}
    return sum(
        float(number) * units[unit] for number, unit in re.findall(r"(\d+)\s*([a-z]*)", value)
    )


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def test_verify_is_clean(analyze: str, unit_path: Path) -> None:
    result = run(analyze, "verify", str(unit_path))

    # Unknown keys and bad values are only warnings with exit status 0: stderr must be empty.
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_verify_would_catch_a_typo(analyze: str, unit_path: Path) -> None:
    """The clean-stderr check above is meaningful: a misspelt key shows up there."""
    unit_path.write_text(unit_path.read_text().replace("WatchdogSec=", "WatchdogSecs="))

    result = run(analyze, "verify", str(unit_path))

    assert "WatchdogSecs" in result.stderr


def test_security_exposure_is_low(analyze: str, unit_path: Path) -> None:
    threshold = str(round(MAX_EXPOSURE * 10))  # the CLI threshold is on the 0-100 scale
    result = run(analyze, "security", "--offline=yes", f"--threshold={threshold}", str(unit_path))

    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE
    assert result.returncode == 0, result.stdout


def test_lifecycle_settings(unit_path: Path) -> None:
    unit = directives(unit_path.read_text())

    assert unit["Type"] == ["notify"]
    assert unit["NotifyAccess"] == ["main"]
    assert seconds(unit["WatchdogSec"][0]) > 0
    assert unit["Restart"] == ["on-failure"]
    assert "78" in unit["RestartPreventExitStatus"][0].split()
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    # SIGTERM must reach the daemon alone, and systemd must wait out the default drain.
    assert unit["KillMode"] == ["mixed"]
    assert seconds(unit["TimeoutStopSec"][0]) > RuntimeSettings().drain_timeout_seconds


def test_open_file_limit_leaves_room_under_the_connection_cap(unit_path: Path) -> None:
    """The default 1024 descriptors would cap the API at 1024 - FD_RESERVE connections."""
    (limit,) = directives(unit_path.read_text())["LimitNOFILE"]
    assert int(limit) >= 65536
    assert (
        connection_cap(ApiSettings().max_connections, int(limit)) == ApiSettings().max_connections
    )


def test_sandbox_keeps_what_the_daemon_needs(unit_path: Path) -> None:
    unit = directives(unit_path.read_text())

    assert unit["User"] == ["nightshift"]
    assert set(unit["SupplementaryGroups"][0].split()) == {"adm", "systemd-journal"}
    assert unit["StateDirectory"] == ["nightshift"]
    assert unit["ConfigurationDirectory"] == ["nightshift"]
    assert set(unit["RestrictAddressFamilies"][0].split()) == {
        "AF_UNIX",
        "AF_INET",
        "AF_INET6",
        "AF_NETLINK",
    }
    # psutil must see every process and the global /proc files.
    assert "ProtectProc" not in unit and "ProcSubset" not in unit
    assert "DynamicUser" not in unit
    # Every LoadCredential names a credential-store entry, never an absolute path: a missing
    # absolute path fails the start (243/CREDENTIALS), a missing store entry is skipped.
    assert all(not value.split(":", 1)[1].startswith("/") for value in unit["LoadCredential"])


def _syscall_group(analyze: str, group: str) -> set[str]:
    out = run(analyze, "syscall-filter", group).stdout
    names: set[str] = set()
    for line in out.splitlines()[1:]:
        word = line.strip()
        if not word or word.startswith("#"):
            continue
        names |= _syscall_group(analyze, word) if word.startswith("@") else {word}
    return names


def _allowed_syscalls(analyze: str, lines: list[str]) -> set[str]:
    """SystemCallFilter= lines in order: the first allow list, then ~ removes and others add."""
    allowed: set[str] = set()
    for line in lines:
        invert = line.startswith("~")
        names: set[str] = set()
        for word in line.lstrip("~").split():
            names |= _syscall_group(analyze, word) if word.startswith("@") else {word}
        allowed = allowed - names if invert else allowed | names
    return allowed


def test_the_tool_sandbox_passes_the_units_filters(analyze: str, unit_path: Path) -> None:
    """bubblewrap, run as the service would (a plain user, no new privileges), makes only the
    system calls and creates only the namespaces the unit allows (traced with strace)."""
    from daemon.agent import sandbox
    from daemon.config import Settings

    if shutil.which("strace") is None or shutil.which("setpriv") is None:
        pytest.skip("strace and setpriv are needed to trace bubblewrap")
    status = sandbox.probe()
    if not status.available:
        pytest.skip(f"no sandbox on this machine: {status.detail}")
    unit = directives(unit_path.read_text())
    argv = sandbox.wrap(status, ["/bin/true"], sandbox.hidden_paths(Settings()))
    drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--no-new-privs"]
    if os.getuid() != 0:
        drop = []
    result = run(*drop, "strace", "-f", "-qq", *argv)  # the trace goes to stderr
    if result.returncode != 0 and "ptrace" in result.stderr:
        pytest.skip(f"strace cannot trace here: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr
    text = result.stderr
    used = set(re.findall(r"^(?:\[pid\s+\d+\] |\d+\s+)?([a-z_0-9]+)\(", text, re.MULTILINE))
    allowed = _allowed_syscalls(analyze, unit["SystemCallFilter"])
    assert used - allowed == set(), "refused by SystemCallFilter="
    namespaces = {flag.lower() for flag in re.findall(r"CLONE_NEW([A-Z]+)", text)}
    names = {"ns": "mnt", "user": "user", "pid": "pid", "net": "net", "ipc": "ipc",
             "uts": "uts", "cgroup": "cgroup"}  # fmt: skip
    assert {names[n] for n in namespaces} <= set(unit["RestrictNamespaces"][0].split())
    # Their masks over /proc/sys and /proc/kmsg make the kernel refuse bubblewrap a fresh /proc
    # (tests/agent/test_sandbox.py shows the probe failing closed under such masks).
    assert "ProtectKernelTunables" not in unit and "ProtectKernelLogs" not in unit
