"""End to end, incident memory: `nightshift run` with its Alertmanager webhook and the fake Kimi
scripting investigations through the real agent loop and tools.

The first PostgresArchiverStuck incident is explored (host metrics, processes, the log), the
allowlisted restart runs and the alert resolves: its record holds the signature, the cited log
evidence, cause and fix from the postmortem JSON, and "fixed". The same alert again (another
exporter port: a volatile label) starts from that record; the same alert on another service
does not. A malformed postmortem answer leaves a partial record and the daemon goes on.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.fakes.chat_completions import FakeChatServer, Reply
from tests.test_e2e_investigation_limits import query, send_payload, wait_until, webhook_daemon

PRIOR_MARKER = 'source="prior-incidents"'  # the fence around prior records in a prompt
ALERT = "PostgresArchiverStuck"
LOG_LINE = "FATAL: archiver stuck on segment 00000001000000A7; pg_wal at 97%"
POSTMORTEM_JSON = json.dumps({
    "cause": "The WAL archiver was stuck, so pg_wal filled up.",
    "fix": "Restarted postgres; the archiver resumed.",
    "follow_ups": ["alert on archiver lag"],
})  # fmt: skip


def chars_to_tokens(chars: int) -> int:
    return math.ceil(chars / 4)


def reply(
    content: str = "", calls: list[tuple[str, dict[str, Any]]] | None = None, reasoning: str = ""
) -> Reply:
    tool_calls = [(name, json.dumps(args)) for name, args in calls or []]
    out = len(content) + len(reasoning) + sum(len(args) for _, args in tool_calls)
    return Reply(
        content=content,
        reasoning=reasoning or "thinking",
        tool_calls=tool_calls,
        completion_tokens=chars_to_tokens(out),
    )


def findings(log: Path) -> str:
    return (
        f"## Summary\npg_wal is nearly full.\n## Evidence\ntail_log {log}: {LOG_LINE}\n"
        "## Likely cause\nThe WAL archiver is stuck.\n## Proposed actions\nRestart postgres."
    )


class ScriptedModel:
    """The fake model's script. Without a prior record in the prompt it explores (host metrics,
    processes, the log) before proposing the restart; with one it checks the log the record
    names, proposes the fix that worked and writes its findings. Branching on the marker is
    the script's doing: it shows what the prompt makes possible, not what a real model does."""

    def __init__(self, log: Path, postmortem: str = POSTMORTEM_JSON) -> None:
        self.log = log
        self.postmortem = postmortem
        self.prompts: list[str] = []  # each investigation's opening prompt
        self.calls: dict[int, int] = {}  # investigation number → model calls

    def __call__(self, body: dict[str, Any]) -> Reply:
        messages = body["messages"]
        last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
        if not body.get("tools"):  # the postmortem: one tool-less call
            return reply(self.postmortem)
        # the investigation's prompt, and the recall note after it (also a user message)
        prompt = "\n".join(str(m["content"]) for m in messages if m["role"] == "user")
        step = sum(1 for m in messages[last_user:] if m["role"] == "assistant")
        if step == 0:
            self.prompts.append(prompt)
        number = len(self.prompts)
        self.calls[number] = self.calls.get(number, 0) + 1
        tail = ("tail_log", {"path": str(self.log), "lines": 20, "grep": "FATAL"})
        restart = (
            "propose_action",
            {
                "tool": "restart_service",
                "arguments": {"service": "postgres"},
                "reason": "a restart unsticks the archiver",
            },
        )
        if PRIOR_MARKER in prompt:
            plan: list[list[tuple[str, dict[str, Any]]]] = [[tail], [restart]]
        else:
            plan = [
                [("host_metrics", {})],
                [("metrics_history", {"metric": "disk_percent", "minutes": 30})],
                [("list_processes", {"sort_by": "memory", "limit": 10})],
                [("disk_usage_by_directory", {"path": str(self.log.parent)})],
                [tail],
                [restart],
            ]
        if step < len(plan):
            return reply(calls=plan[step], reasoning=f"step {step}: gather evidence")
        return reply(findings(self.log), reasoning="the log shows the archiver stuck")


def alert_payload(status: str, *, service: str = "postgres", port: int = 9187) -> dict[str, Any]:
    return {
        "version": "4",
        "status": status,
        "groupKey": "{}:{}",
        "alerts": [
            {
                "status": status,
                "labels": {
                    "alertname": ALERT,
                    "severity": "critical",
                    "service": service,
                    "instance": f"db1:{port}",
                },
                "annotations": {"summary": "WAL archiving is stuck", "value": "97"},
                "startsAt": "2026-11-22T11:58:01Z",
                "endsAt": "2026-11-22T12:10:00Z"
                if status == "resolved"
                else "0001-01-01T00:00:00Z",
            }
        ],
    }


INCIDENTS = (
    'investigate = ["critical"]\n'
    "[incidents.remediation]\nverify_seconds = 30.0\n"
    f"restart_command = {json.dumps([sys.executable, '-c', 'print(1)', '{service}'])}\n"
    "[[incidents.remediation.auto]]\n"
    f'matchers = ["alertname={ALERT}"]\ntool = "restart_service"\n'
    'arguments = { service = "postgres" }\n'
)


def record_rows(db: Path) -> list[dict[str, Any]]:
    columns = (
        "incident_id, signature, alertnames, labels, evidence, cause, fix, action, fix_worked,"
        " outcome, complete, note"
    )
    names = [c.strip() for c in columns.split(",")]
    rows = query(db, f"SELECT {columns} FROM incident_records ORDER BY id")  # noqa: S608
    return [dict(zip(names, row, strict=True)) for row in rows]


