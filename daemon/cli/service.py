"""Install nightshift as a systemd service: the unit, its system user and its directories.

The canonical texts live here (``systemd/`` is not a Python package); the copies committed in
``systemd/`` are ``render_unit(DEFAULT_EXEC_PATH)``, ``SYSUSERS_CONF`` and ``TMPFILES_CONF``, and a
test keeps them identical.

Secrets come from systemd's credential store: ``LoadCredential=NAME:nightshift.NAME`` makes
systemd (as root, at start) copy ``/etc/credstore/nightshift.NAME`` to
``$CREDENTIALS_DIRECTORY/NAME``, the flat name the settings loader reads. A missing store entry
is skipped, so an unused secret (Slack on a Telegram-only host) does not stop the unit. Checked
with systemd 252: a missing absolute path fails the start (243/CREDENTIALS); a directory path
names every file ``ID_file``; a ``SetCredential=`` fallback would write an empty secret that
overrides the TOML value.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path
from typing import TextIO

__all__ = [
    "CREDENTIALS",
    "DEFAULT_EXEC_PATH",
    "SYSUSERS_CONF",
    "TMPFILES_CONF",
    "UNIT_NAME",
    "UNIT_TEMPLATE",
    "install_service",
    "render_unit",
]

UNIT_NAME = "nightshift.service"
DEFAULT_EXEC_PATH = "/opt/nightshift/venv/bin/nightshift"
CONFIG_PATH = "/etc/nightshift/config.toml"
CREDSTORE_DIR = "/etc/credstore"
EX_NOPERM = 77  # sysexits.h: the caller may not write the system directories

# Setting names (nested with "__") that are secrets; each is one LoadCredential= line below.
CREDENTIALS = (
    "llm__api_key",
    "api__webhook_token",
    "channels__slack__bot_token",
    "channels__slack__app_token",
    "channels__telegram__bot_token",
    "channels__matrix__access_token",
)

UNIT_TEMPLATE = """\
# nightshift: an always-on ops agent. Installed by `nightshift install-service`.
# Config: /etc/nightshift/config.toml; secrets: /etc/credstore/nightshift.<setting> (root, 0600);
# state: /var/lib/nightshift. Logs: journalctl -u nightshift.
[Unit]
Description=nightshift ops agent
Wants=network-online.target
After=network-online.target

[Service]
Type=notify
# Only the daemon itself may notify; commands it runs cannot fake READY=1 or watchdog pings.
NotifyAccess=main
ExecStart=__EXEC__
ExecReload=/bin/kill -HUP $MAINPID
# The daemon pings every WatchdogSec/2 from its event loop: a loop blocked for 30 s is killed
# (SIGABRT) and restarted.
WatchdogSec=30
Restart=on-failure
RestartSec=5
# 78 (EX_CONFIG) is a bad configuration: restarting cannot fix it.
RestartPreventExitStatus=78
# SIGTERM goes to the daemon alone, which drains in-flight work (runtime.drain_timeout_seconds,
# default 20 s) and stops its commands; whatever is left is killed after TimeoutStopSec.
KillMode=mixed
TimeoutStopSec=45
# Room for API connections (capped at api.max_connections, kept well below this), SQLite,
# watchers and child commands; past the limit the API refuses new connections with a 503.
LimitNOFILE=65536

User=__USER__
Group=__USER__
# adm reads /var/log, systemd-journal reads the whole journal.
SupplementaryGroups=adm systemd-journal
StateDirectory=nightshift
StateDirectoryMode=0750
ConfigurationDirectory=nightshift
ConfigurationDirectoryMode=0750
# A missing credential is skipped (relative names are looked up in /etc/credstore).
LoadCredential=llm__api_key:nightshift.llm__api_key
LoadCredential=api__webhook_token:nightshift.api__webhook_token
LoadCredential=channels__slack__bot_token:nightshift.channels__slack__bot_token
LoadCredential=channels__slack__app_token:nightshift.channels__slack__app_token
LoadCredential=channels__telegram__bot_token:nightshift.channels__telegram__bot_token
LoadCredential=channels__matrix__access_token:nightshift.channels__matrix__access_token
UMask=0077

