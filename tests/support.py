"""Helpers for tests: waiting on a condition, and running the real `nightshift` executable."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import signal
import socket
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

NIGHTSHIFT = [sys.executable, "-m", "daemon.cli.main"]
ROOT = Path(__file__).resolve().parent.parent


def write_config(path: Path, base_url: str | None, **sections: Mapping[str, object]) -> Path:
    """A TOML config pointing the LLM at ``base_url`` (None: no API key, agent off)."""
    lines = ["[llm]"]
    if base_url:
        lines += [f'base_url = "{base_url}"', 'api_key = "sk-test-0123456789abcdef"']
    lines += ["max_retries = 1", "retry_initial_seconds = 0.05", "retry_max_seconds = 0.2"]
    for name, values in sections.items():
        lines.append(f"[{name}]")
        for key, value in values.items():
            rendered = f'"{value}"' if isinstance(value, str) else str(value).lower()
            lines.append(f"{key} = {rendered}")
    path.write_text("\n".join(lines) + "\n")
    return path


async def eventually(check: Callable[[], object], timeout: float = 5.0, what: str = "") -> None:
    """Poll ``check`` (a function, or a coroutine function) until it holds (is truthy) or
    ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not await _holds(check):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what or 'condition'} not met within {timeout:g} s")
        await asyncio.sleep(0.02)


async def _holds(check: Callable[[], object]) -> bool:
    value = check()
    if inspect.isawaitable(value):
        value = await value
    return bool(value)


@dataclass
class Notifications:
    """A datagram socket standing in for systemd's NOTIFY_SOCKET."""

    path: Path
    sock: socket.socket = field(init=False)
    received: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.path.unlink(missing_ok=True)
        self.sock.bind(str(self.path))
        self.sock.setblocking(False)

    def drain(self) -> list[str]:
        while True:
            try:
                self.received.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return self.received

    async def wait_for(self, needle: str, timeout: float = 20.0, count: int = 1) -> str:
        """The ``count``-th notification (since the start) containing ``needle``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            found = [message for message in self.drain() if needle in message]
            if len(found) >= count:
                return found[count - 1]
            await asyncio.sleep(0.02)
        raise AssertionError(f"no {count}× {needle!r} notification within {timeout}s")

    def close(self) -> None:
        self.sock.close()


@dataclass
class DaemonProcess:
    """`nightshift run` in a subprocess, with its own state directory and notify socket."""

    config: Path
    state_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    process: asyncio.subprocess.Process | None = None
    notifications: Notifications | None = None
    nofile: int | None = None  # the daemon's soft RLIMIT_NOFILE, e.g. to run it out of fds

    async def start(self, *, wait_ready: bool = True) -> None:
        self.notifications = Notifications(self.state_dir.parent / "notify.sock")
        env = {
            **os.environ,
            "NOTIFY_SOCKET": str(self.notifications.path),
            "PYTHONPATH": str(ROOT),
            **self.env,
        }
        env.pop("CREDENTIALS_DIRECTORY", None)
        self._log = self.log_path.open("ab")
        self.process = await asyncio.create_subprocess_exec(
            *NIGHTSHIFT,
            "run",
            "--config",
            str(self.config),
            "--state-dir",
            str(self.state_dir),
            env=env,
            stdout=self._log,
            stderr=asyncio.subprocess.STDOUT,
            preexec_fn=None if self.nofile is None else self._lower_nofile,
        )
        if wait_ready:
            try:
                await self.notifications.wait_for("READY=1")
            except AssertionError:
                await self.stop()
                output = await self.output()
                raise AssertionError(f"daemon never became ready; output:\n{output}") from None

    def _lower_nofile(self) -> None:
        import resource

        assert self.nofile is not None
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, hard))

    async def cli(
        self, *args: str, timeout: float = 60.0, stdin: bytes | None = None
    ) -> tuple[int, str, str]:
        """Run a client command against this daemon; returns (exit code, stdout, stderr)."""
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = await asyncio.create_subprocess_exec(
            *NIGHTSHIFT,
            *args,
            "--config",
            str(self.config),
            "--state-dir",
            str(self.state_dir),
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    async def wait(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        return await asyncio.wait_for(self.process.wait(), timeout)

    @property
    def log_path(self) -> Path:
        return self.state_dir.parent / "daemon.log"

    async def output(self) -> str:
        """Everything the daemon printed so far (stdout and stderr)."""
        return self.log_path.read_text() if self.log_path.exists() else ""

    async def stop(self) -> int | None:
        if self.process is None:
            return None
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        if self.notifications is not None:
            self.notifications.drain()
            self.notifications.close()
        self._log.close()
        return self.process.returncode


@contextlib.contextmanager
def mounted_tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``mount`` (created); skips the test where mounting is not
    allowed (needs root or CAP_SYS_ADMIN). Unmounted afterwards."""
    import subprocess

    import pytest

    mount.mkdir(exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root/CAP_SYS_ADMIN): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True, check=False)


def every_stored_text(path: Path) -> str:
    """Every value of every row of every table, read straight from the database file."""
    with sqlite3.connect(path) as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return "\n".join(
            str(value)
            for table in tables
            for row in db.execute(f'SELECT * FROM "{table}"')  # noqa: S608 - names from sqlite
            for value in row
        )


async def run_cli(*argv: str, timeout: float = 60) -> tuple[int, str, str]:
    """``nightshift ARGV…`` in a subprocess: exit code, stdout and stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import sys; from daemon.cli.main import main; sys.exit(main())",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
