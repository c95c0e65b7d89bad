"""The ``run_command`` tool: one command, no shell, bounded in time and output.

Its tier depends on the command (``classify=``): the executor asks the policy before calling
it. The tool still refuses privileged commands in unattended runs on its own (defence in depth).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import shutil
import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from daemon.agent import sandbox
from daemon.agent.policy import classify_command, is_auto_approved, parse_command
from daemon.agent.tools._shared import ToolGate
from daemon.agent.tools.base import Tier, Tool, ToolContext, tool
from daemon.core.environment import (
    _environment,
)
from daemon.core.errors import PolicyDeniedError, ToolError, ToolTimeoutError
from daemon.core.redact import redact

if TYPE_CHECKING:
    from daemon.agent.settings import AgentConfig

__all__ = ["CommandResult", "TOOLS", "run_argv"]

log = logging.getLogger(__name__)

# How long to wait for a killed command to be gone.
STOP_GRACE_SECONDS = 5.0
_PARTIAL_CHARS = 1000
_PARTIAL_LINES = 20


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


class _Capture(asyncio.Protocol):
    """One output pipe of the command, read into ``data`` up to a byte budget shared with the
    other pipe; the rest is dropped, so a chatty command never blocks and memory stays bounded.
    We own the read end, so closing it never depends on the child's transport."""

    def __init__(self, budget: list[int]) -> None:
        self.budget = budget  # [bytes left], shared by stdout and stderr
        self.data = bytearray()
        self.total = 0
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.write_fd: int | None = None
        self.transport: asyncio.BaseTransport | None = None

    @classmethod
    async def open(cls, stack: contextlib.AsyncExitStack, budget: list[int]) -> _Capture:
        capture = cls(budget)
        stack.callback(capture.close)
        read_fd, capture.write_fd = os.pipe()
        reader = os.fdopen(read_fd, "rb", buffering=0)
        try:
            capture.transport, _ = await asyncio.get_running_loop().connect_read_pipe(
                lambda: capture, reader
            )
        except BaseException:
            reader.close()
            raise
        return capture

    def close_write_end(self) -> None:
        if self.write_fd is not None:
            os.close(self.write_fd)
            self.write_fd = None

    def close(self) -> None:
        self.close_write_end()
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.total += len(data)
        keep = data[: self.budget[0]]
        self.data += keep
        self.budget[0] -= len(keep)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


async def _reap(proc: asyncio.subprocess.Process) -> None:
    """Kill the command's whole process group and wait (briefly) for the leader to go."""
    _kill_group(proc.pid)
    try:
        async with asyncio.timeout(STOP_GRACE_SECONDS):
            await proc.wait()
    except TimeoutError:
        log.warning("pid %d did not exit %gs after SIGKILL", proc.pid, STOP_GRACE_SECONDS)


# Commands that look at the network: their sandbox keeps the host's network namespace (`ss`
# and `ip` show the host's sockets and routes; a new namespace would show only its own).
NETWORK_COMMANDS = frozenset({
    "ss", "ip", "ping", "ping6", "curl", "wget", "dig", "host", "nslookup", "netstat",
    "traceroute", "tracepath", "mtr", "nc", "openssl", "resolvectl", "networkctl",
})  # fmt: skip


READ_ONLY_GATE = ToolGate("run_command")


def _classify(arguments: dict[str, Any], settings: AgentConfig) -> Tier:
    command = arguments.get("command")
    if not isinstance(command, str):
        return Tier.PRIVILEGED
    return classify_command(command, settings.policy, hidden=sandbox.hidden_paths(settings))


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
    tier = classify_command(command, policy, hidden=sandbox.hidden_paths(ctx.settings))
    box = await sandbox.current(ctx.settings)
    needs_person = tier is Tier.PRIVILEGED or (tier is Tier.READ_ONLY and not box.available)
    if ctx.unattended and needs_person and not is_auto_approved(command, policy):
        what = "privileged" if tier is Tier.PRIVILEGED else f"unsandboxed ({box.describe()})"
        raise PolicyDeniedError(
            f"{command!r} is {what} and this run is unattended, so it was not run; an "
            "operator can allow exactly this command in [policy] auto_approve"
        )
    try:
        argv = parse_command(command)
    except ValueError as exc:
        raise ToolError(f"cannot parse command {command!r}: {exc}") from None
    return await run_argv(
        ctx, argv, command=command, tier=tier, timeout_seconds=timeout_seconds, reason=reason
    )


