"""File tools: read part of a text file, or the last lines of a log, within the read policy."""

from __future__ import annotations

import asyncio
import codecs
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from daemon.agent import sandbox
from daemon.agent.policy import check_read_path
from daemon.agent.sandbox import SandboxStatus
from daemon.agent.tools._sandboxed_file import SandboxedFile
from daemon.agent.tools._shared import ToolGate
from daemon.agent.tools.base import Tier, Tool, ToolContext, tool
from daemon.core.errors import PatternError, ToolError
from daemon.core.patterns import Pattern, compile_untrusted
from daemon.core.redact import redact

if TYPE_CHECKING:
    from daemon.agent.settings import AgentConfig

__all__ = ["FileChunk", "LogTail", "TOOLS"]

log = logging.getLogger(__name__)

BLOCK_BYTES = 64 * 1024
# tail_log never reads more than this much of a file, however rare the grep matches are.
MAX_SCAN_BYTES = 64 * 1024 * 1024
MAX_TAIL_LINES = 5000
_BINARY_SNIFF_BYTES = 8192
# C0 controls other than tab, newline and carriage return are shown as \xNN.
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F)}


@dataclass(frozen=True, slots=True, kw_only=True)
class FileChunk:
    """Part of a text file; ``note`` says when there is more to read."""

    path: str
    size: int
    offset: int
    bytes_read: int
    truncated: bool
    note: str | None
    content: str


@dataclass(frozen=True, slots=True, kw_only=True)
class LogTail:
    """The last lines of a file (optionally only those matching ``grep``), oldest first."""

    path: str
    size: int
    lines: int
    grep: str | None
    truncated: bool
    note: str | None
    text: str


