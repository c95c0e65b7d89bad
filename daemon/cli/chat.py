"""`nightshift chat`: an interactive (or one-shot) conversation with the running daemon."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from daemon.cli.client import DaemonClient

PROMPT = "you> "
ANSWERED = ("ok", "step_cap", "tool_cap", "repeated_call")  # statuses that come with an answer


async def run_chat(socket_path: Path, message: str | None, conversation: str | None) -> int:
    """One-shot with ``message``; otherwise read lines until EOF or /quit."""
    async with DaemonClient(socket_path, timeout=None) as client:
        if message is not None:
            return await _exchange(client, message, conversation)
        print("nightshift chat — type a message, /quit to leave.", file=sys.stderr)
        status = 0
        while True:
            try:
                line = await asyncio.to_thread(input, PROMPT)
            except EOFError:
                return status
            if line.strip() in ("/quit", "/exit"):
                return status
            if line.strip():
                status = await _exchange(client, line, conversation)


async def _exchange(client: DaemonClient, text: str, conversation: str | None) -> int:
    status = 0
    async for event in client.chat(text, conversation):
        kind = event.get("type")
        if kind == "tool":
            print(f"  · {event['name']} {event.get('arguments', '')}", file=sys.stderr)
        elif kind == "tool_result" and not event.get("ok"):
            print(f"  · {event['name']} failed", file=sys.stderr)
        elif kind == "approval":
            await _approval(client, event)
        elif kind == "progress":
            print(f"  … {event['text']}", file=sys.stderr)
        elif kind == "message":
            print(f"[notice] {event['text']}", file=sys.stderr)
        elif kind == "reply":
            print(event["text"])
            if event.get("status") not in ANSWERED:
                status = 2
        elif kind == "error":
            print(f"nightshift: {event['message']}", file=sys.stderr)
            status = 1
    return status


async def _approval(client: DaemonClient, event: dict[str, Any]) -> None:
    """Ask the person at the terminal; without a terminal, say how to answer from elsewhere."""
    request_id = event["id"]
    print(
        f"\n  ! approval needed [{request_id}]: {event['tool']} {json.dumps(event['arguments'])}\n"
        f"    reason: {event['reason']}\n    expires: {event['expires_at']}",
        file=sys.stderr,
    )
    if not sys.stdin.isatty():
        print(
            f"    answer with `nightshift approve {request_id}` or `nightshift deny {request_id}`",
            file=sys.stderr,
        )
        return
    answer = await asyncio.to_thread(input, "    approve? [y/N] ")
    approve = answer.strip().lower() in ("y", "yes")
    await client.post(f"/v1/approvals/{request_id}", {"approve": approve})
