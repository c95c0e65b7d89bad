"""Incident memory's pure parts: the postmortem JSON, cited evidence, the prior-record text."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from daemon.response.incident_memory import (
    MAX_PRIOR_CHARS,
    PostmortemAnswer,
    cited_evidence,
    parse_postmortem,
    render_prior,
)
from memory.incident_records import Evidence, IncidentRecord, signature

FINDINGS = (
    "## Summary\nx\n## Evidence\nThe log says: FATAL archiver stuck on 00000001000000A7.\n"
    "## Likely cause\nThe archiver.\n## Proposed actions\nnone"
)


def test_a_valid_answer_is_parsed_and_rendered() -> None:
    answer = parse_postmortem(
        '```json\n{"cause": "archiver stuck", "fix": "restart", "follow_ups": ["lag alert"]}\n```'
    )
    assert answer == PostmortemAnswer(
        cause="archiver stuck", fix="restart", follow_ups=("lag alert",)
    )
    assert answer.render() == "Cause: archiver stuck\nFix: restart\nFollow-ups:\n- lag alert"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ('{"cause": "archiver', "not JSON"),
        ('["cause"]', "not a JSON object"),
        ('{"fix": "restart"}', "no 'cause'"),
        ('{"cause": "x", "fix": 3}', "no 'fix'"),
        ('{"cause": "x", "fix": "y", "follow_ups": "z"}', "'follow_ups'"),
        ("Cause: load\nFix: none", "not JSON"),
    ],
)
def test_an_unusable_answer_says_why(text: str, why: str) -> None:
    result = parse_postmortem(text)
    assert isinstance(result, str) and why in result


def test_evidence_is_what_the_findings_cite() -> None:
    calls = [
        ("host_metrics", "{}", '{"cpu_percent": 12.5, "memory_percent": 40.1}'),
        ("tail_log", '{"path": "/var/log/pg.log"}', '{"lines": ["FATAL archiver stuck"]}'),
        ("disk_usage_by_directory", '{"path": "/var/log"}', '{"entries": ["/var/log/pg.log"]}'),
    ]
    kept = cited_evidence(calls, FINDINGS)
    assert [e.tool for e in kept] == ["tail_log"]
    assert "FATAL archiver stuck" in kept[0].excerpt
    named = cited_evidence(calls, FINDINGS.replace("The log says", "host_metrics and the log say"))
    assert [e.tool for e in named] == ["host_metrics", "tail_log"]


def test_prior_records_are_short_dated_and_say_their_outcome() -> None:
    record = IncidentRecord(
        incident_id=7,
        signature=signature([{"alertname": "DiskFull", "service": "postgres"}]),
        title="DiskFull",
        evidence=tuple(
            Evidence(tool="tail_log", arguments="{}", excerpt="x" * 300) for _ in range(4)
        ),
        cause="archiver stuck",
        action="restart_service(service='postgres')",
        fix_worked=False,
        outcome="self",
        complete=False,
        created_at=datetime(2026, 11, 2, tzinfo=UTC),
    )
    text = render_prior([record, record, record])
    blocks = text.split("\n\n")
    assert len(blocks) == 2 and all(len(b) <= MAX_PRIOR_CHARS for b in blocks)
    assert blocks[0].startswith("Incident #7 on 2026-11-02: resolved by itself (partial record)")
    assert "Action run: restart_service(service='postgres') (did not fix it)" in blocks[0]
