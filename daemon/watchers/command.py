"""Runs a check program on an interval (no shell) and reports its exit code and output.

Each run emits, labelled ``check=<name>``: command_exit_code (-1 on timeout), command_ok (1 when
the exit code is ``expect_exit`` and ``expect_output``, if set, is found in the output) and
command_output (text: the last 4 KB of stdout and stderr, interleaved as written). The program
runs in its own session; on timeout its whole process group is killed. Output is read in
chunks and only a bounded tail is kept, however much the program writes. A run ends when the
output closes and the program has exited: a background child still holding the output open
keeps the run going until the timeout kills the group.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from dataclasses import dataclass
from datetime import datetime

from pydantic import Field, field_validator

from daemon.core.alerts import Observation
from daemon.core.clock import Clock
from daemon.core.patterns import compile_pattern, search_text
from daemon.core.section import Section, check_regex, split_argv
from daemon.watchers.base import Emit, ErrorReporter
from daemon.watchers.polling import PollingWatcher, Sleep

log = logging.getLogger(__name__)

OUTPUT_TEXT_BYTES = 4096  # the tail reported as command_output
MATCH_TAIL_BYTES = 65536  # the tail expect_output is searched in
READ_CHUNK_BYTES = 65536
KILL_WAIT_SECONDS = 5.0  # how long to wait for a killed group's leader to be reaped


class CommandCheckSettings(Section):
    """A program run on an interval whose exit code (and output) says whether all is well."""

    name: str = Field(min_length=1)  # the label value: check=<name>
    command: list[str]  # argv, run without a shell; a string is split like a shell would
    interval_seconds: float = Field(default=60.0, ge=0.05)  # from one run's start to the next
    timeout_seconds: float = Field(default=10.0, gt=0)  # then the process group is killed
    expect_exit: int = 0  # the exit code that means OK
    expect_output: str | None = None  # regex that must be found in the output's last 64 KB

    _split = field_validator("command", mode="before")(lambda cls, value: split_argv(value))

    @field_validator("command")
    @classmethod
    def _not_empty(cls, value: list[str]) -> list[str]:
        if not value or not value[0]:
            raise ValueError("command is empty: give the program and its arguments")
        return value

    @field_validator("expect_output")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        return None if value is None else check_regex(value)


@dataclass(frozen=True, kw_only=True, slots=True)
class CommandResult:
    """One run: the exit code (-1 on timeout) and the tail of its output."""

    exit_code: int  # negative: killed by that signal
    output_tail: bytes
    timed_out: bool = False


class TailBuffer:
    """Keeps only the last ``limit`` bytes written to it."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._data = bytearray()
        self.total = 0

    def write(self, chunk: bytes) -> None:
        self.total += len(chunk)
        self._data += chunk
        if len(self._data) > self._limit:
            del self._data[: len(self._data) - self._limit]

    def value(self) -> bytes:
        return bytes(self._data)


async def run_command(
    argv: list[str], timeout: float, extra_env: dict[str, str] | None = None
) -> CommandResult:
    """Run ``argv`` in its own session with a scrubbed environment (no daemon secrets) plus
    ``extra_env``; raises OSError when it cannot be started."""
    from daemon.core.environment import child_environment

    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
        env={**child_environment(), **(extra_env or {})},
    )
    tail = TailBuffer(MATCH_TAIL_BYTES)
    try:
        async with asyncio.timeout(timeout):
            assert proc.stdout is not None
            while chunk := await proc.stdout.read(READ_CHUNK_BYTES):
                tail.write(chunk)
            code = await proc.wait()
    except TimeoutError:
        await _kill_group(proc)
        return CommandResult(exit_code=-1, output_tail=tail.value(), timed_out=True)
    finally:
        if proc.returncode is None:  # cancelled mid-run: leave no orphans behind
            await asyncio.shield(_kill_group(proc))
    return CommandResult(exit_code=code, output_tail=tail.value())


async def _kill_group(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # the session leader's pid is the group id
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), KILL_WAIT_SECONDS)


def _start_failure(argv: list[str], exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"cannot run {argv[0]!r}: no such program (give a full path or fix PATH)"
    if isinstance(exc, PermissionError):
        return f"cannot run {argv[0]!r}: permission denied (is it executable?)"
    return f"cannot run {argv[0]!r}: {exc.strerror or exc}"


class CommandCheckWatcher(PollingWatcher):
    """Emits command_exit_code, command_ok and command_output after every run; runs start
    ``interval_seconds`` apart."""

    from_start = True

    def __init__(
        self,
        settings: CommandCheckSettings,
        clock: Clock | None = None,
        *,
        sleep: Sleep | None = None,
    ) -> None:
        super().__init__(settings.interval_seconds, clock, sleep)
        self.settings = settings
        self.source = f"command:{settings.name}"
        self.name = f"watcher.{self.source}"
        self._regex = compile_pattern(settings.expect_output) if settings.expect_output else None

    async def poll(self, emit: Emit, errors: ErrorReporter) -> None:
        await self.check(emit, errors)

    async def check(self, emit: Emit, errors: ErrorReporter) -> None:
        """One run of the program and its observations."""
        settings = self.settings
        at = self._clock.now()
        try:
            result = await run_command(settings.command, settings.timeout_seconds)
        except OSError as exc:
            reason = _start_failure(settings.command, exc)
            if errors.failing.get("") != reason:
                log.warning("%s: %s", self.name, reason)
            errors.failed(reason)
            self._out(emit, at, "command_ok", 0.0)
            return
        errors.ok()
        if result.timed_out:
            self._out(emit, at, "command_exit_code", -1.0)
            self._out(emit, at, "command_ok", 0.0)
            timed_out = f"timed out after {settings.timeout_seconds:g}s"
            self._out(emit, at, "command_output", None, timed_out)
            return
        output = result.output_tail.decode(errors="replace")
        ok = result.exit_code == settings.expect_exit and (
            self._regex is None or search_text(self._regex, output) is not None
        )
        self._out(emit, at, "command_exit_code", float(result.exit_code))
        self._out(emit, at, "command_ok", 1.0 if ok else 0.0)
        text = result.output_tail[-OUTPUT_TEXT_BYTES:].decode(errors="replace")
        self._out(emit, at, "command_output", None, text)

    def _out(
        self, emit: Emit, at: datetime, metric: str, value: float | None, text: str = ""
    ) -> None:
        emit(
            Observation(
                source=self.source,
                metric=metric,
                at=at,
                value=value,
                text=text,
                labels={"check": self.settings.name},
            )
        )
