"""A swarm under load: 300 sub-agents, ~4,000 steps, against the fake with 100 ms per call.

The fake runs in its own process. A coordinator agent (the real AgentLoop) makes one delegate
call with 300 subtasks; sub-agents take 6 or 7 tool steps each (a step row is one model call or
one tool call: 4,000 rows in all), 10 % are slow (300 ms per call), 2 % stall on their first
attempt (the stream hangs after its first chunk; caught after ``--stall`` s, reassigned), 1 %
fail (HTTP 500). The coordinator gives each an ``expected_seconds`` estimate within 25 %
(longest start first; ``--no-hints``: none, started in the order given). Everything real:
SQLite store, executor with audit, usage rows, the openai client streaming over loopback.

Figures: wall time against the critical path at the configured concurrency (the larger of the
longest sub-agent and the total work divided by the concurrency, stall waits included), harness
CPU per step beyond the same number of bare model calls, peak RSS, event-loop lag p99, stalls
caught and how long after the last progress.

Usage: python bench/swarm.py [--agents 300] [--concurrency 50] [--latency 0.1] [--stall 1.0]
                             [--no-hints] [--no-stream]
       python bench/swarm.py --concurrency 10,25,50   (a sweep: one run each, then a table)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from daemon.agent.build import build_agent, build_llm  # noqa: E402
from daemon.agent.loop import AgentRequest  # noqa: E402
from daemon.agent.swarm import attach_swarm  # noqa: E402
from daemon.agent.tools.base import Tier, ToolContext, ToolRegistry, tool  # noqa: E402
from daemon.config import load_settings  # noqa: E402
from daemon.core.clock import SystemClock  # noqa: E402
from daemon.core.errors import NightshiftError  # noqa: E402
from daemon.core.redact import redact_messages  # noqa: E402
from memory.conversations import ConversationRepo  # noqa: E402
from memory.store import SqliteStore  # noqa: E402
from memory.usage import UsageRepo  # noqa: E402

SHAPE = {
    "type": "object",
    "properties": {"status": {"type": "string"}, "steps": {"type": "integer"}},
    "required": ["status", "steps"],
}


@tool(tier=Tier.READ_ONLY)
async def echo(ctx: ToolContext, text: str) -> dict[str, Any]:
    """Echo text back.

    Args:
        text: What to echo.
    """
    return {"echo": text}


def plan(agents: int, latency: float, seed: int) -> list[dict[str, Any]]:
    """The subtasks: behaviour, tool steps and the expected duration of each."""
    rng = random.Random(seed)
    kinds = ["stall"] * round(agents * 0.02) + ["fail"] * round(agents * 0.01)
    kinds += ["slow"] * round(agents * 0.10)
    kinds += ["ok"] * (agents - len(kinds))
    rng.shuffle(kinds)
    long_ones = set(rng.sample(range(agents), agents // 6))
    tasks = []
    for i, kind in enumerate(kinds):
        steps = 7 if i in long_ones else 6
        delay = latency * 3 if kind == "slow" else latency
        goal = f"behave={'ok' if kind == 'slow' else kind} steps={steps} delay={delay} id=t{i}"
        # The coordinator's guess of how long it takes: within 25 % (it cannot know which will
        # stall or fail), as a model that knows which hosts are big might give.
        guess = round((steps + 1) * delay * rng.uniform(0.75, 1.25), 1)
        tasks.append({"goal": goal, "tools": ["echo"], "result_shape": SHAPE, "kind": kind,
                      "steps": steps, "delay": delay, "expected_seconds": guess})  # fmt: skip
    return tasks


def _durations(tasks: list[dict[str, Any]], stall: float) -> list[float]:
    """Each sub-agent's time with zero overhead: its calls, a stall's wait and retry included."""
    durations: list[float] = []
    for t in tasks:
        calls = t["steps"] + 1
        if t["kind"] == "fail":
            durations.append(t["delay"])
        elif t["kind"] == "stall":
            durations.append(t["delay"] + stall + calls * t["delay"])
        else:
            durations.append(calls * t["delay"])
    return durations


def ideal(tasks: list[dict[str, Any]], concurrency: int, stall: float) -> float:
    """Critical path at this concurrency: max(longest sub-agent, total work / concurrency)."""
    durations = _durations(tasks, stall)
    return max(max(durations), sum(durations) / concurrency)


def scheduling_floor(tasks: list[dict[str, Any]], concurrency: int, stall: float,
                     hints: bool) -> float:  # fmt: skip
    """Wall time of the same plan with zero overhead, scheduled as the swarm does: started as
    slots free up, longest expected first when the coordinator gives estimates (``hints``),
    else in the order given; a stalled attempt's retry keeps its slot. The critical path is a
    lower bound that no schedule reaches when a long sub-agent starts late."""
    durations = _durations(tasks, stall)
    order = list(range(len(tasks)))
    if hints:
        order.sort(key=lambda i: -float(tasks[i]["expected_seconds"]))
    finishes = [0.0] * min(concurrency, len(tasks))
    for i in order:
        start = heapq.heappop(finishes)
        heapq.heappush(finishes, start + durations[i])
    return max(finishes)


class LagProbe:
    """Samples event-loop lag: how late a 10 ms sleep wakes up."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(0.01)
            self.lags.append(loop.time() - start - 0.01)

    def __enter__(self) -> LagProbe:
        self._task = asyncio.create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()

    def p99_ms(self) -> float:
        lags = sorted(self.lags)
        return lags[int(len(lags) * 0.99)] * 1000 if lags else 0.0