def _looks_binary(data: bytes) -> bool:
    sample = data[:_BINARY_SNIFF_BYTES]
    if b"\x00" in sample:
        return True
    text = sample.decode("utf-8", errors="replace")
    return text.count("\ufffd") > max(4, len(text) // 20)


def _read_chunk(
    path: Path, offset: int, cap: int, settings: AgentConfig, status: SandboxStatus
) -> tuple[bytes, int, bool]:
    with SandboxedFile.open(path, settings, status) as file:
        data = file.read_at(offset, cap + 1)  # one extra byte tells us whether more follows
    return data[:cap], file.size, len(data) > cap


def checked_path(path: str, settings: AgentConfig) -> Path:
    """``path`` resolved, if the read policy lets tools read it (never the daemon's own state,
    its credentials, or anything starting with a deny_paths entry)."""
    return check_read_path(path, settings.policy, hidden=sandbox.hidden_paths(settings))


@tool(tier=Tier.READ_ONLY)
async def read_file(
    ctx: ToolContext, path: str, offset: int = 0, max_bytes: int | None = None
) -> FileChunk:
    """Read a text file (or part of it) under the allowed read paths.

    Args:
        path: Absolute path, e.g. /etc/nginx/nginx.conf.
        offset: Byte offset to start at; use the offset from a truncation note to read on.
        max_bytes: How many bytes to read at most; defaults to (and cannot exceed) the
            configured limit.
    """
    policy = ctx.settings.policy
    resolved = checked_path(path, ctx.settings)
    if offset < 0:
        raise ToolError("offset must be 0 or more")
    cap = policy.max_read_bytes if max_bytes is None else min(max_bytes, policy.max_read_bytes)
    if cap < 1:
        raise ToolError("max_bytes must be at least 1")
    status = await sandbox.current(ctx.settings)
    data, size, more = await asyncio.to_thread(
        _read_chunk, resolved, offset, cap, ctx.settings, status
    )
    if _looks_binary(data):
        raise ToolError(
            f"{path} looks like a binary file ({size} bytes); read_file shows text only"
        )
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    content = decoder.decode(data, final=not more).translate(_CONTROLS)  # no half char at a cut
    note = None
    if more:
        total = f"{size} bytes" if size else "more bytes (size unknown)"
        where = f" from offset {offset}" if offset else ""
        note = (
            f"[truncated: showing {len(data)} of {total}{where}; "
            f"continue with offset={offset + len(data)}]"
        )
    elif offset and not data:
        note = f"[offset {offset} is at or past the end of the file ({size} bytes)]"
    log.debug("read_file %s for %s: %d bytes at %d", resolved, ctx.actor, len(data), offset)
    return FileChunk(
        path=str(resolved),
        size=size,
        offset=offset,
        bytes_read=len(data),
        truncated=more,
        note=note,
        content=redact(content, policy.redact_patterns),
    )


@dataclass(slots=True)
class _Scan:
    """Lines found reading a file backwards, newest first."""

    lines: list[str]
    scanned: int
    reached_start: bool


def scan_backwards(
    read_at: Callable[[int, int], bytes],
    size: int,
    want: int,
    pattern: Pattern | None,
    *,
    scan_limit: int = MAX_SCAN_BYTES,
    line_cap: int = 1024 * 1024,
    block: int = BLOCK_BYTES,
    stop: threading.Event | None = None,
) -> _Scan:
    """Find the last ``want`` lines (matching ``pattern``) reading blocks from the end.

    ``read_at(offset, count)`` returns bytes. Memory stays within ``line_cap`` plus one block;
    a line longer than ``line_cap`` keeps its last ``line_cap`` bytes, prefixed with "…".
    Setting ``stop`` (the caller gave up, e.g. the tool timed out) ends the scan at the next line.
    """
    found: list[str] = []
    pos, scanned = size, 0
    if size and read_at(size - 1, 1) == b"\n":
        pos -= 1  # the final newline ends the last line; it does not start an empty one
    carry, cut = b"", False

    def emit(raw: bytes, was_cut: bool) -> bool:
        if stop is not None and stop.is_set():
            return True
        line = raw.decode("utf-8", errors="replace").removesuffix("\r").translate(_CONTROLS)
        if pattern is None or pattern.search(line):
            found.append(("…" if was_cut else "") + line)
        return len(found) >= want

    while pos > 0 and scanned < scan_limit:
        count = min(block, pos)
        chunk = read_at(pos - count, count)
        if len(chunk) != count:
            break  # the file shrank (rotated or truncated) while we read it
        pos -= count
        scanned += count
        newline = chunk.rfind(b"\n")
        if newline < 0:
            if not cut:
                carry = chunk + carry
                if len(carry) > line_cap:
                    carry, cut = carry[-line_cap:], True
            continue
        if emit(carry if cut else chunk[newline + 1 :] + carry, cut):
            return _Scan(found, scanned, False)
        parts = chunk[:newline].split(b"\n")
        for raw in reversed(parts[1:]):
            if emit(raw[-line_cap:], len(raw) > line_cap):
                return _Scan(found, scanned, False)
        carry, cut = parts[0], False
        if len(carry) > line_cap:
            carry, cut = carry[-line_cap:], True
    if pos == 0 and size:
        emit(carry, cut)
    return _Scan(found, scanned, pos == 0)


def scan_file(
    path: Path,
    want: int,
    pattern: Pattern | None,
    line_cap: int,
    scan_limit: int | None = None,
    stop: threading.Event | None = None,
    *,
    settings: AgentConfig,
    status: SandboxStatus,
) -> tuple[_Scan, int]:
    """The last ``want`` (matching) lines of a file, read backwards; and the file's size.

    The file is read by the helper process (sandboxed when ``status`` is available).
    """
    if scan_limit is None:
        scan_limit = MAX_SCAN_BYTES
    with SandboxedFile.open(path, settings, status) as file:
        size = file.size
        if size == 0:  # /proc and /sys report 0: read forward (bounded), then scan in memory
            blob = file.read_at(0, scan_limit)
            size = len(blob)

            def read(at: int, count: int) -> bytes:
                return blob[at : at + count]
        else:

            def read(at: int, count: int) -> bytes:
                return file.read_at(at, count)

        scan = scan_backwards(
            read, size, want, pattern, scan_limit=scan_limit, line_cap=line_cap, stop=stop
        )
        return scan, size


# A tail scans back through the file in a helper process: a few at a time, the rest wait.
TAIL_GATE = ToolGate("tail_log")


async def scan_off_loop(
    path: Path,
    want: int,
    pattern: Pattern | None,
    line_cap: int,
    scan_limit: int | None = None,
    *,
    settings: AgentConfig,
    status: SandboxStatus,
) -> tuple[_Scan, int]:
    """:func:`scan_file` in a worker thread, told to stop when the caller is cancelled.

    RE2 releases the GIL while it matches, so the loop keeps running; the stop keeps a timed-out
    grep from scanning on in the background.
    """
    stop = threading.Event()
    try:
        return await asyncio.to_thread(
            lambda: scan_file(
                path, want, pattern, line_cap, scan_limit, stop, settings=settings, status=status
            )
        )
    finally:
        stop.set()


@tool(tier=Tier.READ_ONLY)
async def tail_log(
    ctx: ToolContext, path: str, lines: int = 100, grep: str | None = None
) -> LogTail:
    """Show the last lines of a log file, optionally only lines matching a regular expression.

    Args:
        path: Absolute path of the log, e.g. /var/log/nginx/error.log.
        lines: How many lines to return (the newest), 1 to 5000.
        grep: Optional regular expression (RE2 syntax: no backreferences or lookaround); only
            matching lines count, e.g.
            "error|timeout" or "(?i)oom".
    """
    policy = ctx.settings.policy
    resolved = checked_path(path, ctx.settings)
    if lines < 1:
        raise ToolError("lines must be at least 1")
    try:
        pattern = compile_untrusted(grep, where="grep") if grep else None
    except PatternError as exc:
        raise ToolError(str(exc)) from None
    want = min(lines, MAX_TAIL_LINES)
    status = await sandbox.current(ctx.settings)
    async with TAIL_GATE.slot(ctx):
        scan, size = await scan_off_loop(
            resolved, want, pattern, policy.max_read_bytes, settings=ctx.settings, status=status
        )
    kept: list[str] = []
    budget, capped = policy.max_read_bytes, False
    for line in scan.lines:  # newest first: keep the newest lines that fit in the budget
        cost = len(line.encode()) + 1
        if cost > budget:
            if not kept:  # one huge line: keep its end
                kept.append("…" + line.encode()[4 - budget :].decode("utf-8", "ignore"))
            capped = True
            break
        kept.append(line)
        budget -= cost
    notes: list[str] = []
    stopped = len(scan.lines) < want and not scan.reached_start
    if capped:
        notes.append(
            f"[truncated: showing the last {len(kept)} of {len(scan.lines)} lines "
            f"to stay within {policy.max_read_bytes} bytes]"
        )
    if stopped:
        notes.append(f"[searched only the last {scan.scanned} of {size} bytes]")
    if pattern is not None and not scan.lines:
        notes.append(f"[no line matched {grep!r}]")
    text = "\n".join(reversed(kept))
    return LogTail(
        path=str(resolved),
        size=size,
        lines=len(kept),
        grep=grep,
        truncated=capped or stopped,
        note=" ".join(notes) or None,
        text=redact(text, policy.redact_patterns),
    )


TOOLS: list[Tool] = [read_file, tail_log]
