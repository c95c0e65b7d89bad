"""Resuming a swarm after kill -9: what is redone, repeated and paid for again.

Each trial starts a swarm in its own process (tests/scripts/swarm_worker.py: real SQLite, agent
loop, executor, openai client) against the fake on loopback, SIGKILLs it once a random number of
step rows are committed, and resumes the run in a new process. Every tool call is a side effect
(a line appended to a file, with a read-only probe), so repeats are counted, not inferred.

Figures: steps redone per interrupted sub-agent (model calls asked again for replies that were
already given, plus side effects run again; target <= 1), side effects repeated (target 0),
model tokens spent by the resume against the original process, and against what a restart from
scratch would spend; resume wall time.

Usage: python bench/swarm_resume.py [--agents 30] [--steps 6] [--trials 8] [--latency 0.02]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fakes.chat_completions import (  # noqa: E402
    SUBAGENT_MARK,
    FakeChatServer,
    Reply,
    SwarmScript,
)

SHAPE = {"type": "object", "properties": {"status": {"type": "string"}}, "required": ["status"]}


class Counting:
    """The swarm script, counting model calls and tokens per sub-agent goal and phase."""

    def __init__(self, script: SwarmScript) -> None:
        self.script = script
        self.phase = "original"
        self.calls: dict[str, Counter[str]] = {"original": Counter(), "resume": Counter()}
        self.tokens = Counter[str]()

    def __call__(self, body: dict[str, Any]) -> Reply:
        reply = self.script(body)
        messages = body["messages"]
        if str(messages[0].get("content", "")).startswith(SUBAGENT_MARK):
            self.calls[self.phase][str(messages[1]["content"])] += 1
        self.tokens[self.phase] += reply.prompt_tokens + reply.completion_tokens
        return reply


def _query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return list(conn.execute(sql))
    except sqlite3.OperationalError:
        return []


async def _spawn(
    mode: str, tmp: Path, base_url: str, concurrency: int
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.scripts.swarm_worker",
        mode,
        "--db",
        str(tmp / "db.sqlite"),
        "--base-url",
        base_url,
        "--effects",
        str(tmp / "effects.txt"),
        "--asks",
        str(tmp / "asks.jsonl"),
        "--concurrency",
        str(concurrency),
        "--hold",
        "0.01",
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def trial(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    tmp = Path(tempfile.mkdtemp(prefix="swarm-resume-"))
    db = tmp / "db.sqlite"
    goals = [
        f"behave=ok steps={args.steps} delay={args.latency} tool=append_line keyed=1 id=t{i}"
        for i in range(args.agents)
    ]
    tasks = [{"goal": g, "tools": ["append_line"], "result_shape": SHAPE} for g in goals]
    script = SwarmScript([Reply(tool_calls=[("delegate", json.dumps({"tasks": tasks}))])])
    counting = Counting(script)
    total_rows = args.agents * (2 * args.steps + 1)
    at = rng.randint(1, total_rows - 1)
    async with FakeChatServer() as fake:
        fake.responder = counting
        worker = await _spawn("start", tmp, fake.base_url, args.concurrency)
        while True:
            rows = _query(db, "SELECT count(*) FROM swarm_steps")
            if rows and rows[0][0] >= at or worker.returncode is not None:
                break
            await asyncio.sleep(0.005)
        worker.send_signal(signal.SIGKILL)
        await worker.wait()
        recorded = dict(
            _query(
                db,
                "SELECT t.goal, count(s.id) FROM swarm_tasks t LEFT JOIN swarm_steps s"
                " ON s.task_id = t.id AND s.epoch = t.epoch AND s.kind = 'llm' GROUP BY t.id",
            )
        )
        interrupted = [
            g for (g,) in _query(db, "SELECT goal FROM swarm_tasks WHERE status = 'running'")
        ]
        counting.phase = "resume"
        started = time.perf_counter()
        resumer = await _spawn("resume", tmp, fake.base_url, args.concurrency)
        out, err = await resumer.communicate()
        seconds = time.perf_counter() - started
        if resumer.returncode != 0:
            raise SystemExit(err.decode()[-2000:])
    effects = (tmp / "effects.txt").read_text().splitlines()
    repeated = sum(n - 1 for n in Counter(effects).values() if n > 1)
    per_call = 15  # each scripted reply: 10 prompt + 5 completion tokens
    redone: list[int] = []
    for goal in interrupted:
        asked_again = (
            counting.calls["original"][goal] + counting.calls["resume"][goal] - (args.steps + 1)
        )
        redone.append(max(asked_again, 0))
    report = json.loads(out.decode().strip().splitlines()[-1])
    summary = report["reports"][0]["summary"] if report["reports"] else {}
    return {
        "seed": seed,
        "killed_at_row": at,
        "interrupted": len(interrupted),
        "redone": redone,
        "repeated": repeated,
        "missing": args.agents * args.steps - len(set(effects)),
        "tokens_original": counting.tokens["original"],
        "tokens_resume": counting.tokens["resume"],
        "tokens_from_scratch": args.agents * (args.steps + 1) * per_call + per_call,
        "replayed": report["replayed"],
        "recorded_llm": sum(recorded.values()),
        "summary": summary,
        "seconds": seconds,
    }


async def main(args: argparse.Namespace) -> None:
    print(
        f"agents={args.agents} steps={args.steps} (tool calls each, all side effects) "
        f"concurrency={args.concurrency} latency={args.latency}s trials={args.trials}"
    )
    results = [await trial(args, seed) for seed in range(1, args.trials + 1)]
    for r in results:
        print(
            f"seed {r['seed']}: killed at row {r['killed_at_row']}, {r['interrupted']} "
            f"interrupted, redone per interrupted {r['redone']}, side effects repeated "
            f"{r['repeated']}, missing {r['missing']}, replayed {r['replayed']} steps, tokens "
            f"original {r['tokens_original']} / resume {r['tokens_resume']} (from scratch "
            f"{r['tokens_from_scratch']}), resume {r['seconds']:.2f} s, {r['summary']}"
        )
    redone = [n for r in results for n in r["redone"]]
    print("--")
    print(
        f"steps redone per interrupted sub-agent: max {max(redone, default=0)}, mean "
        f"{statistics.fmean(redone) if redone else 0:.2f} over {len(redone)} (target <= 1)"
    )
    print(
        f"side effects repeated: {sum(r['repeated'] for r in results)} (target 0); "
        f"side effects missing: {sum(r['missing'] for r in results)}"
    )
    ratio = [r["tokens_resume"] / max(r["tokens_original"], 1) for r in results]
    scratch = [r["tokens_resume"] / r["tokens_from_scratch"] for r in results]
    print(
        f"tokens on resume / on the original: median {statistics.median(ratio):.2f}; "
        f"resume / a restart from scratch: median {statistics.median(scratch):.2f}"
    )
    tokens_needed = [
        r["tokens_original"] + r["tokens_resume"] - r["tokens_from_scratch"] for r in results
    ]
    print(f"tokens spent beyond one clean run: max {max(tokens_needed)} (one model call = 15)")
    print(f"resume wall time: median {statistics.median(r['seconds'] for r in results):.2f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=30)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--concurrency", type=int, default=10)
    asyncio.run(main(parser.parse_args()))
