"""The tool policy: which paths tools may read, how risky a command is, and what to do about it.

Pure functions of (arguments, ``[policy]`` settings); the only I/O is resolving symlinks. The
executor asks ``tool.tier_for(...)``, then :func:`decide`, and only then runs the tool:

    READ_ONLY (sandboxed), WRITE          → ALLOW
    READ_ONLY without a sandbox           → as PRIVILEGED (fails closed)
    PRIVILEGED and exactly auto-approved  → ALLOW
    PRIVILEGED and unattended             → DENY (never wait for a person who is not there)
    PRIVILEGED otherwise                  → NEEDS_APPROVAL
"""

from __future__ import annotations

import logging
import os
import shlex
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path

from daemon.agent._options import SPECS, UnknownOption, parse
from daemon.agent.sandbox import covers
from daemon.agent.settings import PolicySettings
from daemon.agent.tools.base import Tier
from daemon.core.errors import PolicyDeniedError

__all__ = [
    "Decision",
    "check_read_path",
    "classify_command",
    "decide",
    "is_auto_approved",
    "parse_command",
]

log = logging.getLogger(__name__)

# Characters a shell would interpret. Commands never run through a shell, so these are plain
# arguments, but a command that contains them was probably meant for one: treat it as risky.
SHELL_METACHARACTERS = frozenset("|;&`$()<>\n\r")

# Always privileged, whatever the config lists: they delete, kill, escalate, power off, or run
# another command (so "timeout 5 rm -rf /" cannot borrow the tier of "timeout").
PRIVILEGED_FLOOR = frozenset({
    "sudo", "su", "doas", "pkexec", "rm", "shred", "wipefs", "kill", "pkill", "killall", "dd",
    "mkfs", "shutdown", "reboot", "halt", "poweroff", "sh", "bash", "dash", "zsh", "ksh",
    "busybox", "env", "xargs", "timeout", "nice", "nohup", "setsid", "stdbuf", "ionice",
    "chroot", "nsenter", "init", "telinit",
})  # fmt: skip

# find actions that delete files, write files or run commands.
FIND_ACTIONS = frozenset(
    {"-delete", "-exec", "-execdir", "-ok", "-okdir", "-fprint", "-fprint0", "-fprintf", "-fls"}
)

# Verbs of `ip` that change the network; ip accepts any prefix, so "ip addr a" means add.
_IP_VERBS = ("add", "append", "change", "delete", "flush", "prepend", "replace", "restore",
             "save", "set", "exec")  # fmt: skip
_SYSTEMCTL_POWER = frozenset({
    "poweroff", "reboot", "halt", "kexec", "suspend", "hibernate", "hybrid-sleep", "rescue",
    "emergency", "isolate", "soft-reboot",
})  # fmt: skip


class Decision(StrEnum):
    """What the executor does with one tool call."""

    ALLOW = "allow"
    NEEDS_APPROVAL = "needs-approval"
    DENY = "deny"


def check_read_path(path: str, policy: PolicySettings, *, hidden: Sequence[str] = ()) -> Path:
    """Resolve ``path`` (following symlinks) and return it if tools may read it.

    Raises PolicyDeniedError when the path is relative, resolves outside every
    ``[policy] read_paths`` entry, or starts with a ``[policy] deny_paths`` entry or a
    ``hidden`` one (the daemon's state and credential directories). A deny entry covers every
    path that starts with it, so ``/etc/shadow`` also covers ``/etc/shadow-`` and
    ``/etc/shadow.bak``. This is the first filter; the sandbox is the boundary.
    """
    if "\x00" in path:
        raise PolicyDeniedError(f"path {path!r} contains a NUL byte")
    if not os.path.isabs(path):
        raise PolicyDeniedError(
            f"path {path!r} is not absolute: give the full path, e.g. /var/log/syslog"
        )
    resolved = os.path.realpath(path)
    shown = path if resolved == path else f"{path} (resolves to {resolved})"
    for entry in policy.deny_paths:
        if any(_starts_with(candidate, root) for root in {entry, os.path.realpath(entry)}
               for candidate in (path, resolved)):  # fmt: skip
            raise PolicyDeniedError(
                f"reading {shown} is denied: it is covered by {entry}, listed in [policy] "
                "deny_paths; an operator can change [policy] deny_paths to allow it"
            )
    for entry in hidden:
        if _starts_with(resolved, entry) or _starts_with(path, entry):
            raise PolicyDeniedError(
                f"reading {shown} is denied: {entry} holds nightshift's own state or "
                "credentials, which no tool may read"
            )
    if not any(_is_under(resolved, os.path.realpath(root)) for root in policy.read_paths):
        allowed = ", ".join(policy.read_paths) or "(none)"
        raise PolicyDeniedError(
            f"reading {shown} is not allowed: it is not under any of [policy] read_paths "
            f"({allowed}); an operator can add its directory to [policy] read_paths"
        )
    return Path(resolved)


def _starts_with(path: str, entry: str) -> bool:
    return covers(entry, path)


def parse_command(command: str | Sequence[str]) -> list[str]:
    """Split a command string like a POSIX shell would (without expanding anything).

    Raises ValueError for unbalanced quotes.
    """
    if isinstance(command, str):
        return shlex.split(command)
    return [str(arg) for arg in command]