# Hardening. Kept at their defaults on purpose: ProtectProc/ProcSubset (psutil must see every
# process and /proc/meminfo, /proc/stat), PrivateUsers (would hide other users' ids and the
# supplementary groups), PrivateNetwork/IPAddressDeny (LLM API and chat services).
# Child commands run unprivileged under these same restrictions.
# ProtectKernelTunables= and ProtectKernelLogs= are also left out on purpose: they mount over
# /proc/sys and /proc/kmsg, and the kernel then refuses bubblewrap (the sandbox of the
# read-only tools) a fresh /proc in its user namespace. Without capabilities the daemon cannot
# write kernel tunables or read the kernel log anyway, and inside the sandbox bubblewrap
# mounts /proc/sys read-only itself.
CapabilityBoundingSet=
AmbientCapabilities=
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=read-only
PrivateTmp=yes
PrivateDevices=yes
PrivateMounts=yes
PrivateIPC=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
# The sandbox of the read-only tools (bubblewrap) needs these; cgroup, ipc and uts stay refused.
RestrictNamespaces=user mnt pid net
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
# CPython has no JIT; a JIT-compiling child command (node, java) would fail here.
MemoryDenyWriteExecute=yes
RemoveIPC=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
# bubblewrap mounts the sandbox, pivots into it and drops its capabilities.
SystemCallFilter=mount umount2 pivot_root capset
# A refused system call fails with EPERM instead of killing the process.
SystemCallErrorNumber=EPERM
# AF_NETLINK: psutil's network interface and connection readings.
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK

[Install]
WantedBy=multi-user.target
"""

SYSUSERS_CONF = """\
# sysusers.d(5) for nightshift: install as /etc/sysusers.d/nightshift.conf, then run
# `systemd-sysusers`. A static system user (not DynamicUser=) so /var/lib/nightshift keeps a
# stable owner across restarts and upgrades.
u nightshift - "nightshift ops agent" /var/lib/nightshift
# Read /var/log (adm) and the whole journal (systemd-journal).
m nightshift adm
m nightshift systemd-journal
"""

TMPFILES_CONF = """\
# tmpfiles.d(5) for nightshift: install as /etc/tmpfiles.d/nightshift.conf, then run
# `systemd-tmpfiles --create /etc/tmpfiles.d/nightshift.conf` (after systemd-sysusers).
# The config directory: readable by the service's group, never writable by it.
d /etc/nightshift 0750 root nightshift -
# systemd's credential store, root only: systemd reads /etc/credstore/nightshift.NAME as root at
# start and hands the service a private copy as $CREDENTIALS_DIRECTORY/NAME.
d /etc/credstore 0700 root root -
"""


def render_unit(
    exec_path: str, *, user: str = "nightshift", extra_args: list[str] | None = None
) -> str:
    """The unit text running ``exec_path run --config CONFIG_PATH [extra_args]`` as ``user``.

    ``exec_path`` must be absolute; arguments are quoted and escaped for systemd.
    """
    if not os.path.isabs(exec_path):
        raise ValueError(f"exec_path must be absolute, got {exec_path!r}")
    if not user or any(ch.isspace() for ch in user):
        raise ValueError(f"invalid user name {user!r}")
    argv = [exec_path, "run", "--config", CONFIG_PATH, *(extra_args or [])]
    command = " ".join(_quote(arg) for arg in argv)
    return UNIT_TEMPLATE.replace("__EXEC__", command).replace("__USER__", user)


def install_service(
    *,
    exec_path: str | None = None,
    unit_dir: Path = Path("/etc/systemd/system"),
    sysusers_dir: Path = Path("/etc/sysusers.d"),
    tmpfiles_dir: Path = Path("/etc/tmpfiles.d"),
    dry_run: bool = False,
    out: TextIO = sys.stdout,
) -> int:
    """Write the unit, sysusers.d and tmpfiles.d files and print the next steps; 0 on success.

    ``dry_run`` prints the unit and writes nothing. Returns 77 (EX_NOPERM) when a target
    directory is not writable (not root), 1 for other failures, each with a message on ``out``.
    """
    path = exec_path or _default_exec_path()
    if path is None:
        print(
            "error: cannot find the nightshift executable next to the Python interpreter or on "
            "PATH; pass its absolute path (--exec-path /opt/nightshift/venv/bin/nightshift)",
            file=out,
        )
        return 1
    path = os.path.abspath(path)
    unit = render_unit(path)
    if dry_run:
        out.write(unit)
        return 0

    for warning in _exec_path_warnings(Path(path)):
        print(f"warning: {warning}", file=out)
    targets = [
        (unit_dir / UNIT_NAME, unit),
        (sysusers_dir / "nightshift.conf", SYSUSERS_CONF),
        (tmpfiles_dir / "nightshift.conf", TMPFILES_CONF),
    ]
    blocked = [str(target.parent) for target, _ in targets if not _writable_dir(target.parent)]
    if blocked:
        hint = " (run as root, e.g. with sudo)" if os.geteuid() != 0 else ""
        print(f"error: cannot write to {', '.join(blocked)}{hint}; nothing was written", file=out)
        return EX_NOPERM
    try:
        for target, text in targets:
            print(f"{_write_file(target, text)} {target}", file=out)
    except OSError as exc:
        print(f"error: {exc}", file=out)
        return EX_NOPERM if isinstance(exc, PermissionError) else 1
    out.write(_next_steps(sysusers_dir / "nightshift.conf", tmpfiles_dir / "nightshift.conf"))
    return 0


def _quote(arg: str) -> str:
    """One systemd command-line word: specifiers and variables escaped, quoted when needed."""
    if not arg or any(ch in arg for ch in "\n\r\0"):
        raise ValueError(f"cannot put {arg!r} on a systemd command line")
    escaped = arg.replace("%", "%%").replace("$", "$$")
    if any(ch.isspace() or ch in "\"'\\;" for ch in escaped):
        return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return escaped


def _default_exec_path() -> str | None:
    beside = Path(sys.executable).parent / "nightshift"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("nightshift")


def _exec_path_warnings(path: Path) -> list[str]:
    """Problems the service would hit running ``path`` as an unprivileged, sandboxed user."""
    if not (path.is_file() and os.access(path, os.X_OK)):
        return [f"{path} is not an executable file"]
    warnings = []
    # A venv script runs its interpreter, often a symlink into a home directory (pyenv).
    for candidate in [path, *_interpreter(path)]:
        if candidate.is_relative_to("/tmp") or candidate.is_relative_to("/var/tmp"):
            warnings.append(f"{candidate} is under /tmp or /var/tmp, hidden by PrivateTmp=yes")
        blocked = next(
            (p for p in [candidate, *candidate.parents] if not p.stat().st_mode & stat.S_IXOTH),
            None,
        )
        if blocked is not None:
            warnings.append(
                f"{blocked} is not searchable by other users: the nightshift user cannot run "
                f"{candidate}"
            )
    return warnings


def _interpreter(script: Path) -> list[Path]:
    """The resolved ``#!`` interpreter of ``script``, if it has one."""
    try:
        with script.open("rb") as handle:
            first = handle.readline(4096)
    except OSError:
        return []
    if not first.startswith(b"#!"):
        return []
    words = first[2:].decode(errors="replace").split()
    if not words or not os.path.isabs(words[0]):
        return []
    try:
        return [Path(words[0]).resolve(strict=True)]
    except OSError:
        return []


