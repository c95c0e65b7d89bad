"""Durable swarm runs: a real process runs a swarm against the fake on loopback, is killed with
SIGKILL at a point chosen by polling its SQLite rows, and a new process resumes the run.

Side effects are lines in a file, so "ran twice" is counted, not inferred. Model calls are
counted by the fake, per sub-agent goal, before and after the kill.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sqlite3
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.chat_completions import SUBAGENT_MARK, FakeChatServer, Reply, SwarmScript
from tests.support import eventually

ROOT = Path(__file__).resolve().parents[3]
SHAPE = {
    "type": "object",
    "properties": {"status": {"type": "string"}, "steps": {"type": "integer"}},
    "required": ["status", "steps"],
}


@dataclass
class Rig:
    tmp: Path
    fake: FakeChatServer
    script: SwarmScript

    @property
    def db(self) -> Path:
        return self.tmp / "swarm.sqlite"

    @property
    def effects(self) -> list[str]:
        path = self.tmp / "effects.txt"
        return path.read_text().splitlines() if path.exists() else []

    @property
    def asks(self) -> list[dict[str, Any]]:
        path = self.tmp / "asks.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    async def spawn(
        self,
        mode: str,
        *,
        answer: str = "no",
        hold: float = 0.0,
        hold_on: str = "",
        concurrency: int = 3,
        max_depth: int = 1,
    ) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.scripts.swarm_worker", mode, "--db", str(self.db),
            "--base-url", self.fake.base_url, "--effects", str(self.tmp / "effects.txt"),
            "--asks", str(self.tmp / "asks.jsonl"), "--answer", answer, "--hold", str(hold),
            "--concurrency", str(concurrency), "--hold-on", hold_on,
            "--max-depth", str(max_depth),
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip

    def delegate(self, goals: list[str], *tools: str) -> None:
        tasks = [{"goal": g, "tools": list(tools), "result_shape": SHAPE} for g in goals]
        call = Reply(tool_calls=[("delegate", json.dumps({"tasks": tasks}))])
        self.script.coordinator.extend([call, Reply(content="summary")])

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        if not self.db.exists():
            return []
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5) as db:
            try:
                return list(db.execute(sql, args))
            except sqlite3.OperationalError:  # the schema is not there yet
                return []

    async def until(self, sql: str, *args: Any, timeout: float = 30.0) -> None:
        """Poll until ``sql`` returns a row (a condition on the process's committed rows)."""
        await eventually(lambda: self.query(sql, *args), timeout, sql)

    def child_calls(self, since: int = 0) -> Counter[str]:
        """Sub-agent model requests seen by the fake (from request ``since`` on), by goal."""
        calls: Counter[str] = Counter()
        for request in self.fake.requests[since:]:
            messages = request["messages"]
            if str(messages[0].get("content", "")).startswith(SUBAGENT_MARK):
                calls[str(messages[1]["content"])] += 1
        return calls


async def kill(proc: asyncio.subprocess.Process) -> None:
    proc.send_signal(signal.SIGKILL)
    await proc.wait()


async def finish(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()[-3000:]
    answer: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return answer


@pytest.fixture
async def rig(tmp_path: Path) -> Any:
    script = SwarmScript()
    async with FakeChatServer() as fake:
        fake.responder = script
        yield Rig(tmp_path, fake, script)


STEPS = 3  # tool steps per sub-agent: 4 model calls and 3 tool calls each


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
async def test_kill_9_at_a_random_step_then_resume_repeats_no_side_effect(
    rig: Rig, seed: int
) -> None:
    rng = random.Random(seed)
    goals = [f"behave=ok steps={STEPS} delay=0.02 tool=append_line keyed=1 id=t{i}" for i in
             range(5)]  # fmt: skip
    rig.delegate(goals, "append_line")
    worker = await rig.spawn("start", hold=rng.choice([0.0, 0.05, 0.2]))
    at = rng.randint(1, 30)  # of 35 step rows in a run that finishes
    await rig.until("SELECT 1 FROM (SELECT count(*) AS n FROM swarm_steps) WHERE n >= ?", at)
    await kill(worker)
    before = rig.child_calls()
    split = len(rig.fake.requests)
    kept = {
        row[0]: row[1:]
        for row in rig.query("SELECT id, result, steps FROM swarm_tasks WHERE status = 'done'")
    }
    recorded = dict(
        rig.query(
            "SELECT t.goal, count(s.id) FROM swarm_tasks t LEFT JOIN swarm_steps s"
            " ON s.task_id = t.id AND s.epoch = t.epoch AND s.kind = 'llm' GROUP BY t.id"
        )
    )
    interrupted = {g for (g,) in rig.query("SELECT goal FROM swarm_tasks WHERE status = 'running'")}

    answer = await finish(await rig.spawn("resume"))

    effects = rig.effects
    assert [line for line, n in Counter(effects).items() if n > 1] == []  # none ran twice
    expected = {f"append_line t{i}:{k}" for i in range(5) for k in range(STEPS)}
    assert set(effects) == expected  # and every one ran
    [report] = answer["reports"]
    assert report["summary"] == {"done": 5}
    assert answer["told"] == [
        {"run": report["run"], "status": "done",
         "reason": "resumed after a restart; the coordinator's turn was not"}
    ]  # fmt: skip
    after = rig.child_calls(split)
    for goal in goals:
        # replayed replies cost no call: only what was not recorded is asked again
        assert after[goal] == STEPS + 1 - recorded.get(goal, 0), goal
        assert before[goal] + after[goal] - (STEPS + 1) <= 1, goal  # at most 1 step redone
        if goal not in interrupted and recorded.get(goal, 0) == STEPS + 1:
            assert after[goal] == 0
    for task_id, (result, steps) in kept.items():  # finished sub-agents were kept as they were
        [(now_result, now_steps, status)] = rig.query(
            "SELECT result, steps, status FROM swarm_tasks WHERE id = ?", task_id
        )
        assert (now_result, now_steps, status) == (result, steps, "done")
    if any(recorded.get(g, 0) for g in interrupted):
        assert answer["replayed"] > 0
    [(status,)] = rig.query("SELECT status FROM swarm_runs")
    assert status == "done"


async def test_an_interrupted_side_effect_is_verified_by_its_probe_not_run_again(
    rig: Rig,
) -> None:
    goal = "behave=ok steps=2 tool=append_line keyed=1 id=v"
    rig.delegate([goal], "append_line")
    worker = await rig.spawn("start", hold=30.0)
    await rig.until(
        "SELECT 1 FROM swarm_steps WHERE name = 'append_line' AND state = 'intent'"
        " AND phase = 'acting'"
    )
    await _until_effect(rig, "append_line v:0")
    await kill(worker)
    answer = await finish(await rig.spawn("resume", hold=0.0))
    assert rig.effects == ["append_line v:0", "append_line v:1"]
    assert answer["probes"] == ["append_line: verified done (the line is in the file)"]
    [(state, output)] = rig.query(
        "SELECT state, output FROM swarm_steps WHERE name = 'append_line' AND input LIKE '%v:0%'"
    )
    assert state == "done" and "read-only check" in output
    assert answer["reports"][0]["summary"] == {"done": 1}


async def _until_effect(rig: Rig, line: str) -> None:
    await eventually(lambda: line in rig.effects, 30, line)


async def test_an_unknown_outcome_without_a_probe_is_put_to_a_person_and_not_rerun_on_no(
    rig: Rig,
) -> None:
    goal = "behave=ok steps=1 tool=poke keyed=1 id=p"
    rig.delegate([goal], "poke")
    worker = await rig.spawn("start", hold=30.0)
    await _until_effect(rig, "poke p:0")
    await kill(worker)
    answer = await finish(await rig.spawn("resume", answer="no"))
    assert rig.effects == ["poke p:0"]  # never run a second time
    [ask] = rig.asks
    assert ask["tool"] == "poke" and ask["arguments"] == {"text": "p:0"}
    assert ask["reason"].startswith("OUTCOME UNKNOWN: the daemon stopped while sub-agent")
    assert ask["conversation"] == "console|swarm|"  # asked where the run came from
    assert answer["probes"] == ["poke: outcome unknown; not run again"]
    [(state, error)] = rig.query("SELECT state, error FROM swarm_steps WHERE name = 'poke'")
    assert state == "failed" and error.startswith("UNKNOWN: the daemon stopped while poke")
    # the sub-agent was told and went on with its work
    assert answer["reports"][0]["summary"] == {"done": 1}


async def test_an_unknown_outcome_a_person_approves_runs_once_more(rig: Rig) -> None:
    rig.delegate(["behave=ok steps=1 tool=poke keyed=1 id=q"], "poke")
    worker = await rig.spawn("start", hold=30.0)
    await _until_effect(rig, "poke q:0")
    await kill(worker)
    answer = await finish(await rig.spawn("resume", answer="yes"))
    assert rig.effects == ["poke q:0", "poke q:0"]  # the person's call, said so
    assert answer["probes"] == ["poke: outcome unknown; a person (test:person) had it run again"]


async def test_an_approval_waiting_in_a_run_is_asked_again_after_the_restart(rig: Rig) -> None:
    rig.delegate(["behave=ok steps=1 tool=guarded keyed=1 id=g"], "guarded")
    worker = await rig.spawn("start", answer="hang")
    await rig.until("SELECT 1 FROM swarm_steps WHERE phase = 'authorising'")
    await eventually(lambda: rig.asks, 30, "the approval request")
    await kill(worker)
    assert rig.effects == []
    answer = await finish(await rig.spawn("resume", answer="yes"))
    first, again = rig.asks
    assert again == first  # same tool, arguments, actor, reason and chat
    assert rig.effects == ["guarded g:0"]
    assert answer["probes"] == ["guarded: never authorised; asked again"]
    assert answer["reports"][0]["summary"] == {"done": 1}


async def test_queued_sub_agents_start_and_finished_ones_are_not_redone(rig: Rig) -> None:
    goals = [f"behave=ok steps=1 tool=append_line keyed=1 id=k{i}" for i in range(4)]
    rig.delegate(goals, "append_line")
    worker = await rig.spawn("start", hold=30.0, hold_on="k1:", concurrency=1)
    await _until_effect(rig, "append_line k1:0")  # k0 is done, k1 acting, k2 and k3 queued
    await kill(worker)
    split = len(rig.fake.requests)
    statuses = [s for (s,) in rig.query("SELECT status FROM swarm_tasks ORDER BY id")]
    assert statuses == ["done", "running", "queued", "queued"]
    answer = await finish(await rig.spawn("resume", concurrency=1))
    after = rig.child_calls(split)
    assert after[goals[0]] == 0 and after[goals[1]] == 1  # k1: its last reply only
    assert after[goals[2]] == after[goals[3]] == 2
    assert sorted(rig.effects) == [f"append_line k{i}:0" for i in range(4)]
    assert answer["reports"][0]["summary"] == {"done": 4}
    assert answer["reports"][0]["resumed"] == [2, 3, 4]


async def test_a_sub_agents_interrupted_delegate_call_is_settled_by_its_children(
    rig: Rig,
) -> None:
    rig.script.latency = 0.3
    parent = "behave=nest id=n subtools=append_line"
    rig.delegate([parent], "delegate", "append_line")
    worker = await rig.spawn("start", max_depth=2)
    await rig.until("SELECT 1 FROM swarm_tasks WHERE depth = 2 AND status = 'running'")
    await kill(worker)
    split = len(rig.fake.requests)
    answer = await finish(await rig.spawn("resume", max_depth=2))
    [probe] = answer["probes"]
    assert probe.startswith("delegate: verified done (")
    [(spawns,)] = rig.query("SELECT spawns FROM swarm_runs")
    assert spawns == 2  # the delegate call was not made a second time
    rows = rig.query("SELECT depth, status, result FROM swarm_tasks ORDER BY id")
    assert [(d, s) for d, s, _ in rows] == [(1, "done"), (2, "done")]
    inner = json.loads(rows[0][2])["delegated"]
    assert "read-only check" in inner and '"done": 1' in inner
    after = rig.child_calls(split)
    assert after == {"behave=ok steps=0 id=n-child": 1, parent: 1}  # the reply it lost only
