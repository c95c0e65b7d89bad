"""The kernel-enforced sandbox of the read-only tier: bubblewrap, probed once per mode.

Inside it the whole filesystem is read-only; the state directory, the credential directories
and every ``[policy] deny_paths`` entry (with its siblings sharing the prefix, e.g.
``/etc/shadow-``) are empty and unreadable; ``/proc`` shows only the sandboxed processes; there
is no network unless the command is a network check; no capabilities, no further user
namespaces, a new session, and the sandbox dies with the daemon. When no sandbox can be set up
the read-only tier fails closed: the policy asks a person first (see ``policy.decide``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import stat
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from daemon.agent.settings import AgentConfig

__all__ = [
    "ALWAYS_HIDDEN",
    "SandboxStatus",
    "covering_entry",
    "covers",
    "current",
    "hidden_paths",
    "probe",
    "status_for",
    "wrap",
]

log = logging.getLogger(__name__)

# Credential stores of systemd (every unit's LoadCredential= directory, and the sources).
ALWAYS_HIDDEN = ("/run/credentials", "/etc/credstore", "/etc/credstore.encrypted")
PROBE_TIMEOUT_SECONDS = 10.0
_BASE = (
    "--ro-bind", "/", "/",
    "--dev", "/dev",
    "--proc", "/proc",
    "--unshare-user", "--disable-userns",
    "--unshare-pid",
    "--die-with-parent", "--new-session",
    "--cap-drop", "ALL",
    "--chdir", "/",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class SandboxStatus:
    """Whether read-only tools can run sandboxed, and the bwrap binary or why not."""

    available: bool
    detail: str
    bwrap: str | None = None

    def describe(self) -> str:
        """One line for `nightshift status` and `doctor`."""
        if self.available:
            return f"available ({self.detail})"
        return f"unavailable ({self.detail}); read-only tools need approval"


_cache: dict[tuple[str, str], SandboxStatus] = {}


def status_for(settings: AgentConfig) -> SandboxStatus:
    """The sandbox status for these settings, probing bubblewrap once (blocking, ~10 ms)."""
    from daemon.core.environment import child_environment

    path = child_environment()["PATH"]
    key = (settings.policy.sandbox, path)
    found = _cache.get(key)
    if found is None:
        if settings.policy.sandbox == "off":
            found = SandboxStatus(False, 'turned off by [policy] sandbox = "off"')
        else:
            found = probe(path=path)
        _cache[key] = found
        log.info("sandbox: %s", found.describe())
    return found


async def current(settings: AgentConfig) -> SandboxStatus:
    """:func:`status_for` without blocking the event loop on the first probe."""
    from daemon.core.environment import child_environment

    key = (settings.policy.sandbox, child_environment()["PATH"])
    cached = _cache.get(key)
    return cached if cached is not None else await asyncio.to_thread(status_for, settings)


def probe(bwrap: str = "bwrap", *, path: str | None = None) -> SandboxStatus:
    """Start ``bwrap <sandbox> true`` once and say whether it worked, and why not."""
    from daemon.core.environment import child_environment

    env = child_environment()
    program = shutil.which(bwrap, path=path or env["PATH"])
    if program is None:
        return SandboxStatus(
            False, f"{bwrap} not found on PATH; install bubblewrap (Debian: apt install bubblewrap)"
        )
    try:
        result = subprocess.run(  # noqa: S603 - fixed argv, no shell
            [program, *_BASE, "--unshare-net", "--", "true"],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_SECONDS,
            env=env,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return SandboxStatus(False, f"{program} could not be started: {exc}")
    if result.returncode != 0:
        why = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
        return SandboxStatus(
            False,
            f"{program} cannot set up a sandbox: {why} (user, mount, pid, ipc and net "
            "namespaces must be allowed: check user.max_user_namespaces and, under systemd, "
            "RestrictNamespaces= and SystemCallFilter=)",
        )
    version = subprocess.run(  # noqa: S603
        [program, "--version"], capture_output=True, text=True, env=env, check=False
    ).stdout.strip()
    return SandboxStatus(True, f"{version or 'bubblewrap'} at {program}", program)


def hidden_paths(settings: AgentConfig) -> tuple[str, ...]:
    """What no tool may read: the state directory, credential directories and deny_paths,
    each as written and resolved, without trailing slashes; see :func:`covers`."""
    entries: list[str] = [str(settings.state_dir), *ALWAYS_HIDDEN, *settings.policy.deny_paths]
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    if credentials:
        entries.append(credentials)
    if settings.state.secrets_dir is not None:
        entries.append(str(settings.state.secrets_dir))
    found = {p.rstrip("/") or "/" for e in entries if e for p in (e, os.path.realpath(e))}
    return tuple(sorted(found))


# A name that continues a denied one with one of these is a copy of it: shadow-, shadow.bak.
BACKUP_MARKS = frozenset("-~._+,#")


def covers(entry: str, path: str) -> bool:
    """Whether the deny (or hidden) ``entry`` covers ``path``: the entry itself, anything below
    it, and its backup-style siblings (``/etc/shadow`` covers ``/etc/shadow-`` and
    ``/etc/shadow.bak/x`` but not ``/etc/shadows``)."""
    entry = entry.rstrip("/")
    if not entry:
        return True
    if not path.startswith(entry):
        return False
    rest = path[len(entry) :]
    return not rest or rest[0] == "/" or rest[0] in BACKUP_MARKS


def covering_entry(path: str, hidden: Iterable[str]) -> str | None:
    """The hidden entry that covers ``path``, if any."""
    return next((entry for entry in hidden if covers(entry, path)), None)


def wrap(
    status: SandboxStatus, argv: Sequence[str], hidden: Sequence[str], *, network: bool = False
) -> list[str]:
    """``argv`` run inside the sandbox; ``network`` keeps the host's network namespace."""
    if not status.available or status.bwrap is None:
        raise RuntimeError(f"sandbox {status.describe()}")
    args = [status.bwrap, *_BASE]
    if not network:
        args.append("--unshare-net")
    args.extend(_hiding(hidden))
    return [*args, "--", *argv]


def _hiding(hidden: Sequence[str]) -> list[str]:
    """Mounts that empty every existing path starting with a hidden entry: an empty read-only
    tmpfs over a directory, an unopenable /dev/null (the bind is nodev) over anything else."""
    targets: set[str] = set()
    for entry in hidden:
        if entry in ("/", "/proc", "/dev"):
            continue  # the policy layer refuses these; the sandbox needs them
        parent, base = os.path.split(entry)
        try:
            names = [name for name in os.listdir(parent) if covers(base, name)]
        except OSError:
            names = [base] if os.path.lexists(entry) else []
        targets.update(os.path.join(parent, name) for name in names)
    args: list[str] = []
    covered: list[str] = []
    for target in sorted(targets):
        if any(target.startswith(done + "/") for done in covered):
            continue
        try:
            mode = os.lstat(target).st_mode
        except OSError:
            continue
        if stat.S_ISLNK(mode):
            continue  # its target is what is read; that is hidden if it is denied
        if stat.S_ISDIR(mode):
            args += ["--tmpfs", target, "--remount-ro", target]
            covered.append(target)
        else:
            args += ["--ro-bind", "/dev/null", target]
    return args
