"""A process that runs a swarm (or resumes one) against a Chat Completions server, to be killed.

Real parts: the SQLite store, the agent loop with the delegate tool, the executor, the openai
client over loopback. Its tools leave side effects a test can count, one line each in the
effects file:

- ``append_line`` (write tier, with a read-only probe: is its line in the file?) appends
  ``append_line <text>``, then holds for ``--hold`` seconds before it returns (the window in
  which a kill leaves its outcome unknown; only calls whose text contains ``--hold-on``);
- ``poke`` (write tier, no probe: an unknown outcome goes to a person) appends ``poke <text>``;
- ``guarded`` (privileged: a person approves it first) appends ``guarded <text>``.

A person is played by ``--answer``: ``yes``/``no`` to every request, or ``hang`` (never
answers). Every request is appended to the asks file as a JSON line.

Usage::

    python -m tests.scripts.swarm_worker start|resume --db PATH --base-url URL \\
        --effects FILE --asks FILE [--answer yes|no|hang] [--hold S] [--concurrency N]

``start`` plays one coordinator turn (the server's script delegates); ``resume`` resumes the
unfinished runs as ``nightshift run`` does at startup and prints each run's report as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from daemon.agent.build import build_agent, build_llm
from daemon.agent.loop import AgentRequest
from daemon.agent.swarm import attach_swarm
from daemon.agent.tools.base import Tier, ToolContext, ToolRegistry, Verdict, tool
from daemon.config import load_settings
from daemon.core.clock import SystemClock
from daemon.core.messages import ApprovalDecision
from memory.audit import AuditRepo
from memory.conversations import ConversationRepo
from memory.store import SqliteStore
from memory.swarm import SwarmRun

EFFECTS = [Path("effects.txt")]  # set from --effects
HOLD = [0.0]
HOLD_ON = [""]  # hold only calls whose text contains this


async def _hold(text: str) -> None:
    if HOLD_ON[0] in text:
        await asyncio.sleep(HOLD[0])


def _effect(line: str) -> None:
    with EFFECTS[0].open("a") as out:
        out.write(line + "\n")
        out.flush()
        os.fsync(out.fileno())


@tool(tier=Tier.WRITE)
async def append_line(ctx: ToolContext, text: str) -> str:
    """Append a line to the effects file.

    Args:
        text: The line.
    """
    _effect(f"append_line {text}")
    await _hold(text)
    return f"appended {text}"


async def _appended(ctx: ToolContext, arguments: dict[str, Any], since: datetime) -> Verdict:
    lines = EFFECTS[0].read_text().splitlines() if EFFECTS[0].exists() else []
    found = f"append_line {arguments['text']}" in lines
    return Verdict(found, "the line is in the file" if found else "the line is not in the file")


append_line = append_line.with_verify(_appended)


@tool(tier=Tier.WRITE)
async def poke(ctx: ToolContext, text: str) -> str:
    """Poke something (no way to check afterwards).

    Args:
        text: What.
    """
    _effect(f"poke {text}")
    await _hold(text)
    return f"poked {text}"


@tool(tier=Tier.PRIVILEGED)
async def guarded(ctx: ToolContext, text: str) -> str:
    """A privileged action.

    Args:
        text: What.
    """
    _effect(f"guarded {text}")
    return f"done {text}"


class Person:
    """Answers every approval request the same way, and notes each one."""

    def __init__(self, answer: str, asks: Path) -> None:
        self.answer = answer
        self.asks = asks

    async def request(
        self,
        *,
        tool: str,
        arguments: dict[str, Any],
        actor: str,
        reason: str,
        ttl_seconds: float,
        conversation: str | None = None,
    ) -> ApprovalDecision:
        note = {"tool": tool, "arguments": arguments, "actor": actor, "reason": reason,
                "conversation": conversation}  # fmt: skip
        with self.asks.open("a") as out:
            out.write(json.dumps(note) + "\n")
        if self.answer == "hang":
            await asyncio.Event().wait()
        return ApprovalDecision(approved=self.answer == "yes", by="test:person")


async def main(args: argparse.Namespace) -> int:
    HOLD[0] = args.hold
    HOLD_ON[0] = args.hold_on
    EFFECTS[0] = Path(args.effects)
    settings = load_settings(
        None,
        overrides={
            "llm": {"base_url": args.base_url, "api_key": "sk-test", "max_retries": 0,
                    "retry_initial_seconds": 0, "concurrency": 50},
            "agent": {
                "budget": {"daily_tokens": 100_000_000},
                "swarm": {"concurrency": args.concurrency, "stall_seconds": 30,
                          "max_depth": args.max_depth},
            },
        },
        environ_secrets=False,
    )  # fmt: skip
    clock = SystemClock()
    store = await SqliteStore.open(Path(args.db))
    client = build_llm(settings, usage=None, clock=clock)
    conversations = ConversationRepo(store, clock)
    loop = build_agent(
        settings=settings, store=store, clock=clock, llm=client, audit=AuditRepo(store, clock),
        registry=ToolRegistry([append_line, poke, guarded]), conversations=conversations,
        approvals=Person(args.answer, Path(args.asks)),
    )  # fmt: skip
    swarm = attach_swarm(loop, settings=settings, llm=client, store=store, clock=clock)
    try:
        if args.mode == "start":
            conversation = await conversations.get_or_create("console", "swarm")
            request = AgentRequest(
                conversation_id=conversation.id, text="fan out", actor="test:ann",
                unattended=False, origin="console|swarm|",
            )  # fmt: skip
            result = await loop.run(request)
            print(json.dumps({"status": result.status}), flush=True)
        else:
            told: list[dict[str, Any]] = []

            async def notify(run: SwarmRun, report: dict[str, Any]) -> None:
                told.append({"run": run.id, "status": run.status, "reason": run.reason})

            reports = await swarm.resume(notify)
            out = {"reports": reports, "told": told, "replayed": swarm.replayed,
                   "probes": swarm.probes}  # fmt: skip
            print(json.dumps(out, default=str), flush=True)
    finally:
        await swarm.close()
        await client.close()
        await store.close()
    return 0


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["start", "resume"])
    parser.add_argument("--db", required=True)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--effects", required=True)
    parser.add_argument("--asks", required=True)
    parser.add_argument("--answer", default="no", choices=["yes", "no", "hang"])
    parser.add_argument("--hold", type=float, default=0.0)
    parser.add_argument("--hold-on", default="")
    parser.add_argument("--concurrency", type=int, default=3)
    parser.add_argument("--max-depth", type=int, default=1)
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(_parse(sys.argv[1:]))))
