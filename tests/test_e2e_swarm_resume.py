"""End to end: `nightshift run` is killed with SIGKILL in the middle of a swarm run started from
chat, and the next `nightshift run` resumes it: the finished sub-agent is not redone, the
interrupted one continues from its recorded replies, the queued one starts, and the report lands
in the coordinator's conversation."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sqlite3
from pathlib import Path
from typing import Any

from tests.fakes.chat_completions import SUBAGENT_MARK, FakeChatServer, Reply, SwarmScript
from tests.support import DaemonProcess, eventually, write_config

SHAPE = {"type": "object", "properties": {"status": {"type": "string"}}, "required": ["status"]}


def query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return list(conn.execute(sql))
    except sqlite3.OperationalError:
        return []


def child_calls(fake: FakeChatServer, since: int) -> dict[str, int]:
    calls: dict[str, int] = {}
    for request in fake.requests[since:]:
        messages = request["messages"]
        if str(messages[0].get("content", "")).startswith(SUBAGENT_MARK):
            goal = str(messages[1]["content"])
            calls[goal] = calls.get(goal, 0) + 1
    return calls


async def _stop_part_way(
    tmp_path: Path,
    fake_llm: FakeChatServer,
    script: SwarmScript,
    how: signal.Signals,
    **sections: dict[str, object],
) -> tuple[DaemonProcess, Path, int]:
    """Start the daemon with ``script``, ask from chat, and stop it with ``how`` once the first
    sub-agent is done and the second part way (two replies recorded); the daemon, its database
    and its exit status."""
    fake_llm.responder = script
    config = write_config(tmp_path / "config.toml", fake_llm.base_url,
                          **{"agent.swarm": {"concurrency": 1}}, **sections)  # fmt: skip
    daemon = DaemonProcess(config, tmp_path / "state")
    db = daemon.state_dir / "nightshift.db"
    await daemon.start()
    chat = asyncio.create_task(daemon.cli("chat", "-m", "check the three hosts"))
    try:
        await eventually(
            lambda: query(
                db,
                "SELECT 1 FROM swarm_tasks t WHERE t.status = 'running' AND t.id = 2 AND"
                " (SELECT count(*) FROM swarm_steps s WHERE s.task_id = 2 AND kind = 'llm') >= 2",
            ),
            30,
            "a swarm part way",
        )
        daemon.signal(how)
        code = await daemon.wait()
    finally:
        with contextlib.suppress(BaseException):
            await chat
        await daemon.stop()
    return daemon, db, code


async def test_nightshift_run_resumes_a_swarm_run_after_kill_9(
    tmp_path: Path, fake_llm: FakeChatServer
) -> None:
    goals = [f"behave=ok steps=3 delay=0.3 tool=host_metrics id=h{i}" for i in range(3)]
    tasks = [{"goal": g, "tools": ["host_metrics"], "result_shape": SHAPE} for g in goals]
    script = SwarmScript([Reply(tool_calls=[("delegate", json.dumps({"tasks": tasks}))])])
    daemon, db, _ = await _stop_part_way(tmp_path, fake_llm, script, signal.SIGKILL)
    assert [s for (s,) in query(db, "SELECT status FROM swarm_tasks ORDER BY id")] == [
        "done", "running", "queued"
    ]  # fmt: skip
    recorded = query(db, "SELECT count(*) FROM swarm_steps WHERE task_id = 2 AND kind = 'llm'")
    split = len(fake_llm.requests)

    await daemon.start()
    try:
        await eventually(
            lambda: query(db, "SELECT 1 FROM swarm_runs WHERE status <> 'running'"), 30, "resumed"
        )
        [(status, reason)] = query(db, "SELECT status, reason FROM swarm_runs")
        assert (status, reason) == (
            "done",
            "resumed after a restart; the coordinator's turn was not",
        )
        assert [s for (s,) in query(db, "SELECT status FROM swarm_tasks ORDER BY id")] == [
            "done"
        ] * 3
        after = child_calls(fake_llm, split)
        assert goals[0] not in after  # finished: kept, not redone
        assert after[goals[1]] == 4 - recorded[0][0]  # recorded replies replayed at no cost
        assert after[goals[2]] == 4
        note = (
            "SELECT content FROM messages WHERE role = 'assistant' AND content LIKE"
            " 'The daemon restarted during swarm run%'"
        )
        # the run is finished first, then its owner told
        await eventually(lambda: query(db, note), 30, "the owner told")
        told = query(db, note)
        assert len(told) == 1 and "3 done" in told[0][0]
        # the coordinator's conversation goes on: its delegate call got the report as answer
        script.coordinator.append(Reply(content="All three hosts are fine."))
        code, out, err = await daemon.cli("chat", "-m", "what did they find?")
        assert code == 0 and "All three hosts are fine." in out, err
        messages = fake_llm.requests[-1]["messages"]
        call = next(m for m in messages if m.get("tool_calls"))["tool_calls"][0]
        answer = next(m for m in messages if m.get("tool_call_id") == call["id"])
        assert json.loads(answer["content"])["summary"] == {"done": 3}
    finally:
        await daemon.stop()


async def test_a_sigterm_pauses_a_swarm_run_and_the_next_start_finishes_it(
    tmp_path: Path, fake_llm: FakeChatServer
) -> None:
    """`systemctl restart` in the middle of a swarm run: the daemon stops at once (it does not
    wait out the run, nor cut it off and call it cancelled), and the next start finishes it."""
    goals = [f"behave=ok steps=3 delay=0.4 tool=host_metrics id=t{i}" for i in range(3)]
    tasks = [{"goal": g, "tools": ["host_metrics"], "result_shape": SHAPE} for g in goals]
    script = SwarmScript([
        Reply(tool_calls=[("delegate", json.dumps({"tasks": tasks}))]),
        Reply(content="The swarm run is paused for the restart."),
    ])  # fmt: skip
    daemon, db, code = await _stop_part_way(
        tmp_path, fake_llm, script, signal.SIGTERM, runtime={"drain_timeout_seconds": 2}
    )
    assert code == 0
    assert [s for (s,) in query(db, "SELECT status FROM swarm_tasks ORDER BY id")] == [
        "done", "running", "queued"
    ]  # fmt: skip
    [(status, reason)] = query(db, "SELECT status, reason FROM swarm_runs")
    assert status == "running" and reason.startswith("paused: nightshift is stopping (")
    assert reason.endswith("); resumes at the next start")  # what `runs show` says meanwhile
    split = len(fake_llm.requests)

    await daemon.start()
    try:
        await eventually(
            lambda: query(db, "SELECT 1 FROM swarm_runs WHERE status <> 'running'"), 30, "resumed"
        )
        assert [s for (s,) in query(db, "SELECT status FROM swarm_tasks ORDER BY id")] == [
            "done"
        ] * 3
        after = child_calls(fake_llm, split)
        assert goals[0] not in after  # finished before the restart: kept
        assert after[goals[1]] <= 3  # went on from its recorded replies
        [(reason,)] = query(db, "SELECT reason FROM swarm_runs")
        assert "paused" not in reason
    finally:
        await daemon.stop()
