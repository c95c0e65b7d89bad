"""run_command with real subprocesses: tiers, timeouts, output caps, and the unattended guard."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import psutil
import pytest

from daemon.agent.tools.base import Tier, ToolContext
from daemon.agent.tools.commands import TOOLS, CommandResult, run_command
from daemon.config import Settings
from daemon.core.clock import SystemClock
from daemon.core.errors import PolicyDeniedError, ToolError, ToolTimeoutError


def make_ctx(*, unattended: bool = False, **policy: Any) -> ToolContext:
    settings = Settings()
    for key, value in policy.items():
        setattr(settings.policy, key, value)
    return ToolContext(
        actor="test", reason="test", settings=settings, clock=SystemClock(), unattended=unattended
    )


async def run(ctx: ToolContext, command: str, **arguments: Any) -> CommandResult:
    result = await run_command.invoke(ctx, {"command": command, **arguments})
    assert isinstance(result, CommandResult)
    return result


async def children_matching(needle: str, count: int) -> list[psutil.Process]:
    """Wait until ``count`` descendants of this process have ``needle`` in their command line."""
    for _ in range(250):
        found = [
            child
            for child in psutil.Process().children(recursive=True)
            if needle in " ".join(_cmdline(child))
        ]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.02)
    raise AssertionError(f"no child process running {needle!r}")


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return [str(part) for part in proc.cmdline()]
    except psutil.Error:
        return []


def _gone(proc: psutil.Process) -> bool:
    """Dead, or a zombie waiting for a parent that does not reap (PID 1 in some containers)."""
    try:
        return bool(proc.status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


async def all_gone(procs: list[psutil.Process]) -> bool:
    """Whether every process dies soon (SIGKILL is delivered asynchronously)."""
    for _ in range(250):
        if all(_gone(proc) for proc in procs):
            return True
        await asyncio.sleep(0.02)
    return False


# -- tiers --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command,tier",
    [
        ("df -h", Tier.READ_ONLY),
        ("systemctl status nginx", Tier.READ_ONLY),
        ("systemctl restart x", Tier.PRIVILEGED),
        ("rm -rf /", Tier.PRIVILEGED),
        ("ls | sh", Tier.PRIVILEGED),
    ],
)
def test_tier_depends_on_the_command(command: str, tier: Tier) -> None:
    assert run_command.tier_for({"command": command}, Settings()) is tier


def test_rm_stays_privileged_even_if_listed_as_read_only() -> None:
    settings = Settings()
    settings.policy.read_only_commands = [*settings.policy.read_only_commands, "rm"]
    assert run_command.tier_for({"command": "rm -rf /"}, settings) is Tier.PRIVILEGED


def test_write_commands_classify_as_write() -> None:
    settings = Settings()
    settings.policy.write_commands = ["systemctl restart nginx"]
    assert run_command.tier_for({"command": "systemctl restart nginx"}, settings) is Tier.WRITE


# -- running ------------------------------------------------------------------------------------


async def test_output_and_exit_code_are_reported() -> None:
    ok = await run(make_ctx(), "echo hello world")
    assert (ok.exit_code, ok.stdout, ok.stderr, ok.truncated) == (0, "hello world\n", "", False)
    assert ok.duration_seconds >= 0
    failed = await run(make_ctx(), "ls /definitely/not/here")
    assert failed.exit_code != 0 and "/definitely/not/here" in failed.stderr


async def test_no_shell_interprets_the_command() -> None:
    result = await run(make_ctx(), "echo $HOME '|' `id` > /tmp/x")
    assert result.stdout == "$HOME | `id` > /tmp/x\n"


async def test_an_unknown_executable_is_a_clear_tool_error() -> None:
    with pytest.raises(ToolError, match="command not found: 'no-such-tool-xyz'"):
        await run(make_ctx(), "no-such-tool-xyz --help")


async def test_unparseable_and_empty_commands_are_tool_errors() -> None:
    with pytest.raises(ToolError, match="cannot parse"):
        await run(make_ctx(), "echo 'unbalanced")
    with pytest.raises(ToolError, match="empty"):
        await run(make_ctx(), "   ")


async def test_big_output_is_capped_with_a_note() -> None:
    ctx = make_ctx(max_output_bytes=4096)
    result = await run(ctx, "seq 1 1000000")  # about 6.9 MB
    assert result.exit_code == 0 and result.truncated
    assert len(result.stdout) == 4096 and result.stdout.startswith("1\n2\n3\n")
    assert "showing the first 4096 of 6888896 bytes" in (result.note or "")


async def test_secrets_in_output_are_masked() -> None:
    result = await run(make_ctx(), "echo password=hunter2")
    assert result.stdout == "password=[REDACTED]\n"


async def test_the_daemon_environment_does_not_leak(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NIGHTSHIFT_TEST_SECRET", "leak-me")
    result = await run(make_ctx(), "env")
    assert "leak-me" not in result.stdout and "PATH=" in result.stdout


# -- timeouts and cancellation ------------------------------------------------------------------


async def test_sleep_times_out_and_its_whole_process_group_is_gone() -> None:
    task = asyncio.create_task(run(make_ctx(), "sh -c 'sleep 61 & sleep 62'", timeout_seconds=1))
    sleepers = await children_matching("sleep 6", 3)  # sh and both sleeps
    with pytest.raises(ToolTimeoutError, match="timeout; its process group was killed"):
        await task
    assert await all_gone(sleepers)


async def test_the_timeout_cannot_exceed_the_policy_limit() -> None:
    ctx = make_ctx(command_timeout_seconds=0.3)
    with pytest.raises(ToolTimeoutError, match="0.3s"):
        await run(ctx, "sleep 10", timeout_seconds=600)


async def test_partial_output_is_in_the_timeout_error() -> None:
    with pytest.raises(ToolTimeoutError, match="last stdout before the kill:\nstarted"):
        await run(make_ctx(), "sh -c 'echo started; sleep 10'", timeout_seconds=0.5)


async def test_cancelling_the_call_kills_the_command() -> None:
    task = asyncio.create_task(run(make_ctx(), "sleep 43"))
    [sleeper] = await children_matching("sleep 43", 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await all_gone([sleeper])


# -- unattended runs ----------------------------------------------------------------------------


async def test_unattended_privileged_command_is_refused_without_spawning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def no_spawn(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a process was started")

    monkeypatch.setattr("daemon.agent.tools.commands.asyncio.create_subprocess_exec", no_spawn)
    marker = tmp_path / "marker"
    with pytest.raises(PolicyDeniedError, match=r"unattended.*\[policy\] auto_approve"):
        await run(make_ctx(unattended=True), f"touch {marker}")
    assert not await asyncio.to_thread(marker.exists)


async def test_unattended_runs_auto_approved_and_read_only_commands(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    ctx = make_ctx(unattended=True, auto_approve=[f"touch {marker}"])
    assert (await run(ctx, f"touch  '{marker}'")).exit_code == 0
    assert await asyncio.to_thread(marker.exists)
    assert (await run(ctx, "uname")).exit_code == 0


def test_run_command_is_exported_and_describes_its_arguments() -> None:
    assert [run_command] == TOOLS
    properties = run_command.schema()["function"]["parameters"]["properties"]
    assert set(properties) == {"command", "timeout_seconds", "reason"}
    assert all(prop.get("description") for prop in properties.values())