def has(db: Path, sql: str) -> Callable[[], bool]:
    return lambda: bool(query(db, sql))


async def one_incident(
    port: int, db: Path, number: int, *, service: str = "postgres", exporter: int = 9187
) -> None:
    """Fire, wait for the fix (or the findings), resolve, wait for the record."""
    await send_payload(port, alert_payload("firing", service=service, port=exporter), 1)
    done = (
        f"SELECT 1 FROM incident_events WHERE incident_id = {number}"
        " AND kind IN ('action ran', 'findings')"
    )
    await wait_until(has(db, done), f"incident #{number} investigated", db)
    await send_payload(port, alert_payload("resolved", service=service, port=exporter), 1)
    stored = f"SELECT 1 FROM incident_records WHERE incident_id = {number}"
    await wait_until(has(db, stored), f"incident #{number}'s record", db)


async def test_a_record_is_written_and_the_next_same_incident_starts_from_it(
    tmp_path: Path, fake_llm: FakeChatServer
) -> None:
    log = tmp_path / "logs" / "postgres.log"
    log.parent.mkdir()
    log.write_text(
        f"2026-11-22 11:57:00 LOG: checkpoint complete\n2026-11-22 11:58:00 {LOG_LINE}\n"
    )
    model = ScriptedModel(log)
    fake_llm.responder = model
    daemon, port = await webhook_daemon(tmp_path, llm_url=fake_llm.base_url, incidents=INCIDENTS)
    db = daemon.state_dir / "nightshift.db"
    try:
        await one_incident(port, db, 1)
        [first] = record_rows(db)
        assert first["signature"] == f"{ALERT}|instance=db1 service=postgres"
        assert json.loads(first["labels"]) == ["instance=db1", "service=postgres"]
        evidence = json.loads(first["evidence"])
        assert [e["tool"] for e in evidence] == ["tail_log"]  # the only call the findings cite
        assert "archiver stuck on segment 00000001000000A7" in evidence[0]["excerpt"]
        assert first["cause"] == "The WAL archiver was stuck, so pg_wal filled up."
        assert first["fix"] == "Restarted postgres; the archiver resumed."
        assert first["action"] == "restart_service(service='postgres')"
        assert (first["fix_worked"], first["outcome"], first["complete"]) == (1, "fixed", 1)
        assert "The WAL archiver was stuck" not in model.prompts[0]
        code, out, err = await daemon.cli("incidents", "show", "1")
        assert code == 0, err
        assert "Record (what the next similar incident starts from):" in out
        assert "Action run: restart_service(service='postgres') (worked)" in out
        assert PRIOR_MARKER not in model.prompts[0]

        # the same alert from another exporter port: a near signature, the record is shown
        await one_incident(port, db, 2, exporter=9188)
        second = model.prompts[1]
        assert PRIOR_MARKER in second
        assert "Incident #1 on 2026-" in second and "resolved by the fix" in second
        assert "Cause: The WAL archiver was stuck" in second
        assert "Action run: restart_service(service='postgres') (worked)" in second
        assert "Verify the known cause FIRST" in second
        assert model.calls[2] < model.calls[1]
        prior_note = "SELECT detail FROM incident_events WHERE kind = 'prior incidents'"
        assert query(db, prior_note) == [("records of #1",)]

        # the same alert name on another service: a different signature, no record shown
        await one_incident(port, db, 3, service="mysql")
        third = model.prompts[2]
        assert PRIOR_MARKER not in third
        assert "Verify the known cause" not in third and "Incident #1 on" not in third

        # records are in recall, labelled with their incident and outcome
        docs = query(db, "SELECT ref, labels FROM recall_docs WHERE source = 'record' ORDER BY ref")
        assert len(docs) == 3
        assert "incident=1 outcome=fixed" in docs[0][1] and "service=postgres" in docs[0][1]
    finally:
        await daemon.stop()


async def test_a_malformed_postmortem_answer_leaves_a_partial_record(
    tmp_path: Path, fake_llm: FakeChatServer
) -> None:
    log = tmp_path / "logs" / "postgres.log"
    log.parent.mkdir()
    log.write_text(f"{LOG_LINE}\n")
    model = ScriptedModel(log, postmortem='{"cause": "The WAL archiver was st')  # cut short
    fake_llm.responder = model
    no_remediation = 'investigate = ["critical"]\n[incidents.remediation]\nenabled = false\n'
    daemon, port = await webhook_daemon(
        tmp_path, llm_url=fake_llm.base_url, incidents=no_remediation
    )
    db = daemon.state_dir / "nightshift.db"
    try:
        await one_incident(port, db, 1)
        [record] = record_rows(db)
        assert record["complete"] == 0
        assert record["note"].startswith("postmortem answer is not JSON")
        assert record["cause"] == "The WAL archiver is stuck."  # from the findings
        assert (record["action"], record["fix_worked"]) == ("", None)
        assert (record["outcome"], record["fix"]) == ("self", "resolved without an action")
        assert [e["tool"] for e in json.loads(record["evidence"])] == ["tail_log"]
        [(text,)] = query(db, "SELECT postmortem FROM incidents WHERE id = 1")
        assert '{"cause": "The WAL archiver was st' in text  # people still see the answer

        # the daemon goes on: the next occurrence starts from the partial record
        await one_incident(port, db, 2, exporter=9188)
        assert PRIOR_MARKER in model.prompts[1]
        assert "(partial record)" in model.prompts[1]
    finally:
        await daemon.stop()
