"""Prefix-cache hit ratio of the agent's prompts over a long scripted conversation.

The real AgentLoop (SQLite store, every message persisted and replayed) talks to the fake Kimi
server with its prefix cache on: it reports ``cached_tokens`` as the longest prefix, in 16-token
blocks of the rendered prompt, shared with any earlier request. Each turn the model calls a tool
once or twice (every third turn twice) and then answers; summaries are answered when asked.
The ratio is cached / prompt tokens over every call, summaries included, read back from the
usage table. With --recall the loop has a recall index (a fact per service seeded) and adds
its best hits after the history of each turn ([agent] recall_hits), as the daemon does.
Usage: python bench/prompt_cache.py [--turns 200] [--history 40] [--keep 12] [--recall]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from daemon.agent.build import build_agent, build_llm  # noqa: E402
from daemon.agent.loop import AgentRequest  # noqa: E402
from daemon.agent.services import ToolServices  # noqa: E402
from daemon.agent.tools.base import Tier, ToolContext, tool  # noqa: E402
from daemon.agent.tools.registry import default_registry  # noqa: E402
from daemon.config import load_settings  # noqa: E402
from daemon.core.clock import SystemClock  # noqa: E402
from memory.conversations import ConversationRepo  # noqa: E402
from memory.facts import FactRepo  # noqa: E402
from memory.outbox import OutboxRepo  # noqa: E402
from memory.recall import RecallRepo  # noqa: E402
from memory.runs import RunRepo  # noqa: E402
from memory.store import SqliteStore  # noqa: E402
from memory.usage import UsageRepo  # noqa: E402
from tests.fakes.chat_completions import FakeChatServer, Reply  # noqa: E402

SERVICES = ("nginx", "postgres", "redis", "backup", "cron", "sshd", "docker")


@tool(tier=Tier.READ_ONLY)
async def service_report(ctx: ToolContext, service: str) -> dict[str, Any]:
    """Status, recent log lines and resource use of one service (scripted for the bench).

    Args:
        service: The systemd unit name.
    """
    lines = [
        f"2026-12-0{i % 9 + 1}T0{i % 10}:1{i % 6}:00Z {service}[{1000 + i}]: request {i} served "
        f"in {i * 7 % 300} ms from 10.0.{i % 4}.{i % 250}"
        for i in range(len(service), len(service) + 12)
    ]
    return {"service": service, "active": True, "memory_mb": 100 + len(service) * 17, "log": lines}


def is_summary(body: dict[str, Any]) -> bool:
    """A summary request, in today's shape (instruction last) or the older one (system first)."""
    messages = body["messages"]
    return any(
        "Condense the conversation" in str(m.get("content")) for m in messages[::-1][:1]
    ) or ("Condense the conversation" in str(messages[0].get("content")))


def is_flush(body: dict[str, Any]) -> bool:
    """The silent flush turn before a compaction (instruction last, or a transcript)."""
    messages = body["messages"]
    return "remember_fact now" in str(messages[-1].get("content")) or "remember_fact, at most" in (
        str(messages[0].get("content"))
    )


class Script:
    """Plays the model: tool calls, then an answer; a summary whenever one is asked for."""

    def __init__(self) -> None:
        self.turn = 0
        self.step = 0
        self.summaries = 0
        self.flushes = 0

    def __call__(self, body: dict[str, Any]) -> Reply:
        messages = body["messages"]
        if is_flush(body):  # save one fact per flush, as a model that found something would
            self.flushes += 1
            fact = json.dumps({"text": f"services checked up to turn {self.turn} were all active"})
            return Reply(reasoning=None, tool_calls=[("remember_fact", fact)])
        if is_summary(body):
            self.summaries += 1
            text = f"Summary {self.summaries}: the user checked services up to turn {self.turn}; "
            return Reply(content=text + "all were active, no action taken. " * 12, reasoning=None)
        if messages[-1]["role"] == "user":
            self.turn += 1
            self.step = 0
        self.step += 1
        calls = 2 if self.turn % 3 == 0 else 1
        if self.step <= calls:
            service = SERVICES[(self.turn + self.step) % len(SERVICES)]
            args = json.dumps({"service": service})
            reasoning = f"Turn {self.turn}: look at {service} before answering."
            return Reply(reasoning=reasoning, tool_calls=[("service_report", args)])
        answer = (
            f"Turn {self.turn}: the service is active and its latency is normal "
            f"({self.turn * 13 % 300} ms at worst in the last hour). Nothing to do."
        )
        return Reply(content=answer, reasoning="The report is clear.")


