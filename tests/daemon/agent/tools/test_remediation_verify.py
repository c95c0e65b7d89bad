"""The remediation tools' read-only probes, used after a restart for a call whose outcome was
not recorded: a real (stand-in) systemctl program and real processes."""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import timedelta
from pathlib import Path

from daemon.agent.tools.remediation import clean_directory, restart_service, stop_process
from daemon.core.clock import ManualClock, SystemClock
from tests.daemon.agent.tools.test_remediation import NOW, cache, make_ctx

__all__ = ["cache"]  # the fixture, shared with the tool's own tests

SHOW = """#!{python}
import sys
assert sys.argv[1:4] == ["show", "--property=ActiveState,ActiveEnterTimestampMonotonic", "--"]
print(open({state!r}).read())
"""


def fake_systemctl(tmp_path: Path, state: str, entered_monotonic: float) -> Path:
    """A program named systemctl whose ``show`` prints the given state and start time."""
    data = tmp_path / "state.txt"
    data.write_text(
        f"ActiveState={state}\nActiveEnterTimestampMonotonic={int(entered_monotonic * 1e6)}"
    )
    program = tmp_path / "systemctl"
    program.write_text(SHOW.format(python=sys.executable, state=str(data)))
    program.chmod(0o755)
    return program


async def test_a_restart_is_verified_by_the_units_start_time(tmp_path: Path) -> None:
    clock = SystemClock()
    since = clock.now() - timedelta(seconds=10)  # the call began 10 s ago
    assert restart_service.verify is not None
    cases = [
        ("active", time.monotonic() - 5, True),  # re-entered active after the call began
        ("active", time.monotonic() - 60, False),  # active since before: not restarted
        ("failed", time.monotonic() - 5, None),  # cannot tell: a person decides
    ]
    for state, entered, expected in cases:
        program = fake_systemctl(tmp_path, state, entered)
        ctx = make_ctx(restart_command=[str(program), "restart", "{service}"], clock=clock)
        verdict = await restart_service.verify(ctx, {"service": "web.service"}, since)
        assert verdict.happened is expected, (state, verdict)
        assert "web.service" in verdict.detail


async def test_a_restart_command_that_is_not_systemctl_cannot_be_verified() -> None:
    ctx = make_ctx(restart_command=[sys.executable, "-c", "print(1)", "{service}"])
    assert restart_service.verify is not None
    verdict = await restart_service.verify(ctx, {"service": "web"}, SystemClock().now())
    assert verdict.happened is None and "not systemctl" in verdict.detail


async def test_a_stopped_process_is_verified_gone_a_running_one_is_unknown() -> None:
    ctx = make_ctx()
    assert stop_process.verify is not None
    proc = await asyncio.create_subprocess_exec("sleep", "30")
    await asyncio.sleep(0.05)  # create times have a clock tick's grain
    since = SystemClock().now()  # the call began after the process did
    try:
        running = await stop_process.verify(ctx, {"pid": proc.pid}, since)
        assert running.happened is None and "still running" in running.detail
    finally:
        proc.kill()
        await proc.wait()
    gone = await stop_process.verify(ctx, {"pid": proc.pid}, since)
    assert gone.happened is True and "gone" in gone.detail


async def test_an_interrupted_clean_is_verified_by_what_is_left(cache: Path) -> None:
    """Old matching files still there: it had not finished (running it again removes only
    what is left); none left: it had; a dry run is harmless to run again."""
    ctx = make_ctx(clock=ManualClock(NOW), clean_dirs=[cache])
    arguments: dict[str, object] = {"path": str(cache), "older_than_days": 7, "pattern": "*.log"}
    assert clean_directory.verify is not None
    before = await clean_directory.verify(ctx, arguments, NOW)
    assert before.happened is False and "2 files matching '*.log'" in before.detail
    await clean_directory.invoke(ctx, arguments)
    after = await clean_directory.verify(ctx, arguments, NOW)
    assert after.happened is True and "had finished" in after.detail
    dry = await clean_directory.verify(ctx, {**arguments, "dry_run": True}, NOW)
    assert dry.happened is False
    elsewhere = await clean_directory.verify(ctx, {**arguments, "path": "/etc"}, NOW)
    assert elsewhere.happened is None and "cannot check" in elsewhere.detail
