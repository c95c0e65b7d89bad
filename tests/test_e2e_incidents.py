"""End to end, incident response: `nightshift run` watching a real process, Telegram (loopback
Bot API fake) for notifications and approvals, the fake Kimi scripting the investigation.

A process dies → after `for`, one incident and one notification → findings posted → the
proposed restart awaits approval → approved in chat → it runs → the alert resolves → resolved
notice and postmortem in memory. The same with the LLM unreachable still notifies and resolves.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psutil
import pytest

from tests.fakes.chat_completions import FakeChatServer, Reply
from tests.fakes.telegram import FakeTelegram
from tests.support import ROOT, DaemonProcess

TOKEN = "123456:TEST-token-for-nightshift-e2e-000000"
ANN = 111  # operator, and where notifications go
RESTART_SCRIPT = ROOT / "tests" / "scripts" / "restart_web.py"


@pytest.fixture
def marker() -> Iterator[str]:
    """A unique command-line marker for the test's "web" processes; all are killed at the end."""
    value = f"nightshift-e2e-{uuid.uuid4().hex[:10]}"
    yield value
    for proc in psutil.process_iter(["cmdline"]):
        if any(value in part for part in proc.info["cmdline"] or []):
            proc.kill()


def start_web(marker: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)", f"{marker}-web"],
        start_new_session=True,
    )


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(TOKEN) as fake:
        fake.add_chat(ANN)  # Ann has talked to the bot before: it may post to her
        yield fake


def config_text(base_url: str, marker: str, telegram: FakeTelegram | None = None) -> str:
    """The scenario's config: a watched "web" process, a WebDown rule, quick incident timings;
    notifications to Ann on Telegram when ``telegram`` is given, else to the console."""
    restart = json.dumps([sys.executable, str(RESTART_SCRIPT), "{service}", marker])
    route = f"telegram:{ANN}" if telegram else "console"
    channel = (
        f'[channels.telegram]\nenabled = true\nbot_token = "{TOKEN}"\n'
        f'api_url = "{telegram.api_url}"\n\n[channels.telegram.users]\n"{ANN}" = "operator"\n'
        if telegram
        else ""
    )
    return f"""
default_route = ["{route}"]

[llm]
base_url = "{base_url}"
api_key = "sk-test-0123456789abcdef"
max_retries = 1
retry_initial_seconds = 0.05
retry_max_seconds = 0.2

{channel}
[watchers.host]
enabled = false

[[watchers.processes]]
name = "web"
cmdline = "{marker}-web"
interval_seconds = 0.2

[[rules]]
name = "WebDown"
metric = "process_up"
where = {{ process = "web" }}
op = "<"
threshold = 1
for_seconds = 1.0
severity = "critical"
summary = "the web service is not running"

[incidents]
group_wait_seconds = 0.5
group_interval_seconds = 1.0
repeat_interval_seconds = 3600.0
investigate = ["critical"]

[incidents.remediation]
verify_seconds = 30.0
restart_command = {restart}
"""


async def wait_for_text(telegram: FakeTelegram, needle: str, timeout: float = 30) -> str:
    for _ in range(int(timeout / 0.05)):
        for text in telegram.sent_texts(ANN):
            if needle in text:
                return text
        await asyncio.sleep(0.05)
    raise AssertionError(f"{needle!r} never sent: {telegram.sent_texts(ANN)}")


def rows(db: Path, sql: str) -> list[sqlite3.Row]:
    conn = sqlite3.connect(db)
    try:
        conn.row_factory = sqlite3.Row
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


async def watched(daemon: DaemonProcess, timeout: float = 30) -> None:
    """Wait until the process watcher (the only watcher) has sampled at least once."""
    for _ in range(int(timeout / 0.1)):
        _, out, _ = await daemon.cli("status", "--json")
        if json.loads(out)["alerting"]["observations"] >= 5:  # one sample: process_up … cpu
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the process watcher never sampled")


async def run_daemon(tmp_path: Path, text: str) -> DaemonProcess:
    config = tmp_path / "config.toml"
    config.write_text(text)
    daemon = DaemonProcess(config, tmp_path / "state")
    await daemon.start()
    return daemon


