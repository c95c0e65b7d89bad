"""Postmortems: timeline, cause, fix and follow-ups for a resolved incident.

The facts (timeline, actions, duration) always come from memory; when the incident was
investigated and the agent is available, the agent writes cause, fix and follow-ups from
those facts in one tool-less call, as a JSON object that is validated (an unusable answer is
kept as the postmortem's text and reported, never raised). Otherwise the cause is taken from
the findings, if any.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from daemon.agent.loop import AgentLoop, AgentRequest
from daemon.agent.prompts import fence
from daemon.core.clock import Clock
from daemon.response.incident_memory import PostmortemAnswer, parse_postmortem
from memory.conversations import ConversationRepo
from memory.incidents import Incident, IncidentRepo, TimelineEntry

log = logging.getLogger(__name__)

_SECTION = re.compile(r"^#+\s*likely cause\s*$", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True, slots=True, kw_only=True)
class Postmortem:
    """The postmortem's text, and the model's answer: validated, the reason it was unusable,
    or None when the model was not asked."""

    text: str
    answer: PostmortemAnswer | str | None


async def write_postmortem(
    incident_id: int,
    *,
    incidents: IncidentRepo,
    agent: AgentLoop | None,
    conversations: ConversationRepo,
    clock: Clock,
) -> Postmortem:
    incident = await incidents.get(incident_id)
    timeline = await incidents.timeline(incident_id)
    facts = facts_section(incident, timeline)
    analysis = ""
    answer: PostmortemAnswer | str | None = None
    if agent is not None and agent.enabled and incident.investigation:
        raw = await _ask_agent(agent, conversations, incident, facts)
        answer = parse_postmortem(raw) if raw else "no postmortem answer from the model"
        if isinstance(answer, PostmortemAnswer):
            analysis = answer.render()
        else:  # not the JSON asked for: people still read what the model wrote
            log.warning("incident #%d: %s; the record is partial", incident_id, answer)
            analysis = raw
    if not analysis:
        analysis = _from_findings(incident, timeline)
    return Postmortem(text=f"{facts}\n\n{analysis}".strip(), answer=answer)


def facts_section(incident: Incident, timeline: list[TimelineEntry]) -> str:
    end = incident.resolved_at or incident.opened_at
    minutes = (end - incident.opened_at).total_seconds() / 60
    lines = [
        f"Postmortem — incident #{incident.id}: {incident.title} ({incident.severity})",
        f"Opened {incident.opened_at:%Y-%m-%d %H:%M} UTC, resolved "
        f"{end:%Y-%m-%d %H:%M} UTC ({minutes:.0f} min).",
        "Timeline:",
    ]
    for entry in timeline:
        who = "" if entry.actor == "nightshift" else f" ({entry.actor})"
        lines.append(f"- {entry.at:%H:%M:%S} {entry.kind}{who}: {entry.detail[:200]}")
    return "\n".join(lines)


def _from_findings(incident: Incident, timeline: list[TimelineEntry]) -> str:
    actions = [e for e in timeline if e.kind in ("action ran", "action failed")]
    cause = "Not investigated (rule-only)."
    if incident.investigation:
        found = _SECTION.search(incident.investigation)
        if found:
            rest = incident.investigation[found.end() :].strip()
            cause = re.split(r"^#+\s", rest, maxsplit=1, flags=re.MULTILINE)[0].strip() or cause
    fix = "; ".join(e.detail.split(":")[0] for e in actions) or "Resolved without an action."
    return (
        f"Cause: {cause}\nFix: {fix}\n"
        "Follow-ups: review the alert's threshold and runbook if this recurs."
    )


async def _ask_agent(
    agent: AgentLoop, conversations: ConversationRepo, incident: Incident, facts: str
) -> str:
    conversation = await conversations.get_or_create(
        "incident", f"incident:{incident.id}", incident.title
    )
    request = AgentRequest(
        conversation_id=conversation.id,
        text=(
            "The incident is resolved. From the facts below and your findings, answer with one "
            'JSON object and nothing else: {"cause": "the root cause, one or two sentences", '
            '"fix": "what fixed it, or \'resolved by itself\'", "follow_ups": ["one to three '
            'short items"]}. Do not call tools.\n\n' + fence("incident-facts", facts)
        ),
        actor=f"incident #{incident.id}",
        kind="postmortem",
        mode="instant",
        unattended=True,
        tools=False,
    )
    try:
        result = await agent.run(request)
    except Exception as exc:  # noqa: BLE001 - the facts-only postmortem is still written
        log.warning("postmortem for incident #%d without the agent: %s", incident.id, exc)
        return ""
    return result.text.strip() if result.status == "ok" else ""