async def run_argv(
    ctx: ToolContext,
    argv: list[str],
    *,
    command: str | None = None,
    tier: Tier = Tier.PRIVILEGED,
    timeout_seconds: float | None = None,
    reason: str = "",
) -> CommandResult:
    """Run ``argv`` as run_command does (no shell, own process group, scrubbed environment,
    capped output), without its unattended guard: for callers whose call the executor has
    already authorised (e.g. remediation tools run after a person's approval).

    ``command`` is how the call is shown (default: ``shlex.join(argv)``).
    """
    if not argv:
        raise ToolError("command is empty")
    shown = command if command is not None else shlex.join(argv)
    policy = ctx.settings.policy
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
    full = [program, *argv[1:]]
    where = "unsandboxed"
    if tier is Tier.READ_ONLY:
        box = await sandbox.current(ctx.settings)
        if box.available:  # else a person approved it (the executor fails closed without one)
            network = os.path.basename(program) in NETWORK_COMMANDS
            full = sandbox.wrap(box, full, sandbox.hidden_paths(ctx.settings), network=network)
            where = "sandboxed" + (", host network" if network else "")
    # The command only: the request text (ctx.reason) is a person's words and may hold anything.
    log.info("run_command %r (%s) for %s", redact(shown, policy.redact_patterns), tier, ctx.actor)
    log.debug("run_command %r runs %s", redact(shown), where)
    # Read-only commands (du, journalctl, find…) a few at a time; a person-approved one never
    # waits behind them. The wait shows in the step's duration, not the command's.
    gate = READ_ONLY_GATE.slot(ctx) if tier is Tier.READ_ONLY else contextlib.nullcontext()
    async with gate:
        started = ctx.clock.monotonic()
        exit_code, out, err = await _execute(
            shown, full[0], full, env, seconds=timeout, max_output=policy.max_output_bytes
        )
    duration = ctx.clock.monotonic() - started
    log.info(
        "run_command %r exited %d after %.2fs",
        redact(shown, policy.redact_patterns),
        exit_code,
        duration,
    )
    total = out.total + err.total
    truncated = total > policy.max_output_bytes
    note = None
    if truncated:
        note = (
            f"[output truncated: showing the first {policy.max_output_bytes} of {total} bytes "
            "([policy] max_output_bytes)]"
        )
    return CommandResult(
        command=redact(shown, policy.redact_patterns),
        exit_code=exit_code,
        stdout=redact(out.text(), policy.redact_patterns),
        stderr=redact(err.text(), policy.redact_patterns),
        duration_seconds=round(duration, 3),
        truncated=truncated,
        note=note,
    )


async def _execute(
    command: str,
    program: str,
    argv: list[str],
    env: dict[str, str],
    *,
    seconds: float,
    max_output: int,
) -> tuple[int, _Capture, _Capture]:
    """Run argv in its own session; on timeout or cancellation kill the whole group."""
    budget = [max_output]
    async with contextlib.AsyncExitStack() as stack:
        out = await _Capture.open(stack, budget)
        err = await _Capture.open(stack, budget)
        try:
            proc = await asyncio.create_subprocess_exec(
                program,
                *argv[1:],
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out.write_fd,
                stderr=err.write_fd,
                start_new_session=True,  # its own process group: a timeout kills its children
                env=env,
                cwd="/",
            )
        except OSError as exc:
            raise ToolError(f"cannot start {argv[0]!r}: {exc.strerror or exc}") from None
        finally:
            out.close_write_end()  # only the child writes now: EOF comes when it is done
            err.close_write_end()
        try:
            async with asyncio.timeout(seconds):
                exit_code = await proc.wait()
                await asyncio.gather(out.closed, err.closed)  # the rest of the output
        except TimeoutError:
            await _reap(proc)
            raise ToolTimeoutError(_timeout_message(command, seconds, out, err)) from None
        finally:
            if proc.returncode is None:  # cancelled from outside (e.g. the executor's timeout)
                await _reap(proc)
    return exit_code, out, err


def _timeout_message(command: str, timeout: float, out: _Capture, err: _Capture) -> str:
    message = f"{command!r} ran past its {timeout:g}s timeout; its process group was killed"
    for name, capture in (("stdout", out), ("stderr", err)):
        if capture.data:
            tail = "\n".join(capture.text().splitlines()[-_PARTIAL_LINES:])[-_PARTIAL_CHARS:]
            message += f"\nlast {name} before the kill:\n{redact(tail)}"
    return message


TOOLS: list[Tool] = [run_command]
