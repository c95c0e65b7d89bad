"""Agent-loop overhead per step against the fake Kimi server at 0 ms latency.

The fake runs in its own process. The real AgentLoop (SQLite store, executor, audit, every step
and message persisted) goes through N tool steps; then the very same requests (same growing
histories) are sent again as bare LlmClient calls. The difference per step is the loop's own
cost beyond the HTTP round trip. Usage: python bench/agent_step.py [--steps 10] [--runs 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
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
from daemon.agent.tools.base import Tier, ToolContext, ToolRegistry, tool  # noqa: E402
from daemon.config import load_settings  # noqa: E402
from daemon.core.clock import SystemClock  # noqa: E402
from memory.conversations import ConversationRepo  # noqa: E402
from memory.runs import RunRepo  # noqa: E402
from memory.store import SqliteStore  # noqa: E402
from memory.usage import UsageRepo  # noqa: E402


@tool(tier=Tier.READ_ONLY)
async def echo(ctx: ToolContext, text: str) -> dict[str, Any]:
    """Echo text back.

    Args:
        text: What to echo.
    """
    return {"echo": text}


def script(steps: int, runs: int) -> list[dict[str, Any]]:
    one = [{"tool_calls": [["echo", json.dumps({"text": str(i)})]]} for i in range(steps)]
    one.append({"content": "done"})
    return (one + one) * runs  # each run: once through the loop, once bare


async def main(steps: int, runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        script_path = Path(tmp) / "script.json"
        script_path.write_text(json.dumps(script(steps, runs)))
        fake = subprocess.Popen(
            [sys.executable, "-m", "tests.fakes.chat_completions", "--script", str(script_path)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert fake.stdout is not None
        base_url = fake.stdout.readline().strip()
        try:
            loop_ms, bare_ms = await measure(base_url, Path(tmp), steps, runs)
        finally:
            fake.terminate()
            fake.wait()
    calls = steps + 1
    overhead = [(lp - bare) / calls for lp, bare in zip(loop_ms, bare_ms, strict=True)]
    print(f"{runs} runs of {steps} tool steps ({calls} LLM calls each), fake in its own process")
    print(f"agent loop per run:   median {statistics.median(loop_ms):.1f} ms")
    print(
        f"bare calls per run:   median {statistics.median(bare_ms):.1f} ms "
        f"({statistics.median(bare_ms) / calls:.2f} ms per HTTP round trip)"
    )
    print(
        f"loop overhead per step beyond the round trip: median {statistics.median(overhead):.2f} ms"
        f", p90 {sorted(overhead)[int(len(overhead) * 0.9)]:.2f} ms"
    )


async def measure(
    base_url: str, tmp: Path, steps: int, runs: int
) -> tuple[list[float], list[float]]:
    settings = load_settings(
        None,
        overrides={
            "llm": {"base_url": base_url, "api_key": "sk-bench", "max_retries": 0},
            "agent": {"max_steps": steps + 1, "repeated_call_limit": steps + 1},
        },
        environ_secrets=False,
    )
    clock = SystemClock()
    store = await SqliteStore.open(tmp / "bench.db")
    llm = build_llm(settings, usage=UsageRepo(store, clock), clock=clock)
    conversations, runs_repo = ConversationRepo(store, clock), RunRepo(store, clock)
    registry = ToolRegistry([echo])
    loop = build_agent(
        settings=settings,
        store=store,
        clock=clock,
        llm=llm,
        registry=registry,
        conversations=conversations,
        runs=runs_repo,
    )
    sent: list[list[dict[str, Any]]] = []
    real_complete = llm.complete

    async def recording_complete(messages: list[dict[str, Any]], **kwargs: Any) -> Any:
        sent.append(json.loads(json.dumps(messages)))
        return await real_complete(messages, **kwargs)

    loop_ms, bare_ms = [], []
    for run in range(runs):
        sent.clear()
        llm.complete = recording_complete  # type: ignore[method-assign]
        conversation = await conversations.get_or_create("bench", f"run{run}")
        started = time.perf_counter()
        result = await loop.run(
            AgentRequest(conversation_id=conversation.id, text="go", actor="bench")
        )
        loop_ms.append((time.perf_counter() - started) * 1000)
        assert result.status == "ok", result
        llm.complete = real_complete  # type: ignore[method-assign]
        started = time.perf_counter()
        for messages in list(sent):
            await llm.complete(messages, tools=registry.schemas(), mode="thinking", purpose="b")
        bare_ms.append((time.perf_counter() - started) * 1000)
    await llm.close()
    await store.close()
    return loop_ms, bare_ms


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(main(args.steps, args.runs))
