"""End to end: `nightshift run` as a subprocess, `nightshift chat -m`, a fake Kimi on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fakes.chat_completions import FakeChatServer, PrefixCache, Reply, SwarmScript
from tests.support import NIGHTSHIFT, ROOT, DaemonProcess, write_config


@pytest.fixture
async def daemon(tmp_path: Path, fake_llm: FakeChatServer) -> AsyncIterator[DaemonProcess]:
    config = write_config(
        tmp_path / "config.toml", fake_llm.base_url, **{"watchers.host": {"interval_seconds": 1.0}}
    )
    process = DaemonProcess(config, tmp_path / "state")
    await process.start()
    yield process
    await process.stop()


def rows(db: Path, sql: str) -> list[sqlite3.Row]:
    conn = sqlite3.connect(db)
    try:
        conn.row_factory = sqlite3.Row
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


async def test_chat_runs_a_tool_and_everything_is_recorded(
    daemon: DaemonProcess, fake_llm: FakeChatServer
) -> None:
    fake_llm.script(
        Reply(reasoning="I should look at the host.", tool_calls=[("host_metrics", "{}")]),
        Reply(content="The host is fine: load is low.", reasoning="Numbers look normal."),
    )

    code, out, err = await daemon.cli("chat", "-m", "how is the host doing?")

    assert code == 0, err
    assert "The host is fine: load is low." in out
    assert "host_metrics" in err  # the tool call is shown as it happens
    # The second request replays the assistant tool-call message with its reasoning_content
    # (the fake answers 400 otherwise) and carries the real tool result.
    second = fake_llm.requests[1]["messages"]
    assistant = next(m for m in second if m.get("tool_calls"))
    assert assistant["reasoning_content"] == "I should look at the host."
    tool_message = next(m for m in second if m["role"] == "tool")
    assert "memory" in tool_message["content"] and "cpu" in tool_message["content"]
    assert [t["function"]["name"] for t in fake_llm.requests[0]["tools"]][:1] == ["host_metrics"]

    db = daemon.state_dir / "nightshift.db"
    messages = rows(
        db, "SELECT role, content, reasoning_content, tool_calls FROM messages ORDER BY id"
    )
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant"]
    assert messages[0]["content"] == "how is the host doing?"
    assert json.loads(messages[1]["tool_calls"])[0]["function"]["name"] == "host_metrics"
    assert messages[1]["reasoning_content"] == "I should look at the host."
    run = rows(db, "SELECT * FROM agent_runs")[0]
    assert run["status"] == "ok" and run["tokens"] > 0
    steps = rows(db, "SELECT kind, name FROM run_steps ORDER BY id")
    assert [s["kind"] for s in steps] == ["llm", "tool", "llm"]
    usage = rows(db, "SELECT * FROM llm_usage")
    assert len(usage) == 2 and all(u["total_tokens"] > 0 for u in usage)
    audit = rows(db, "SELECT * FROM audit_log")
    assert [(a["tool"], a["tier"], a["ok"]) for a in audit] == [("host_metrics", "read-only", 1)]
    assert audit[0]["actor"].startswith("console:")


async def test_status_shows_components_and_budget(
    daemon: DaemonProcess, fake_llm: FakeChatServer
) -> None:
    code, out, _ = await daemon.cli("status", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["agent"]["enabled"] is True
    assert report["budget"]["daily_limit"] == 2_000_000
    names = {c["name"] for c in report["components"]}
    assert {"api", "agent", "channel.console", "outbox.console", "watcher.host"} <= names
    assert fake_llm.calls == 0  # idle: no tokens spent
    assert "housekeeping" in names
    database = report["database"]
    assert database["file_bytes"] > 0 and database["auto_vacuum"] == "incremental"
    code, text, err = await daemon.cli("status")
    assert "budget:" in text and "watcher.host" in text, err
    assert "database:" in text and "MB" in text, text


async def test_status_reports_the_prompt_cache_hit_ratio(
    daemon: DaemonProcess, fake_llm: FakeChatServer
) -> None:
    fake_llm.cache = PrefixCache()
    fake_llm.script(
        Reply(reasoning="I should look at the host.", tool_calls=[("host_metrics", "{}")]),
        Reply(content="The host is fine.", reasoning="Numbers look normal."),
    )
    code, _, err = await daemon.cli("chat", "-m", "how is the host doing?")
    assert code == 0, err

    code, out, _ = await daemon.cli("status", "--json")
    cache = json.loads(out)["prompt_cache"]
    (first, second) = fake_llm.cache.lookups
    assert cache["prompt_tokens"] == first[0] + second[0]
    assert cache["cached_tokens"] == second[1] > 0  # the second call reused the first's prefix
    assert [c["calls"] for c in cache["conversations"]] == [2]
    code, text, _ = await daemon.cli("status")
    assert f"{cache['ratio']:.1%} of {cache['prompt_tokens']:,} input tokens" in text


async def test_sigterm_drains_an_inflight_answer_then_exits_zero(
    daemon: DaemonProcess, fake_llm: FakeChatServer
) -> None:
    import asyncio

    fake_llm.script(Reply(content="slow but complete", delay=1.5))
    chat = asyncio.create_task(daemon.cli("chat", "-m", "take your time"))
    for _ in range(200):
        if fake_llm.calls:
            break
        await asyncio.sleep(0.02)
    daemon.signal(signal.SIGTERM)
    code, out, _ = await chat
    assert code == 0 and "slow but complete" in out
    assert await daemon.wait() == 0
    assert daemon.notifications is not None
    await daemon.notifications.wait_for("STOPPING=1", timeout=1)
    run = rows(daemon.state_dir / "nightshift.db", "SELECT status FROM agent_runs")
    assert [r["status"] for r in run] == ["ok"]


async def test_without_api_key_the_daemon_runs_and_says_why(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.toml", None)
    process = DaemonProcess(config, tmp_path / "state")
    await process.start()
    try:
        code, out, _ = await process.cli("chat", "-m", "hello?")
        assert code == 2
        assert "agent is off" in out and "NIGHTSHIFT_LLM__API_KEY" in out
        code, out, _ = await process.cli("status")
        assert "agent:     off" in out
        stored = rows(process.state_dir / "nightshift.db", "SELECT content FROM messages")
        assert [r["content"] for r in stored] == ["hello?"]  # accepted input is never lost
    finally:
        assert await process.stop() == 0


async def test_commands_work_without_the_agent_in_chat_and_as_their_hints_print_them(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path / "config.toml", None)
    process = DaemonProcess(config, tmp_path / "state")
    await process.start()
    try:
        code, out, _ = await process.cli("chat", "-m", "status")  # no model needed
        assert code == 0 and "agent off" in out and "agent is off" not in out
        code, out, _ = await process.cli("chat", "-m", "silence alertname=Disk 2h resize")
        assert code == 0 and out.startswith("Silence #1: alertname=Disk until")
        hint = out.split("Undo with `")[1].split("`")[0]
        assert hint == "unsilence 1"
        code, out, _ = await process.cli(*hint.split())  # `nightshift unsilence 1`, as printed
        assert code == 0 and out.strip() == "Silence #1 expired."
        code, out, _ = await process.cli("silence", "1", "2h")  # chat form: an incident number
        assert "no incident with id 1" in out
        code, out, _ = await process.cli("tasks")
        hint = out.split("e.g. `")[1].split("`")[0]  # tasks add disk-report every 1h prompt …
        code, out, _ = await process.cli(*hint.split())
        assert code == 0 and out.startswith("Added task disk-report: every 1h")
        code, out, _ = await process.cli("tasks", "run", "disk-report")
        assert code == 0 and out.startswith("Started task disk-report")
        stored = rows(process.state_dir / "nightshift.db", "SELECT content FROM messages")
        assert stored == []  # commands are not questions for the agent
    finally:
        assert await process.stop() == 0


async def test_privileged_command_runs_only_after_approval_from_the_console(
    daemon: DaemonProcess, fake_llm: FakeChatServer, tmp_path: Path
) -> None:
    import asyncio

    marker = tmp_path / "restarted"
    command = json.dumps({"command": f"touch {marker}"})
    fake_llm.script(
        Reply(tool_calls=[("run_command", command)]),
        Reply(content="Done: the marker exists."),
    )
    chat = asyncio.create_task(daemon.cli("chat", "-m", "please touch the marker"))
    pending: list[str] = []
    for _ in range(300):
        code, out, _ = await daemon.cli("approvals")
        pending = [line.split()[0] for line in out.splitlines() if "run_command" in line]
        if pending:
            break
        await asyncio.sleep(0.05)
    assert pending, "the privileged call never asked for approval"
    assert not marker.exists()  # nothing runs before a person says yes
    code, out, _ = await daemon.cli("approve", pending[0])
    assert code == 0 and "approved by console:" in out
    code, out, err = await chat
    assert code == 0 and "Done: the marker exists." in out
    assert "approval needed" in err and f"nightshift approve {pending[0]}" in err
    assert marker.exists()
    audit = rows(daemon.state_dir / "nightshift.db", "SELECT tool, tier, ok FROM audit_log")
    assert [(a["tool"], a["tier"], a["ok"]) for a in audit] == [("run_command", "privileged", 1)]
    code, out, _ = await daemon.cli("approve", pending[0])
    assert code == 1  # answered already


async def test_incidents_and_silences_from_the_cli(daemon: DaemonProcess) -> None:
    code, out, _ = await daemon.cli("incidents")
    assert code == 0 and out.strip() == "No open incidents."
    code, out, _ = await daemon.cli(
        "silence", "add", "alertname=DiskFull", "mount=~/var.*", "--for", "2h", "-c", "resize"
    )
    assert code == 0 and out.startswith("Silence #1: alertname=DiskFull, mount=~/var.* until")
    code, out, _ = await daemon.cli("silence", "list")
    assert "#1 active" in out and "resize" in out and "console:" in out
    code, out, _ = await daemon.cli("silence", "add", "severity!=x", "--for", "1h")
    assert "would match every alert" in out
    code, out, _ = await daemon.cli("silence", "expire", "1")
    assert code == 0 and out.strip() == "Silence #1 expired."
    code, out, _ = await daemon.cli("incidents", "show", "42")
    assert "no incident with id 42" in out


async def test_a_plain_language_request_becomes_a_scheduled_task(
    daemon: DaemonProcess, fake_llm: FakeChatServer
) -> None:
    call = {"name": "incident-summary", "prompt": "Summarise yesterday's incidents",
            "cron": "0 9 * * mon-fri", "timezone": "Europe/Berlin"}  # fmt: skip
    fake_llm.script(
        Reply(tool_calls=[("schedule_task", json.dumps(call))]),
        Reply(content="Done: every weekday at 09:00 Berlin time I will summarise incidents."),
    )
    code, out, err = await daemon.cli(
        "chat", "-m", "every weekday at 9 summarise yesterday's incidents (Berlin time)"
    )
    assert code == 0, err
    assert "every weekday at 09:00" in out
    code, out, _ = await daemon.cli("tasks", "show", "incident-summary")
    assert code == 0, out
    assert "0 9 * * mon-fri" in out and "Europe/Berlin" in out and "console" in out
    code, out, _ = await daemon.cli("tasks")
    assert "incident-summary" in out


async def test_chat_cli_shows_progress_while_the_model_is_slow(
    tmp_path: Path, fake_llm: FakeChatServer
) -> None:
    release = asyncio.Event()

    async def slow_model(body: dict[str, object]) -> Reply:
        await release.wait()
        return Reply(content="Thought it through.")

    fake_llm.responder = slow_model
    config = write_config(
        tmp_path / "config.toml", fake_llm.base_url, agent={"progress_after_seconds": 0.1}
    )
    daemon = DaemonProcess(config, tmp_path / "state")
    await daemon.start()
    try:
        chat = await asyncio.create_subprocess_exec(
            *NIGHTSHIFT, "chat", "-m", "think hard", "--config", str(config),
            "--state-dir", str(daemon.state_dir),
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert chat.stderr is not None and chat.stdout is not None
        line = await asyncio.wait_for(chat.stderr.readline(), 60)
        assert line.decode().strip() == "… still thinking… (0.1 s)"
        release.set()
        out = await asyncio.wait_for(chat.stdout.read(), 60)
        assert await chat.wait() == 0 and out.decode().strip() == "Thought it through."
        assert (await chat.stderr.read()) == b""  # one progress note, no more
    finally:
        release.set()
        await daemon.stop()


async def test_chat_cli_shows_a_swarm_runs_progress_and_its_summary_before_the_answer(
    tmp_path: Path, fake_llm: FakeChatServer
) -> None:
    goals = [f"behave=ok steps=1 delay=0.3 tool=host_metrics id=c{i}" for i in range(3)]
    tasks = [{"goal": g, "tools": ["host_metrics"]} for g in goals]
    call = Reply(tool_calls=[("delegate", json.dumps({"tasks": tasks}))])
    fake_llm.responder = SwarmScript([call, Reply(content="all three are fine")])
    config = write_config(tmp_path / "config.toml", fake_llm.base_url,
                          **{"agent.swarm": {"progress_edit_seconds": 0.2}})  # fmt: skip
    daemon = DaemonProcess(config, tmp_path / "state")
    await daemon.start()
    try:
        code, out, err = await daemon.cli("chat", "-m", "check the three hosts")
    finally:
        await daemon.stop()
    assert code == 0 and out.strip() == "all three are fine", err
    lines = [line.strip() for line in err.splitlines() if "swarm #" in line]
    assert lines[0].startswith("… swarm #1: 3 sub-agents"), err
    assert lines[-1].startswith("… swarm #1 finished in ") and "3 done" in lines[-1], err
