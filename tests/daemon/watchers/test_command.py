"""CommandCheckWatcher running real programs."""

from __future__ import annotations

import asyncio
import re
import sys
import tracemalloc
from pathlib import Path

import psutil
import pytest
from pydantic import ValidationError

from daemon.core.alerts import Observation
from daemon.watchers.command import CommandCheckSettings, CommandCheckWatcher
from tests.daemon.watchers.recorder import Recorder, running

FAST = 0.05


async def first_run(**settings: object) -> dict[str, Observation]:
    """Start a watcher, wait for its first complete run, return its observations by metric."""
    config = CommandCheckSettings.model_validate(
        {"name": "probe", "interval_seconds": FAST, **settings}
    )
    rec = Recorder()
    async with running(CommandCheckWatcher(config), rec):
        await rec.wait_for("command_output", timeout=30.0)
    done = {o.metric: o for o in rec.seen}
    assert {o.labels["check"] for o in rec.seen} == {"probe"}
    assert {o.source for o in rec.seen} == {"command:probe"}
    return done


async def test_true_and_false() -> None:
    ok = await first_run(command=["true"])
    assert ok["command_exit_code"].value == 0
    assert ok["command_ok"].value == 1
    failed = await first_run(command="false")
    assert failed["command_exit_code"].value == 1
    assert failed["command_ok"].value == 0
    expected_failure = await first_run(command=["false"], expect_exit=1)
    assert expected_failure["command_ok"].value == 1


async def test_output_and_expect_output() -> None:
    script = "echo 'disk check: all fine'; echo 'warning on stderr' >&2; exit 0"
    seen = await first_run(command=["sh", "-c", script], expect_output=r"all f\w+e")
    assert seen["command_ok"].value == 1
    assert "disk check: all fine" in seen["command_output"].text
    assert "warning on stderr" in seen["command_output"].text  # stderr is part of the output

    miss = await first_run(command=["sh", "-c", script], expect_output="DEGRADED")
    assert miss["command_exit_code"].value == 0
    assert miss["command_ok"].value == 0  # right exit code, wrong output

    stderr_only = await first_run(command="sh -c 'echo READY >&2'", expect_output="^READY$")
    assert stderr_only["command_ok"].value == 1


async def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = f"echo $$ > {pids}; sleep 30 & echo $! >> {pids}; echo started; sleep 30"
    settings = CommandCheckSettings(
        name="hang", command=["sh", "-c", script], timeout_seconds=0.5, interval_seconds=60
    )
    rec = Recorder()
    async with running(CommandCheckWatcher(settings), rec):
        output = await rec.wait_for("command_output", timeout=20.0)  # well before sleep's 30 s
    assert output.text == "timed out after 0.5s"
    assert rec.of("command_ok")[0].value == 0
    assert rec.of("command_exit_code")[0].value == -1
    shell, background = (int(line) for line in pids.read_text().split())
    for pid in (shell, background):
        await _wait_dead(pid)


async def _wait_dead(pid: int) -> None:
    """Fail unless ``pid`` is gone (or a zombie waiting for an init that does not reap)."""
    for _ in range(200):
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"pid {pid} still alive after the timeout")


async def test_missing_program_is_a_watcher_error_and_keeps_checking() -> None:
    settings = CommandCheckSettings(
        name="gone", command=["/nonexistent/bin/health-check", "--quick"], interval_seconds=FAST
    )
    rec = Recorder()
    async with running(CommandCheckWatcher(settings), rec) as task:
        error = await rec.wait_for("watcher_error")
        first_ok = await rec.wait_for("command_ok")
        await rec.wait_for("command_ok", after=rec.seen.index(first_ok) + 1)  # a second run
        assert not task.done()
    assert error.value == 1
    assert "'/nonexistent/bin/health-check'" in error.text and "no such program" in error.text
    assert {o.value for o in rec.of("command_ok")} == {0}
    assert len(rec.of("watcher_error")) == 1  # reported once while it stays broken
    assert not rec.of("command_exit_code")


async def test_huge_output_keeps_only_the_tail() -> None:
    writer = (
        "import sys\n"
        "block = b'x' * 65536\n"
        "for _ in range(320): sys.stdout.buffer.write(block)\n"  # 20 MiB
        "sys.stdout.buffer.write(b'\\nthe end: OK\\n')\n"
    )
    tracemalloc.start()
    try:
        seen = await first_run(command=[sys.executable, "-c", writer], expect_output="the end: OK")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    text = seen["command_output"].text
    assert text.endswith("\nthe end: OK\n")
    assert len(text.encode()) <= 4096
    assert seen["command_ok"].value == 1
    assert peak < 4 * 1_048_576, f"{peak} bytes peak while reading 20 MiB of output"


async def test_undecodable_output_is_replaced() -> None:
    seen = await first_run(command=["printf", r"caf\351 \377ok"])
    assert seen["command_output"].text == "caf\ufffd \ufffdok"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"command": []}, "command is empty"),
        ({"command": ""}, "command is empty"),
        ({"command": "sh -c 'unbalanced"}, "into arguments: No closing quotation"),
        ({"command": ["true"], "expect_output": "(oops"}, "invalid regular expression"),
        ({"command": ["true"], "interval_seconds": 0}, "interval_seconds"),
    ],
)
def test_settings_are_validated(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        CommandCheckSettings.model_validate({"name": "bad", **settings})


def test_string_command_is_split_like_a_shell() -> None:
    settings = CommandCheckSettings.model_validate({"name": "s", "command": "sh -c 'exit 3'"})
    assert settings.command == ["sh", "-c", "exit 3"]


async def test_checks_never_see_the_daemons_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    from daemon.watchers.command import run_command

    monkeypatch.setenv("NIGHTSHIFT_LLM__API_KEY", "sk-secret-value")
    result = await run_command(["sh", "-c", "echo key=$NIGHTSHIFT_LLM__API_KEY; env"], 10)
    assert b"key=\n" in result.output_tail and b"sk-secret-value" not in result.output_tail