STREAM = True
HINTS = True  # the coordinator gives each subtask an expected_seconds estimate


def settings_for(base_url: str, concurrency: int, stall: float) -> Any:
    return load_settings(
        None,
        overrides={
            "llm": {"base_url": base_url, "api_key": "sk-bench", "max_retries": 0,
                    "concurrency": concurrency, "stream": STREAM},
            "agent": {
                "turn_timeout_seconds": 3600,
                "budget": {"daily_tokens": 100_000_000},
                "swarm": {"concurrency": concurrency, "stall_seconds": stall, "max_attempts": 2,
                          "run_max_tokens": 50_000_000, "run_max_steps": 100_000},
            },
        },
        environ_secrets=False,
    )  # fmt: skip


async def run_swarm(
    base_url: str, tmp: Path, tasks: list[dict[str, Any]], concurrency: int, stall: float
) -> dict[str, Any]:
    settings = settings_for(base_url, concurrency, stall)
    clock = SystemClock()
    store = await SqliteStore.open(tmp / "swarm.sqlite")
    usage = UsageRepo(store, clock)
    llm = build_llm(settings, usage=usage, clock=clock)
    conversations = ConversationRepo(store, clock)
    loop = build_agent(settings=settings, store=store, clock=clock, llm=llm,
                       registry=ToolRegistry([echo]), conversations=conversations)  # fmt: skip
    swarm = attach_swarm(loop, settings=settings, llm=llm, store=store, clock=clock)
    sent: list[tuple[str, Any, str]] = []
    complete = llm.complete

    async def recording(messages: list[dict[str, Any]], **kwargs: Any) -> Any:
        # A snapshot (the list grows after the call): one json.dumps, far cheaper than deepcopy.
        sent.append((json.dumps(messages), kwargs.get("tools"), kwargs["mode"]))
        return await complete(messages, **kwargs)

    llm.complete = recording  # type: ignore[method-assign]
    conversation = await conversations.get_or_create("bench", "swarm")
    request = AgentRequest(conversation_id=conversation.id, text="check the fleet",
                           actor="bench", unattended=True)  # fmt: skip
    cpu0, wall0 = time.process_time(), time.perf_counter()
    with LagProbe() as probe:
        result = await loop.run(request)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    run = await swarm.repo.get_run(1)
    rows = await swarm.repo.tasks(1)
    figures = {
        "status": result.status,
        "wall": wall,
        "cpu": cpu,
        "rows": run.steps,
        "counts": _counts([r.status for r in rows]),
        "stalls": swarm.watchdog.stalls,
        "stall_latency": swarm.watchdog.stall_latency,
        "lag_p99_ms": probe.p99_ms(),
        "refused": swarm.steps.refused,
        "batches": swarm.steps.batches,
        "statements": swarm.steps.statements,
        "usage_groups": usage._rows.groups,
    }
    figures["sent"] = sent
    await swarm.close()
    await llm.close()
    await store.close()
    return figures


async def run_bare(
    base_url: str, sent: list[tuple[str, Any, str]], concurrency: int
) -> tuple[float, float]:
    """CPU seconds to send the very same requests again as bare model calls at the same
    concurrency: the HTTP round trip (and the client's own work) without the harness. The
    messages are redacted before the clock starts: redaction counts as harness work."""
    settings = settings_for(base_url, concurrency, 60)  # loading settings renews the secrets:
    llm = build_llm(settings, usage=None, clock=SystemClock())  # redact after it, not before
    requests = [
        (redact_messages(messages), tools, mode)
        for text, tools, mode in sent
        if not _hangs(messages := json.loads(text))
    ]
    slots = asyncio.Semaphore(concurrency)

    async def one(messages: list[dict[str, Any]], tools: Any, mode: Any) -> None:
        async with slots:
            with contextlib.suppress(NightshiftError):
                await llm.complete(messages, tools=tools, mode=mode, purpose="bench")

    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one(*request) for request in requests))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    await llm.close()
    return cpu, wall


def _hangs(messages: list[dict[str, Any]]) -> bool:
    """A stalled attempt's request (replayed, it would hang: its CPU is not counted)."""
    goal = str(messages[1].get("content", "")) if len(messages) > 1 else ""
    return "behave=stall_always" in goal