def _writable_dir(directory: Path) -> bool:
    """Whether ``directory``, or the nearest existing parent we would create it in, is writable."""
    for candidate in [directory, *directory.parents]:
        if candidate.exists():
            return candidate.is_dir() and os.access(candidate, os.W_OK | os.X_OK)
    return False


def _write_file(target: Path, text: str) -> str:
    """Atomically write ``text`` (mode 0644); return "wrote" or "unchanged"."""
    try:
        if target.read_text() == text:
            return "unchanged"
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise
    return "wrote"


def _next_steps(sysusers: Path, tmpfiles: Path) -> str:
    names = "\n".join(f"       {CREDSTORE_DIR}/nightshift.{name}" for name in CREDENTIALS)
    return f"""
Next steps (as root):
  1. systemd-sysusers {sysusers}
  2. systemd-tmpfiles --create {tmpfiles}
  3. Write the config to {CONFIG_PATH}, readable by the service:
       chown root:nightshift {CONFIG_PATH} && chmod 0640 {CONFIG_PATH}
  4. Put each secret you use in its own file (mode 0600, owner root), e.g.
       (umask 077; printf %s "$KEY" > {CREDSTORE_DIR}/nightshift.llm__api_key)
     Recognised files (missing ones are skipped):
{names}
  5. systemctl daemon-reload
  6. systemctl enable --now nightshift
  7. systemctl status nightshift; journalctl -u nightshift -f
"""
