"""Tokens used per investigated incident, in the scripted scenario of tests/test_e2e_incidents.py.

`nightshift run` (console channel only) watches a real "web" child process; the fake Kimi
(tests/fakes/chat_completions.py, in this process) plays the investigation (list_processes +
propose_action, then findings in four sections) and the postmortem. Each incident: web is
killed → WebDown fires → investigation → the restart is approved with `nightshift approve ID`
→ it runs → the alert resolves → postmortem. Then ``llm_usage`` rows are read from the
daemon's database and tied to incidents through agent_runs → conversations ("incident:N").

The fake does not tokenize: the token counts it reports (and the daemon stores) are estimates
made here from text length — 4 characters per token of the request's messages and tool schemas
as JSON, and of the reply's content, reasoning and tool-call arguments. The characters are
printed too. Later incidents' prompts also carry earlier postmortems (similar past incidents).

Usage: python -m bench.investigation_tokens [--incidents 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fakes.chat_completions import FakeChatServer, Reply
from tests.support import DaemonProcess
from tests.test_e2e_incidents import config_text

CHARS_PER_TOKEN = 4

INVESTIGATE = Reply(
    reasoning="The process is gone; look at the processes, then propose a restart.",
    tool_calls=[
        ("list_processes", "{}"),
        (
            "propose_action",
            json.dumps({
                "tool": "restart_service",
                "arguments": {"service": "web"},
                "reason": "web exited; a restart brings it back",
            }),
        ),
    ],
)  # fmt: skip
FINDINGS = Reply(
    reasoning="No web process in the list; the restart is proposed.",
    content="## Summary\nweb is down.\n## Evidence\nNo web process in the process list.\n"
    "## Likely cause\nThe process was killed.\n## Proposed actions\nRestart web.",
)
POSTMORTEM = Reply(
    content="Cause: web was killed.\nFix: restarted after approval.\n"
    "Follow-ups:\n- run web under systemd with Restart=on-failure"
)


def estimate(chars: int) -> int:
    return math.ceil(chars / CHARS_PER_TOKEN)


@dataclass
class Call:
    kind: str
    prompt_chars: int  # messages and tool schemas
    tools_chars: int  # the tool schemas alone
    messages: int
    completion_chars: int


class ScriptedKimi:
    """Chooses the reply from the request, and fills in usage estimated from text length."""

    def __init__(self) -> None:
        self.calls: list[Call] = []

    def __call__(self, body: dict[str, Any]) -> Reply:
        messages = body["messages"]
        last = messages[-1]
        if last["role"] == "tool":
            kind, reply = "investigation (findings)", FINDINGS
        elif "The incident is resolved" in str(last.get("content")):
            kind, reply = "postmortem", POSTMORTEM
        elif "Investigate incident" in str(last.get("content")):
            kind, reply = "investigation (tools)", INVESTIGATE
        else:
            kind, reply = "unscripted", Reply(content="(no scripted reply)")
        tools = len(json.dumps(body.get("tools", []), ensure_ascii=False))
        prompt = len(json.dumps(messages, ensure_ascii=False)) + tools
        completion = len(reply.content) + len(reply.reasoning or "")
        completion += sum(len(name) + len(args) for name, args in reply.tool_calls)
        self.calls.append(Call(kind, prompt, tools, len(messages), completion))
        return replace(
            reply, prompt_tokens=estimate(prompt), completion_tokens=estimate(completion)
        )


def query(db: Path, sql: str, params: tuple[object, ...] = ()) -> list[sqlite3.Row]:
    conn = sqlite3.connect(db)
    try:
        conn.row_factory = sqlite3.Row
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


async def poll(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.1)
    raise SystemExit(f"bench: {what} did not happen within {timeout:g} s")


def web_running(marker: str) -> bool:
    needle = f"{marker}-web"
    for proc in psutil.process_iter(["cmdline"]):
        if any(needle in part for part in proc.info["cmdline"] or []):
            return True
    return False


def kill_web(marker: str) -> None:
    for proc in psutil.process_iter(["cmdline"]):
        if any(f"{marker}-web" in part for part in proc.info["cmdline"] or []):
            proc.kill()


async def one_incident(daemon: DaemonProcess, db: Path, number: int, marker: str) -> None:
    await asyncio.sleep(1.0)  # the watcher has seen web running
    kill_web(marker)

    async def approval() -> str | None:
        code, out, err = await daemon.cli("approvals")
        if code != 0:
            raise SystemExit(f"bench: nightshift approvals failed: {err or out}")
        found = re.search(r"^(\w+)\s+restart_service", out, re.MULTILINE)
        return found.group(1) if found else None

    approval_id = await poll(approval, 60, f"approval request of incident #{number}")
    code, out, err = await daemon.cli("approve", approval_id)
    if code != 0:
        raise SystemExit(f"bench: nightshift approve {approval_id} failed: {err or out}")

    async def postmortem() -> bool:
        rows = query(db, "SELECT postmortem FROM incidents WHERE id = ?", (number,))
        return bool(rows and rows[0]["postmortem"])

    await poll(postmortem, 60, f"postmortem of incident #{number}")
    await poll(lambda: asyncio.to_thread(web_running, marker), 30, "web restarted")


def usage_by_incident(db: Path) -> dict[str, list[sqlite3.Row]]:
    rows = query(
        db,
        "SELECT u.prompt_tokens, u.completion_tokens, u.total_tokens, u.ok, r.kind,"
        " c.key FROM llm_usage u LEFT JOIN agent_runs r ON r.id = u.run_id"
        " LEFT JOIN conversations c ON c.id = r.conversation_id ORDER BY u.id",
    )
    found: dict[str, list[sqlite3.Row]] = {}
    for row in rows:
        found.setdefault(row["key"] or "(no incident)", []).append(row)
    return found


async def main(count: int) -> None:
    marker = f"nightshift-bench-{uuid.uuid4().hex[:10]}"
    kimi = ScriptedKimi()
    web = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)", f"{marker}-web"],
        start_new_session=True,
    )
    started = time.perf_counter()
    try:
        async with FakeChatServer() as fake:
            fake.responder = kimi
            with tempfile.TemporaryDirectory() as tmp:
                work = Path(tmp)
                config = work / "config.toml"
                config.write_text(config_text(fake.base_url, marker))
                daemon = DaemonProcess(config, work / "state")
                await daemon.start()
                db = daemon.state_dir / "nightshift.db"
                try:
                    for number in range(1, count + 1):
                        await one_incident(daemon, db, number, marker)
                finally:
                    await daemon.stop()
                usage = usage_by_incident(db)
                incidents = query(db, "SELECT id, state FROM incidents ORDER BY id")
    finally:
        web.kill()
        web.wait()
        kill_web(marker)
    elapsed = time.perf_counter() - started

    print(
        f"{count} incident(s) (process killed → investigated → restart approved with "
        f"`nightshift approve` → resolved → postmortem), {elapsed:.0f} s"
    )
    print(
        f"NOTE: token counts are estimates ({CHARS_PER_TOKEN} characters per token of the "
        "request/reply JSON text); the fake LLM does not tokenize."
    )
    print(f"{'incident':<12}{'calls':>6}{'prompt':>9}{'completion':>12}{'total':>9}  state")
    totals = []
    for incident in incidents:
        rows = usage.get(f"incident:{incident['id']}", [])
        prompt = sum(r["prompt_tokens"] for r in rows)
        completion = sum(r["completion_tokens"] for r in rows)
        total = sum(r["total_tokens"] for r in rows)
        totals.append(total)
        print(
            f"#{incident['id']:<11}{len(rows):>6}{prompt:>9,}{completion:>12,}{total:>9,}  "
            f"{incident['state']}"
        )
    other = usage.get("(no incident)", [])
    print(
        f"mean per incident: {sum(totals) / max(len(totals), 1):,.0f} tokens; LLM calls outside "
        f"any incident: {len(other)}; failed calls: "
        f"{sum(1 for rows in usage.values() for r in rows if not r['ok'])}"
    )
    print("per call (in order):")
    for call in kimi.calls:
        print(
            f"  {call.kind:<26} prompt {call.prompt_chars:>7,} chars ≈ "
            f"{estimate(call.prompt_chars):>6,} tokens ({call.messages} messages; tool schemas "
            f"{call.tools_chars:,} chars), completion {call.completion_chars:>4} chars ≈ "
            f"{estimate(call.completion_chars):>4} tokens"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--incidents", type=int, default=3)
    asyncio.run(main(parser.parse_args().incidents))