def _cpu_of(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _counts(statuses: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for status in statuses:
        out[status] = out.get(status, 0) + 1
    return out


async def main(
    agents: int, concurrency: int, latency: float, stall: float, seed: int
) -> dict[str, float]:
    tasks = plan(agents, latency, seed)
    given = ("goal", "tools", "result_shape") + (("expected_seconds",) if HINTS else ())
    delegate = {"tasks": [{k: t[k] for k in given} for t in tasks]}
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        spec = tmp / "swarm.json"
        spec.write_text(json.dumps({"coordinator": [
            {"tool_calls": [["delegate", json.dumps(delegate)]]}, {"content": "all checked"},
        ], "latency": latency}))  # fmt: skip
        fake = subprocess.Popen(
            [sys.executable, "-m", "tests.fakes.chat_completions", "--swarm", str(spec)],
            cwd=ROOT, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert fake.stdout is not None
        base_url = fake.stdout.readline().strip()
        try:
            fake_cpu0 = _cpu_of(fake.pid)
            figures = await run_swarm(base_url, tmp, tasks, concurrency, stall)
            figures["fake_cpu"] = _cpu_of(fake.pid) - fake_cpu0
            bare_cpu, bare_wall = await run_bare(base_url, figures["sent"], concurrency)
        finally:
            fake.terminate()
            fake.wait()
    critical = ideal(tasks, concurrency, stall)
    rows = figures["rows"]
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    latencies = figures["stall_latency"]
    print(f"{agents} sub-agents, {rows} steps (model + tool calls), concurrency {concurrency}, "
          f"{latency * 1000:.0f} ms per call, stall T = {stall:g} s, stream {STREAM}; coordinator: "
          f"{figures['status']}")  # fmt: skip
    print(f"sub-agents: {figures['counts']}")
    print(f"wall {figures['wall']:.2f} s vs critical path {critical:.2f} s "
          f"= {figures['wall'] / critical:.2f}x")  # fmt: skip
    floor = scheduling_floor(tasks, concurrency, stall, HINTS)
    how = "longest expected first (estimates within 25 %)" if HINTS else "in the order given"
    print(
        f"scheduling {how} with zero overhead would take {floor:.2f} s "
        f"= {floor / critical:.2f}x; the harness adds {figures['wall'] / floor:.2f}x"
    )
    overhead = (figures["cpu"] - bare_cpu) / rows * 1000
    print(f"CPU: swarm {figures['cpu']:.2f} s ({figures['cpu'] / figures['wall']:.0%} of the "
          f"wall time), the same {len(figures['sent'])} model requests sent bare "
          f"{bare_cpu:.2f} s; harness overhead {overhead:.2f} ms CPU per step")  # fmt: skip
    print(f"the same requests sent bare took {bare_wall:.2f} s wall "
          f"({bare_cpu / bare_wall:.0%} CPU): the floor for this client on this box")  # fmt: skip
    print(f"the fake server (its own process) used {figures['fake_cpu']:.2f} s CPU "
          f"({figures['fake_cpu'] / figures['wall']:.0%} of the wall time)")  # fmt: skip
    print(f"step writes: {figures['batches']} transactions, {figures['statements']} statements "
          f"for {rows} steps; stale writes refused: {figures['refused']}; usage rows: "
          f"{figures['usage_groups']} INSERTs for {len(figures['sent'])} calls")  # fmt: skip
    print(f"peak RSS {rss_mb:.0f} MB; event-loop lag p99 {figures['lag_p99_ms']:.1f} ms")
    if latencies:
        print(f"stalls caught: {figures['stalls']} (planned "
              f"{sum(1 for t in tasks if t['kind'] == 'stall')}), "
              f"{min(latencies):.2f}-{max(latencies):.2f} s after the last progress "
              f"(T = {stall:g} s)")  # fmt: skip
    else:
        print("stalls caught: 0")
    return {
        "concurrency": concurrency,
        "ratio": figures["wall"] / critical,
        "cpu_ms": figures["cpu"] / rows * 1000,
        "overhead_ms": overhead,
        "bare_ratio": bare_wall / critical,
        "floor_ratio": floor / critical,
        "lag_ms": figures["lag_p99_ms"],
        "rss": rss_mb,
    }


async def sweep(levels: list[int], agents: int, latency: float, stall: float, seed: int) -> None:
    """One run per concurrency, then a table of the headline figures."""
    rows = []
    for level in levels:
        rows.append(await main(agents, level, latency, stall, seed))
        print()
    print("concurrency  wall/critical  schedule floor  bare wall/critical  CPU ms/step  "
          "overhead ms/step  lag p99 ms  peak RSS MB")  # fmt: skip
    for r in rows:
        print(f"{r['concurrency']:>11.0f}  {r['ratio']:>12.2f}x  {r['floor_ratio']:>13.2f}x  "
              f"{r['bare_ratio']:>17.2f}x  "
              f"{r['cpu_ms']:>11.2f}  {r['overhead_ms']:>16.2f}  {r['lag_ms']:>10.1f}  "
              f"{r['rss']:>11.0f}")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=300)
    parser.add_argument("--concurrency", default="50", help="one level, or a sweep: 10,25,50")
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--stall", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--no-stream", action="store_true", help="[llm] stream = false")
    parser.add_argument("--no-hints", action="store_true",
                        help="no expected_seconds given: started in order")  # fmt: skip
    a = parser.parse_args()
    STREAM = not a.no_stream
    HINTS = not a.no_hints
    asyncio.run(sweep([int(c) for c in a.concurrency.split(",")], a.agents, a.latency, a.stall,
                      a.seed))  # fmt: skip
