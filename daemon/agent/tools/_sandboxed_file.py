"""A file the tools read through the helper process: inside the sandbox when there is one.

The daemon never holds a descriptor of the file: the helper (``_read_helper.py``) opens it
without following symlinks and sends bytes back over a pipe. Blocking: use from a worker
thread. Every answer has a deadline; a helper that misses it is killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from daemon.agent import sandbox
from daemon.agent.sandbox import SandboxStatus
from daemon.core.errors import ToolError, ToolTimeoutError

if TYPE_CHECKING:
    from daemon.agent.settings import AgentConfig

__all__ = ["SandboxedFile"]

HELPER = Path(__file__).with_name("_read_helper.py")
REQUEST_BYTES = 1024 * 1024
_source: list[str] = []


def _helper_argv(path: str, hidden: tuple[str, ...]) -> list[str]:
    """The helper as ``python -I -S -c SOURCE PATH``: only the interpreter must be visible in
    the sandbox, so this one if it is, else a python3 on PATH outside every hidden path."""
    from daemon.core.environment import child_environment

    if not _source:
        _source.append(HELPER.read_text(encoding="utf-8"))
    found = shutil.which("python3", path=child_environment()["PATH"])
    candidates = [sys.executable, found, "/usr/bin/python3", "/usr/local/bin/python3"]
    for candidate in candidates:
        real = os.path.realpath(candidate) if candidate else ""
        if real and os.access(real, os.X_OK) and sandbox.covering_entry(real, hidden) is None:
            return [real, "-I", "-S", "-c", _source[0], path]
    raise ToolError(
        f"no Python interpreter outside the hidden paths ({', '.join(hidden)}) to read files "
        "with; install python3 system-wide"
    )


class SandboxedFile:
    """A regular file opened by the helper; ``size`` as the helper saw it at open."""

    def __init__(self, proc: subprocess.Popen[bytes], path: str, timeout: float) -> None:
        self._proc = proc
        self.path = path
        self._timeout = timeout
        self.size = 0

    @classmethod
    def open(cls, path: Path | str, settings: AgentConfig, status: SandboxStatus) -> SandboxedFile:
        """Start the helper on ``path`` (sandboxed when ``status`` is available)."""
        from daemon.core.environment import child_environment

        hidden = sandbox.hidden_paths(settings)
        argv = _helper_argv(str(path), hidden)
        if status.available:
            argv = sandbox.wrap(status, argv, hidden)
        try:
            proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=child_environment(),
                cwd="/",
                start_new_session=True,
            )
        except OSError as exc:
            raise ToolError(f"cannot start the file reader: {exc.strerror or exc}") from None
        file = cls(proc, str(path), settings.policy.command_timeout_seconds)
        try:
            file.size = file._header()
        except BaseException:
            file.close()
            raise
        return file

    def _header(self) -> int:
        line = bytearray()
        while not line.endswith(b"\n"):
            chunk = self._read(1, allow_eof=True)
            if not chunk:
                err = self._stderr()
                raise ToolError(f"the file reader for {self.path} failed: {err or 'no answer'}")
            line += chunk
        header = json.loads(line)
        if "error" in header:
            raise ToolError(str(header["error"]))
        return int(header["size"])

    def read_at(self, offset: int, count: int) -> bytes:
        """Up to ``count`` bytes at ``offset`` (fewer only at the end of the file)."""
        parts: list[bytes] = []
        while count > 0:
            want = min(count, REQUEST_BYTES)
            assert self._proc.stdin is not None
            try:
                self._proc.stdin.write(f"{offset} {want}\n".encode())
                self._proc.stdin.flush()
            except OSError:
                raise ToolError(f"the file reader for {self.path} stopped") from None
            status = self._read(1)
            size = int.from_bytes(self._read(4), "big")
            payload = self._read(size) if size else b""
            if status == b"!":
                raise ToolError(payload.decode("utf-8", "replace"))
            if not payload:
                break
            parts.append(payload)
            offset += len(payload)
            count -= len(payload)
        return b"".join(parts)

    def _read(self, count: int, *, allow_eof: bool = False) -> bytes:
        assert self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        deadline = time.monotonic() + self._timeout
        data = bytearray()
        while len(data) < count:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(0.0, left))
            if not ready:
                self._proc.kill()
                self.close()
                raise ToolTimeoutError(
                    f"reading {self.path} took longer than {self._timeout:g}s "
                    "([policy] command_timeout_seconds); the reader was killed"
                )
            chunk = os.read(fd, count - len(data))
            if not chunk:
                if allow_eof and not data:
                    return b""
                raise ToolError(f"the file reader for {self.path} stopped: {self._stderr()}")
            data += chunk
        return bytes(data)

    def _stderr(self) -> str:
        """The helper's (or bwrap's) last complaint, once it has stopped."""
        self._stop()
        stderr = self._proc.stderr
        raw = b"" if stderr is None or stderr.closed else stderr.read(4096)
        text = raw.decode("utf-8", "replace")
        self.close()
        return text.strip().splitlines()[-1] if text.strip() else ""

    def _stop(self) -> None:
        proc = self._proc
        if proc.stdin is not None and not proc.stdin.closed:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def close(self) -> None:
        """Stop the helper (it exits on EOF; it is killed if it does not)."""
        self._stop()
        for pipe in (self._proc.stdout, self._proc.stderr):
            if pipe is not None:
                pipe.close()

    def __enter__(self) -> SandboxedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
