"""read_file and tail_log on real files, inside and outside the read policy."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest

from daemon.agent.tools import files
from daemon.agent.tools._sandboxed_file import SandboxedFile
from daemon.agent.tools.base import Tier, ToolContext
from daemon.agent.tools.files import TOOLS, read_file, scan_backwards, tail_log
from daemon.config import Settings
from daemon.core.clock import SystemClock
from daemon.core.errors import PolicyDeniedError, ToolError
from daemon.core.patterns import compile_pattern


def make_ctx(**policy: Any) -> ToolContext:
    settings = Settings()
    for key, value in policy.items():
        setattr(settings.policy, key, value)
    return ToolContext(actor="test", reason="test", settings=settings, clock=SystemClock())


@pytest.fixture
def root(tmp_path: Path) -> Path:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    return allowed


@pytest.fixture
def ctx(root: Path) -> ToolContext:
    return make_ctx(read_paths=[str(root)], deny_paths=[str(root / "private")])


# -- read_file ----------------------------------------------------------------------------------


async def test_read_file_returns_the_text(root: Path, ctx: ToolContext) -> None:
    (root / "nginx.conf").write_text("worker_processes 4;\nübung\n")
    chunk = await read_file.invoke(ctx, {"path": str(root / "nginx.conf")})
    assert chunk.content == "worker_processes 4;\nübung\n"
    assert (chunk.truncated, chunk.note) == (False, None)
    assert chunk.size == chunk.bytes_read == len("worker_processes 4;\nübung\n".encode())


async def test_a_5mb_file_is_capped_and_says_so(root: Path, ctx: ToolContext) -> None:
    big = root / "big.log"
    big.write_bytes(b"0123456789abcdef\n" * (5 * 1024 * 1024 // 17 + 1))
    size = big.stat().st_size
    chunk = await read_file.invoke(ctx, {"path": str(big)})
    assert chunk.truncated and chunk.bytes_read == 262_144 == len(chunk.content)
    assert f"[truncated: showing 262144 of {size} bytes; continue with offset=262144]" in (
        chunk.note or ""
    )
    following = await read_file.invoke(ctx, {"path": str(big), "offset": 262_144})
    assert following.offset == 262_144
    assert following.content[:1] == "0123456789abcdef\n"[262_144 % 17]


async def test_max_bytes_is_honoured_but_never_above_the_limit(root: Path) -> None:
    ctx = make_ctx(read_paths=[str(root)], max_read_bytes=2048)
    (root / "f").write_text("x" * 5000)
    small = await read_file.invoke(ctx, {"path": str(root / "f"), "max_bytes": 10})
    assert small.content == "x" * 10
    large = await read_file.invoke(ctx, {"path": str(root / "f"), "max_bytes": 10**9})
    assert large.bytes_read == 2048
    with pytest.raises(ToolError, match="max_bytes"):
        await read_file.invoke(ctx, {"path": str(root / "f"), "max_bytes": 0})


async def test_a_symlink_out_of_the_allowed_dir_is_denied(root: Path, ctx: ToolContext) -> None:
    secret = root.parent / "secret.txt"
    secret.write_text("password=hunter2\n")
    (root / "notes.txt").symlink_to(secret)
    with pytest.raises(PolicyDeniedError, match="read_paths"):
        await read_file.invoke(ctx, {"path": str(root / "notes.txt")})
    with pytest.raises(PolicyDeniedError):
        await tail_log.invoke(ctx, {"path": str(root / "notes.txt")})


async def test_deny_paths_win(root: Path, ctx: ToolContext) -> None:
    (root / "private").mkdir()
    (root / "private" / "id_rsa").write_text("key\n")
    with pytest.raises(PolicyDeniedError, match="deny_paths"):
        await read_file.invoke(ctx, {"path": str(root / "private" / "id_rsa")})


async def test_binary_files_are_refused(root: Path, ctx: ToolContext) -> None:
    (root / "core").write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 4)
    with pytest.raises(ToolError, match="binary"):
        await read_file.invoke(ctx, {"path": str(root / "core")})


async def test_non_files_are_refused_without_hanging(root: Path, ctx: ToolContext) -> None:
    os.mkfifo(root / "fifo")
    with pytest.raises(ToolError, match="not a regular file"):
        await read_file.invoke(ctx, {"path": str(root / "fifo")})
    with pytest.raises(ToolError, match="directory"):
        await read_file.invoke(ctx, {"path": str(root)})
    with pytest.raises(ToolError, match="No such file or directory"):
        await read_file.invoke(ctx, {"path": str(root / "missing")})


async def test_secrets_in_files_are_masked(root: Path, ctx: ToolContext) -> None:
    (root / "app.env").write_text("DB_PASSWORD=hunter2\nPORT=80\n")
    chunk = await read_file.invoke(ctx, {"path": str(root / "app.env")})
    assert chunk.content == "DB_PASSWORD=[REDACTED]\nPORT=80\n"


async def test_proc_files_with_zero_size_are_readable() -> None:
    ctx = make_ctx(read_paths=["/proc"])
    chunk = await read_file.invoke(ctx, {"path": "/proc/meminfo"})
    assert "MemTotal:" in chunk.content
    tail = await tail_log.invoke(ctx, {"path": "/proc/meminfo", "lines": 2})
    assert tail.lines == 2


# -- tail_log -----------------------------------------------------------------------------------


@pytest.fixture
def big_log(root: Path) -> Path:
    path = root / "app.log"
    with path.open("w") as out:
        for n in range(400_000):  # ~20 MB
            level = "ERROR" if n % 1000 == 0 else "INFO"
            out.write(f"2026-01-01T00:00:00Z {level} request {n} served in 12ms by worker 7\n")
    return path


async def test_tail_log_returns_the_last_lines_reading_only_the_end(
    big_log: Path, ctx: ToolContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    read = 0
    real = SandboxedFile.read_at

    def counting(self: SandboxedFile, offset: int, count: int) -> bytes:
        nonlocal read
        data = real(self, offset, count)
        read += len(data)
        return data

    monkeypatch.setattr(SandboxedFile, "read_at", counting)
    tail = await tail_log.invoke(ctx, {"path": str(big_log), "lines": 3})
    assert tail.text.splitlines() == [
        f"2026-01-01T00:00:00Z INFO request {n} served in 12ms by worker 7"
        for n in (399_997, 399_998, 399_999)
    ]
    assert (tail.lines, tail.truncated, tail.note) == (3, False, None)
    assert read < 200_000 < tail.size


async def test_tail_log_with_grep_returns_the_last_matches(big_log: Path, ctx: ToolContext) -> None:
    arguments = {"path": str(big_log), "lines": 4, "grep": r"ERROR request \d+"}
    tail = await tail_log.invoke(ctx, arguments)
    numbers = [int(line.split()[3]) for line in tail.text.splitlines()]
    assert numbers == [396_000, 397_000, 398_000, 399_000]


async def test_tail_log_says_when_it_stopped_searching(
    big_log: Path, ctx: ToolContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files, "MAX_SCAN_BYTES", 1024 * 1024)
    tail = await tail_log.invoke(ctx, {"path": str(big_log), "lines": 500, "grep": "ERROR"})
    assert 0 < tail.lines < 500 and tail.truncated
    assert "searched only the last" in (tail.note or "")


async def test_tail_log_output_stays_within_max_read_bytes(root: Path) -> None:
    ctx = make_ctx(read_paths=[str(root)], max_read_bytes=4096)
    (root / "wide.log").write_text("".join(f"{n:04d} " + "x" * 995 + "\n" for n in range(50)))
    tail = await tail_log.invoke(ctx, {"path": str(root / "wide.log"), "lines": 20})
    assert len(tail.text.encode()) <= 4096
    assert tail.text.splitlines()[-1].startswith("0049 ")
    assert tail.truncated and "showing the last 4 of 20 lines" in (tail.note or "")


async def test_one_huge_line_keeps_its_end_within_the_limit(root: Path) -> None:
    ctx = make_ctx(read_paths=[str(root)], max_read_bytes=2048)
    (root / "one.log").write_text("start" + "é" * 5000 + "end\n")
    tail = await tail_log.invoke(ctx, {"path": str(root / "one.log")})
    assert tail.lines == 1 and tail.truncated
    assert tail.text.startswith("…") and tail.text.endswith("ééend")
    assert len(tail.text.encode()) <= 2048


async def test_unreadable_proc_files_are_tool_errors() -> None:
    with pytest.raises(ToolError, match="/proc/kmsg: "):
        await read_file.invoke(make_ctx(read_paths=["/proc"]), {"path": "/proc/kmsg"})


async def test_tail_log_handles_odd_endings_and_binary_bytes(root: Path, ctx: ToolContext) -> None:
    (root / "odd.log").write_bytes(b"first\r\n\x00\x00\x00crash\r\nlast without newline")
    tail = await tail_log.invoke(ctx, {"path": str(root / "odd.log"), "lines": 10})
    assert tail.text.splitlines() == ["first", "\\x00\\x00\\x00crash", "last without newline"]


async def test_tail_log_reports_no_match_and_bad_regex(root: Path, ctx: ToolContext) -> None:
    (root / "a.log").write_text("one\ntwo\n")
    tail = await tail_log.invoke(ctx, {"path": str(root / "a.log"), "grep": "three"})
    assert tail.text == "" and "no line matched" in (tail.note or "")
    with pytest.raises(ToolError, match="grep: invalid regular expression"):
        await tail_log.invoke(ctx, {"path": str(root / "a.log"), "grep": "(unclosed"})
    with pytest.raises(ToolError, match=r"grep: .*the backreference `\\1` is not supported"):
        await tail_log.invoke(ctx, {"path": str(root / "a.log"), "grep": r"(o)\1"})
    with pytest.raises(ToolError, match="grep: .*too large for the linear-time engine"):
        await tail_log.invoke(ctx, {"path": str(root / "a.log"), "grep": r"\w{1000}" * 20})
    with pytest.raises(ToolError, match="lines"):
        await tail_log.invoke(ctx, {"path": str(root / "a.log"), "lines": 0})


@pytest.mark.parametrize("block", [1, 2, 3, 7, 64])
def test_scan_backwards_matches_a_naive_split(block: int) -> None:
    data = b"\n\nalpha\nbeta\r\n\ngamma delta\nepsilon"
    for want in range(1, 9):
        for pattern in (None, compile_pattern("a"), compile_pattern("^$")):
            lines = data.decode().replace("\r", "").split("\n")
            expected = [line for line in lines if pattern is None or pattern.search(line)]
            scan = scan_backwards(
                lambda at, n: data[at : at + n], len(data), want, pattern, block=block
            )
            assert scan.lines == expected[::-1][:want]


def test_file_tools_are_read_only() -> None:
    assert [read_file, tail_log] == TOOLS
    assert all(t.tier is Tier.READ_ONLY for t in TOOLS)


def test_a_scan_stops_at_the_next_line_once_its_caller_gave_up() -> None:
    """A grep that timed out must not scan on in its worker thread."""
    stop = threading.Event()
    data = b"a line that does not match\n" * 100_000
    reads: list[int] = []

    def read_at(at: int, count: int) -> bytes:
        reads.append(at)
        stop.set()  # the tool was cancelled while its thread read the first bytes
        return data[at : at + count]

    scan = scan_backwards(read_at, len(data), 10, compile_pattern("nomatch"), stop=stop)
    assert scan.lines == [] and not scan.reached_start
    assert len(reads) == 2  # the final-newline probe and one block, not 40 blocks