async def run(turns: int, history: int, keep: int, recall: bool = False) -> None:
    async with FakeChatServer(prefix_cache=True) as fake:
        script = Script()
        fake.responder = script
        settings = load_settings(
            None,
            overrides={
                "llm": {"base_url": fake.base_url, "api_key": "sk-bench", "max_retries": 0},
                "agent": {
                    "history_messages": history,
                    "keep_recent_messages": keep,
                    "budget": {"daily_tokens": 10**12},
                    "recall_hits": 3 if recall else 0,
                },
            },
            environ_secrets=False,
        )
        with tempfile.TemporaryDirectory() as tmp:
            clock = SystemClock()
            store = await SqliteStore.open(Path(tmp) / "bench.db")
            usage = UsageRepo(store, clock)
            llm = build_llm(settings, usage=usage, clock=clock)
            conversations = ConversationRepo(store, clock)
            facts = FactRepo(store, clock)
            services = ToolServices(
                facts=facts, outbox=OutboxRepo(store, clock), recall=RecallRepo(store, clock)
            )
            for name in SERVICES if recall else ():
                await facts.remember(f"{name} runs on host-3; its logs are in /var/log/{name}")
            loop = build_agent(
                settings=settings,
                store=store,
                clock=clock,
                llm=llm,
                registry=default_registry([service_report]),
                conversations=conversations,
                runs=RunRepo(store, clock),
                services=services,
            )
            conversation = await conversations.get_or_create("bench", "long")
            started = time.perf_counter()
            for turn in range(turns):
                question = f"Turn {turn + 1}: is {SERVICES[turn % len(SERVICES)]} healthy?"
                result = await loop.run(
                    AgentRequest(conversation_id=conversation.id, text=question, actor="bench")
                )
                assert result.status == "ok", result
            seconds = time.perf_counter() - started
            total = await usage.summary_since(datetime(2000, 1, 1, tzinfo=UTC))
            facts = await FactRepo(store, clock).count()
            await llm.close()
            await store.close()
    assert fake.cache is not None and len(fake.cache.lookups) == len(fake.requests)
    starts = [
        looked
        for body, looked in zip(fake.requests, fake.cache.lookups, strict=True)
        if body["messages"][-1]["role"] == "user" and not is_summary(body) and not is_flush(body)
    ]
    start_ratio = sum(c for _, c in starts) / max(sum(p for p, _ in starts), 1)
    ratio = total.cached_tokens / max(total.prompt_tokens, 1)
    print(
        f"{turns} turns, history_messages={history}, keep_recent_messages={keep}, "
        f"recall hits in the prompt: {'3' if recall else 'off'}: "
        f"{total.calls} model calls ({script.summaries} summaries, "
        f"{script.flushes} flush turns) in {seconds:.1f} s"
    )
    print(
        f"prompt tokens {total.prompt_tokens:,}, cached {total.cached_tokens:,}, "
        f"uncached {total.prompt_tokens - total.cached_tokens:,}"
    )
    print(f"facts saved by flush turns: {facts}")
    print(f"prefix-cache hit ratio: {ratio:.1%} of input tokens")
    print(f"  on the first call of each turn alone: {start_ratio:.1%}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--history", type=int, default=40)
    parser.add_argument("--keep", type=int, default=12)
    parser.add_argument("--recall", action="store_true", help="recall hits in each prompt")
    args = parser.parse_args()
    asyncio.run(run(args.turns, args.history, args.keep, args.recall))