def classify_command(
    command: str | Sequence[str], policy: PolicySettings, *, hidden: Sequence[str] = ()
) -> Tier:
    """The tier of running ``command`` (a string or an argv list) without a shell.

    READ_ONLY when the argv starts with a ``[policy] read_only_commands`` entry, WRITE when it
    starts with a ``write_commands`` entry (WRITE wins if both match), else PRIVILEGED. Commands
    in the hard floor (sudo, rm, kill, shells, …), ``find -delete/-exec``, mutating arguments
    (``ip addr add``, ``ss -D FILE``, ``journalctl --vac=1``: long options are resolved as the
    program would), unknown long options of the commands we have tables for, shell
    metacharacters and unparseable strings are always PRIVILEGED; so is a read-only command
    whose file arguments (``cat FILE``, ``date -f FILE``, ``wc --files0-from=FILE``) fail the
    read policy or fall under ``hidden``. This is a first filter: read-only commands run in the
    sandbox, which is the boundary.
    """
    raw = [command] if isinstance(command, str) else list(command)
    if any(SHELL_METACHARACTERS.intersection(arg) for arg in raw):
        return Tier.PRIVILEGED
    try:
        argv = parse_command(command)
    except ValueError:
        return Tier.PRIVILEGED
    if not argv or _hits_floor(argv):
        return Tier.PRIVILEGED
    if _matches_any(argv, policy.write_commands):
        return Tier.WRITE
    if _matches_any(argv, policy.read_only_commands):
        return Tier.READ_ONLY if _paths_allowed(argv, policy, hidden) else Tier.PRIVILEGED
    return Tier.PRIVILEGED


# Read-only commands without an option table that open the files they are given.
FILE_READERS = frozenset({"less", "more", "zcat"})


def _paths_allowed(argv: list[str], policy: PolicySettings, hidden: Sequence[str]) -> bool:
    """Whether every file the command would read passes the read policy."""
    program = Path(argv[0]).name
    spec = SPECS.get(program)
    if spec is None:
        paths = [a for a in argv[1:] if not a.startswith("-")] if program in FILE_READERS else []
    else:
        parsed = parse(spec, argv[1:])  # UnknownOption was refused by _hits_floor already
        paths = [value for name, value in parsed.options if name in spec.reads and value]
        if spec.paths_are_positional:
            positional = parsed.positional
            if spec.pattern_first and not parsed.names() & {"--regexp", "--file"}:
                positional = positional[1:]
            paths += [arg for arg in positional if arg != "-"]
    for arg in paths:
        candidate = arg if arg.startswith("/") else str(Path("/") / arg)  # commands run in /
        try:
            check_read_path(candidate, policy, hidden=hidden)
        except PolicyDeniedError:
            return False
    return True


def is_auto_approved(command: str | Sequence[str], policy: PolicySettings) -> bool:
    """Whether ``command`` is exactly one of ``[policy] auto_approve`` (compared as argv)."""
    try:
        argv = parse_command(command)
    except ValueError:
        return False
    if not argv:
        return False
    for entry in policy.auto_approve:
        try:
            if shlex.split(entry) == argv:
                return True
        except ValueError:
            log.warning("ignoring unparseable [policy] auto_approve entry %r", entry)
    return False


def decide(
    tier: Tier, *, unattended: bool, auto_approved: bool, sandboxed: bool = True
) -> Decision:
    """Whether a call of ``tier`` may run now, needs a person, or is refused.

    Without a sandbox (``sandboxed=False``) the read-only tier fails closed: it is treated as
    privileged, so it needs a person (and is denied at once in unattended runs).
    """
    if tier is Tier.READ_ONLY and not sandboxed:
        tier = Tier.PRIVILEGED
    if tier is not Tier.PRIVILEGED or auto_approved:
        return Decision.ALLOW
    return Decision.DENY if unattended else Decision.NEEDS_APPROVAL


def _is_under(path: str, root: str) -> bool:
    root = root.rstrip("/")
    return path == root or path.startswith(root + "/") or not root


def _hits_floor(argv: list[str]) -> bool:
    program = os.path.basename(argv[0])
    if program in PRIVILEGED_FLOOR or program.startswith("mkfs."):
        return True
    return _mutates(program, argv[1:])


def _mutates(program: str, args: list[str]) -> bool:
    """Arguments that make a usually read-only command change the host (checked even when the
    command is listed in read_only_commands: "ip addr" must not cover "ip addr add")."""
    spec = SPECS.get(program)
    if spec is not None:
        try:
            parsed = parse(spec, args)
        except UnknownOption:
            return True  # the program would refuse it, or our table is out of date: ask
        if parsed.names() & spec.writes:
            return True
    flags = _flags(args)
    positional = [arg for arg in args if not arg.startswith("-")]
    match program:
        case "find":
            return bool(FIND_ACTIONS.intersection(args))
        case "mount":  # listing mounts is fine, mounting is not
            return not set(args) <= {"-l", "--show-labels"}
        case "ip":
            return any(verb.startswith(arg) for arg in positional[1:] for verb in _IP_VERBS)
        case "date":  # "date 010112002026" sets the clock
            return any(len(arg) >= 8 and arg.replace(".", "").isdigit() for arg in positional)
        case "systemctl":  # "systemctl reboot" is as final as "reboot"
            return bool(_SYSTEMCTL_POWER.intersection(positional))
        case "hostname":  # "hostname NAME" renames the host
            return bool(positional) or bool(flags & {"-F", "--file", "-b", "--boot"})
    return False


def _flags(args: list[str]) -> set[str]:
    """Options as written, long ones without "=value", short clusters split ("-tK" → -t, -K)."""
    flags: set[str] = set()
    for arg in args:
        if arg.startswith("--"):
            flags.add(arg.split("=", 1)[0])
        elif arg.startswith("-") and len(arg) > 1:
            flags.add(arg)
            flags.update(f"-{char}" for char in arg[1:])
    return flags


def _matches_any(argv: list[str], entries: Sequence[str]) -> bool:
    for entry in entries:
        try:
            prefix = shlex.split(entry)
        except ValueError:
            log.warning("ignoring unparseable [policy] command entry %r", entry)
            continue
        if prefix and argv[: len(prefix)] == prefix:
            return True
    return False