async def test_process_dies_investigated_restart_approved_in_chat_resolves_postmortem(
    tmp_path: Path, fake_llm: FakeChatServer, telegram: FakeTelegram, marker: str
) -> None:
    web = start_web(marker)
    daemon = await run_daemon(tmp_path, config_text(fake_llm.base_url, marker, telegram))
    try:
        fake_llm.script(
            Reply(
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
            ),
            Reply(
                content="## Summary\nweb is down.\n## Evidence\nNo web process.\n"
                "## Likely cause\nThe process was killed.\n## Proposed actions\nRestart web."
            ),
            Reply(content="Cause: web was killed.\nFix: restarted after approval.\n"
                  "Follow-ups:\n- run web under systemd with Restart=on-failure"),
        )  # fmt: skip
        await watched(daemon)  # the watcher has seen web running
        web.kill()
        web.wait()

        firing = await wait_for_text(telegram, "[FIRING:1] WebDown")
        assert "incident #1 (critical)" in firing and "the web service is not running" in firing
        findings = await wait_for_text(telegram, "Findings for incident #1")
        assert "## Likely cause" in findings
        prompt = await wait_for_text(telegram, "Approval needed")
        assert "restart_service" in prompt and "'web'" in prompt
        approval_id = re.search(r"Approval needed \[(\w+)\]", prompt).group(1)  # type: ignore[union-attr]

        investigation = fake_llm.requests[0]["messages"][-1]["content"]
        assert '<untrusted-data source="alerts">' in investigation
        offered = {tool["function"]["name"] for tool in fake_llm.requests[0]["tools"]}
        assert {"propose_action", "list_processes", "metrics_history"} <= offered
        assert "restart_service" not in offered  # the investigation itself cannot change things

        telegram.push_private(f"approve {approval_id}", user_id=ANN)
        await wait_for_text(telegram, "ran restart_service(service='web')")
        await wait_for_text(telegram, "[RESOLVED] WebDown — incident #1")
        postmortem = await wait_for_text(telegram, "Postmortem — incident #1")
        assert "Restart=on-failure" in postmortem

        assert sum("[FIRING" in text for text in telegram.sent_texts(ANN)) == 1
        code, out, _ = await daemon.cli("incidents", "show", "1")
        assert code == 0
        for step in ("alert firing", "notified", "findings", "approval requested",
                     "approved (telegram:", "action ran", "alert resolved", "verified",
                     "resolved", "postmortem"):  # fmt: skip
            assert step in out, f"{step!r} missing from the timeline:\n{out}"
        db = daemon.state_dir / "nightshift.db"
        facts = rows(
            db, "SELECT text, tags, kind, source, trusted FROM facts WHERE tags LIKE 'postmortem%'"
        )
        assert len(facts) == 1 and "WebDown" in facts[0]["tags"]
        assert (facts[0]["kind"], facts[0]["source"], facts[0]["trusted"]) == (
            "postmortem",
            "incident:1",
            0,
        )
        audit = rows(db, "SELECT tool, actor FROM audit_log WHERE tool = 'restart_service'")
        assert len(audit) == 1 and "approved by telegram:" in audit[0]["actor"]
    finally:
        await daemon.stop()


async def test_with_the_llm_unreachable_people_are_still_notified_and_it_resolves(
    tmp_path: Path, telegram: FakeTelegram, marker: str
) -> None:
    web = start_web(marker)
    dead_llm = "http://127.0.0.1:9/v1"  # nothing listens on the discard port
    daemon = await run_daemon(tmp_path, config_text(dead_llm, marker, telegram))
    try:
        await watched(daemon)
        web.kill()
        web.wait()
        firing = await wait_for_text(telegram, "[FIRING:1] WebDown")
        assert "the web service is not running" in firing
        notice = await wait_for_text(telegram, "no AI investigation")
        assert notice.startswith("Incident #1: no AI investigation (The model API is unavailable")
        again = start_web(marker)  # a person restarts it by hand
        await wait_for_text(telegram, "[RESOLVED] WebDown — incident #1")
        postmortem = await wait_for_text(telegram, "Postmortem — incident #1")
        assert "Cause: Not investigated" in postmortem
        code, out, _ = await daemon.cli("incidents")
        assert code == 0 and "#1 resolved" in out
        again.kill()
        again.wait()
    finally:
        await daemon.stop()
