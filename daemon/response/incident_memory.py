"""Incident memory: turn a resolved incident into a structured record, and show the records of
similar past incidents to the next investigation.

The record's cause and fix come from the postmortem model answer, asked for as JSON and
validated; an unusable answer leaves a partial record (cause from the findings' "Likely cause",
fix from the remediation that ran) marked incomplete, never an error. The evidence is the
investigation's tool calls that its findings cite (named, or quoting a distinctive word of the
result), each with a short excerpt around the quoted word.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from daemon.incidents.text import record_lines
from memory.incident_records import Evidence, IncidentRecord, Signature
from memory.incidents import Incident, TimelineEntry

PRIOR_SOURCE = "prior-incidents"  # the fence's source: the marker of prior records in a prompt
MAX_PRIOR = 2
MAX_PRIOR_CHARS = 700  # per record, in the prompt
MAX_EVIDENCE = 4
EXCERPT_CHARS = 160
_FIELD_CHARS = 600
_FENCED_JSON = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL | re.IGNORECASE)
_WORD = re.compile(r"[\w./:-]{6,}")
_SECTION = re.compile(r"^#+\s*(evidence|likely cause)\s*$", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True, slots=True, kw_only=True)
class PostmortemAnswer:
    """The validated JSON the model wrote for a postmortem."""

    cause: str
    fix: str
    follow_ups: tuple[str, ...]

    def render(self) -> str:
        follow = "\n".join(f"- {item}" for item in self.follow_ups) or "- none"
        return f"Cause: {self.cause}\nFix: {self.fix}\nFollow-ups:\n{follow}"


def parse_postmortem(text: str) -> PostmortemAnswer | str:
    """The answer, or why it is unusable (a short reason, for the record's note)."""
    raw = text.strip()
    fenced = _FENCED_JSON.match(raw)
    if fenced:
        raw = fenced.group(1)
    try:
        data: Any = json.loads(raw)
    except json.JSONDecodeError as exc:
        return f"postmortem answer is not JSON ({exc.msg})"
    if not isinstance(data, dict):
        return "postmortem answer is not a JSON object"
    cause, fix, follow = data.get("cause"), data.get("fix"), data.get("follow_ups", [])
    if not isinstance(cause, str) or not cause.strip():
        return "postmortem answer has no 'cause' string"
    if not isinstance(fix, str):
        return "postmortem answer has no 'fix' string"
    if not isinstance(follow, list) or not all(isinstance(item, str) for item in follow):
        return "postmortem answer's 'follow_ups' is not a list of strings"
    return PostmortemAnswer(
        cause=cause.strip()[:_FIELD_CHARS],
        fix=fix.strip()[:_FIELD_CHARS],
        follow_ups=tuple(item.strip()[:200] for item in follow[:3] if item.strip()),
    )


def findings_section(findings: str | None, name: str) -> str:
    """One section ("evidence" or "likely cause") of the investigation's findings."""
    if not findings:
        return ""
    for found in _SECTION.finditer(findings):
        if found.group(1).lower() == name:
            rest = findings[found.end() :].strip()
            return re.split(r"^#+\s", rest, maxsplit=1, flags=re.MULTILINE)[0].strip()
    return ""


def cited_evidence(
    calls: Sequence[tuple[str, str, str]], findings: str | None
) -> tuple[Evidence, ...]:
    """The calls the findings cite: by tool name, or by a distinctive word of the result (6+
    characters, not a path, not echoed from the call's arguments) that the findings quote."""
    text = (findings or "").lower()
    evidence_text = findings_section(findings, "evidence").lower() or text
    cited_words = {word.lower() for word in _WORD.findall(evidence_text) if "/" not in word}
    kept: list[Evidence] = []
    for tool, arguments, result in calls:
        quoted = next(  # a word of the result, not one it echoes from the arguments
            (
                word
                for word in _WORD.findall(result)
                if word.lower() in cited_words and word not in arguments
            ),
            None,
        )
        named = tool.lower() in text or tool.replace("_", " ").lower() in text
        if quoted is None and not named:
            continue
        start = max(0, result.find(quoted) - EXCERPT_CHARS // 2) if quoted else 0
        excerpt = " ".join(result[start : start + EXCERPT_CHARS].split())
        kept.append(Evidence(tool=tool, arguments=arguments[:200], excerpt=excerpt))
        if len(kept) >= MAX_EVIDENCE:
            break
    return tuple(kept)


def build_record(
    incident: Incident,
    sig: Signature,
    timeline: Sequence[TimelineEntry],
    calls: Sequence[tuple[str, str, str]],
    answer: PostmortemAnswer | str | None,
) -> IncidentRecord:
    """The record of a closed incident. ``answer`` is the parsed postmortem answer, the reason
    it was unusable, or None when no model was asked (rule-only, or not investigated)."""
    actions = [e for e in timeline if e.kind in ("action ran", "action failed")]
    action = actions[-1].detail.split(": ")[0] if actions else ""
    kinds = {e.kind for e in timeline}
    worked: bool | None = None
    if actions:
        worked = "verified" in kinds
    outcome = "open" if incident.state == "open" else "fixed" if worked else "self"
    if isinstance(answer, PostmortemAnswer):
        cause, fix, complete, note = answer.cause, answer.fix, True, ""
    else:
        cause = findings_section(incident.investigation, "likely cause")[:_FIELD_CHARS]
        fix = action or ("resolved without an action" if outcome == "self" else "")
        complete = False
        note = answer or (
            "no postmortem answer from the model" if incident.investigation else "not investigated"
        )
    return IncidentRecord(
        incident_id=incident.id,
        signature=sig,
        title=incident.title,
        evidence=cited_evidence(calls, incident.investigation),
        cause=cause,
        fix=fix,
        action=action,
        fix_worked=worked,
        outcome=outcome,
        complete=complete,
        note=note,
    )


def render_prior(records: Sequence[IncidentRecord]) -> str:
    """Prior records for a prompt: newest first, each bounded, with its date and outcome."""
    return "\n\n".join(
        "\n".join(record_lines(record))[:MAX_PRIOR_CHARS] for record in records[:MAX_PRIOR]
    )
