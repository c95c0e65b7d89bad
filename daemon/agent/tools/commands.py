"""The ``run_command`` tool: one command, no shell, bounded in time and output.

Its tier depends on the command (``classify=``): the executor asks the policy before calling
it. The tool still refuses privileged commands in unattended runs on its own (defence in depth).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from daemon.agent.policy import classify_command, is_auto_approved, parse_command
from daemon.agent.tools.base import Tier, Tool, ToolContext, tool
from daemon.errors import PolicyDeniedError, ToolError, ToolTimeoutError
from daemon.redact import redact

if TYPE_CHECKING:
    from daemon.config import Settings

__all__ = ["CommandResult", "TOOLS"]

log = logging.getLogger(__name__)

READ_CHUNK_BYTES = 64 * 1024
# Only these variables reach commands: the daemon's own environment may hold API keys.
PASSED_ENVIRONMENT = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ")
FIXED_ENVIRONMENT = {"SYSTEMD_PAGER": "", "PAGER": "cat", "SYSTEMD_COLORS": "0", "TERM": "dumb"}
_PARTIAL_CHARS = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandResult:
    """How a command ended and what it printed (capped; ``note`` says when)."""

    command: str
    exit_code: int
    stdout: str
    stderr: str
    duration_seconds: float
    truncated: bool
    note: str | None


class _Capture:
    """Collects stdout and stderr under one shared byte budget, draining (and dropping) the rest
    so a chatty command never blocks on a full pipe and memory stays bounded."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.remaining = limit
        self.total = 0
        self.stdout = bytearray()
        self.stderr = bytearray()

    async def drain(self, stream: asyncio.StreamReader | None, sink: bytearray) -> None:
        if stream is None:
            return
        while chunk := await stream.read(READ_CHUNK_BYTES):
            self.total += len(chunk)
            keep = chunk[: self.remaining]
            sink += keep
            self.remaining -= len(keep)

    @property
    def truncated(self) -> bool:
        return self.total > self.limit

    def text(self, sink: bytearray) -> str:
        return sink.decode("utf-8", errors="replace")


def _environment() -> dict[str, str]:
    env = {name: os.environ[name] for name in PASSED_ENVIRONMENT if name in os.environ}
    env.setdefault("PATH", os.defpath)
    env.update(FIXED_ENVIRONMENT)
    return env


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


async def _stop(proc: asyncio.subprocess.Process, readers: asyncio.Future[Any]) -> None:
    """Kill the command's whole process group and collect what is left."""
    _kill_group(proc.pid)
    readers.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await readers
    await proc.wait()


def _classify(arguments: dict[str, Any], settings: Settings) -> Tier:
    command = arguments.get("command")
    if not isinstance(command, str):
        return Tier.PRIVILEGED
    return classify_command(command, settings.policy)


@tool(tier=Tier.PRIVILEGED, classify=_classify)
async def run_command(
    ctx: ToolContext, command: str, timeout_seconds: float | None = None, reason: str = ""
) -> CommandResult:
    """Run one command on the host (no shell: pipes, redirects and $VARS are not interpreted).

    Args:
        command: The command line, e.g. "systemctl status nginx" or "df -h".
        timeout_seconds: Kill the command after this many seconds; defaults to (and cannot
            exceed) the configured limit.
        reason: Why you run it, in a few words; shown to the person asked to approve it.
    """
    policy = ctx.settings.policy
    tier = classify_command(command, policy)
    if ctx.unattended and tier is Tier.PRIVILEGED and not is_auto_approved(command, policy):
        raise PolicyDeniedError(
            f"{command!r} is privileged and this run is unattended, so it was not run; an "
            "operator can allow exactly this command in [policy] auto_approve"
        )
    try:
        argv = parse_command(command)
    except ValueError as exc:
        raise ToolError(f"cannot parse command {command!r}: {exc}") from None
    if not argv:
        raise ToolError("command is empty")
    limit = policy.command_timeout_seconds
    timeout = limit if timeout_seconds is None else min(timeout_seconds, limit)
    if timeout <= 0:
        raise ToolError("timeout_seconds must be more than 0")
    env = _environment()
    program = shutil.which(argv[0], path=env["PATH"])
    if program is None:
        raise ToolError(
            f"command not found: {argv[0]!r} is not an executable file on PATH ({env['PATH']})"
        )
    log.info(
        "run_command %r (%s) for %s: %s", redact(command), tier, ctx.actor, reason or ctx.reason
    )
    started = ctx.clock.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            program,
            *argv[1:],
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # its own process group, so a timeout kills its children
            env=env,
            cwd="/",
        )
    except OSError as exc:
        raise ToolError(f"cannot start {argv[0]!r}: {exc.strerror or exc}") from None
    capture = _Capture(policy.max_output_bytes)
    readers = asyncio.gather(
        capture.drain(proc.stdout, capture.stdout), capture.drain(proc.stderr, capture.stderr)
    )
    try:
        async with asyncio.timeout(timeout):
            await readers
            exit_code = await proc.wait()
    except TimeoutError:
        await _stop(proc, readers)
        raise ToolTimeoutError(_timeout_message(command, timeout, capture)) from None
    finally:
        if proc.returncode is None:  # cancelled from outside (e.g. the executor's timeout)
            await _stop(proc, readers)
    duration = ctx.clock.monotonic() - started
    log.info("run_command %r exited %d after %.2fs", redact(command), exit_code, duration)
    note = None
    if capture.truncated:
        note = (
            f"[output truncated: showing the first {capture.limit} of {capture.total} bytes "
            "([policy] max_output_bytes)]"
        )
    return CommandResult(
        command=command,
        exit_code=exit_code,
        stdout=redact(capture.text(capture.stdout), policy.redact_patterns),
        stderr=redact(capture.text(capture.stderr), policy.redact_patterns),
        duration_seconds=round(duration, 3),
        truncated=capture.truncated,
        note=note,
    )


def _timeout_message(command: str, timeout: float, capture: _Capture) -> str:
    message = f"{command!r} ran past its {timeout:g}s timeout; its process group was killed"
    for name, sink in (("stdout", capture.stdout), ("stderr", capture.stderr)):
        if sink:
            tail = capture.text(sink)[-_PARTIAL_CHARS:]
            message += f"\nlast {name} before the kill:\n{redact(tail)}"
    return message


TOOLS: list[Tool] = [run_command]
