"""The words of incident notifications, listings and timelines (no LLM needed for any)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from daemon.incidents.runbooks import Runbook
from memory.incident_records import IncidentRecord
from memory.incidents import Incident, IncidentAlert, Silence, TimelineEntry

MAX_ALERTS_LISTED = 10
OUTCOME_TEXT = {"fixed": "resolved by the fix", "self": "resolved by itself", "open": "still open"}
_HIDDEN_LABELS = ("alertname", "severity")


def notification(
    incident: Incident,
    alerts: Sequence[IncidentAlert],
    *,
    muted: Mapping[str, str],
    runbook: Runbook | None,
    reminder: bool,
    fired: int = 1,
) -> str:
    """A firing notification: what, where, since when, and the runbook — the facts alone.
    ``fired``: how often its most restless alert fired in this incident (> 1: flapping)."""
    firing = [a for a in alerts if a.status == "firing" and a.fingerprint not in muted]
    resolved = [a for a in alerts if a.status == "resolved" and a.fingerprint not in muted]
    head = "Reminder: still firing" if reminder else "FIRING"
    lines = [
        f"[{head}:{len(firing)}] {incident.title} — incident #{incident.id} ({incident.severity})"
    ]
    for alert in firing[:MAX_ALERTS_LISTED]:
        lines.append(f"• {_describe(alert)} — since {_hhmm(alert.starts_at)}")
    if len(firing) > MAX_ALERTS_LISTED:
        lines.append(f"• … and {len(firing) - MAX_ALERTS_LISTED} more")
    for alert in resolved[:MAX_ALERTS_LISTED]:
        lines.append(f"• resolved: {_describe(alert)}")
    if muted:
        lines.append(f"({len(muted)} more muted: silenced, in maintenance or inhibited)")
    if fired > 1:
        lines.append(f"Flapping: fired {fired} times since {_hhmm(incident.opened_at)}.")
    if runbook is not None:
        lines.append(f"Runbook: {runbook.name}")
        excerpt = runbook.excerpt()
        if excerpt:
            lines.append(excerpt)
    lines.append(f"Reply `incidents show {incident.id}` or `silence {incident.id} 2h`.")
    return "\n".join(lines)


def flapping_notice(incident: Incident, alerts: Sequence[IncidentAlert], fired: int) -> str:
    """Alerts that fired and resolved again and again, faster than group_wait."""
    names = ", ".join(sorted({a.name for a in alerts})) or incident.title
    return (
        f"[FLAPPING] {incident.title} — incident #{incident.id} ({incident.severity}): {names} "
        f"fired up to {fired} times since {_hhmm(incident.opened_at)}, resolving each time; "
        f"resolved now. Reply `incidents show {incident.id}` for the timeline."
    )


def resolved_notice(incident: Incident, alerts: Sequence[IncidentAlert], now: datetime) -> str:
    lasted = _duration((now - incident.opened_at).total_seconds())
    names = ", ".join(sorted({a.name for a in alerts})) or incident.title
    return f"[RESOLVED] {incident.title} — incident #{incident.id} ({names}), lasted {lasted}."


def listing(incidents: Sequence[Incident], now: datetime) -> str:
    if not incidents:
        return "No incidents."
    rows = []
    for item in incidents:
        end = item.resolved_at or now
        age = _duration((end - item.opened_at).total_seconds())
        rows.append(
            f"#{item.id} {item.state:<8} {item.severity:<8} {item.title} "
            f"(opened {item.opened_at:%Y-%m-%d %H:%M} UTC, {age})"
        )
    return "\n".join(rows)


def details(
    incident: Incident,
    alerts: Sequence[IncidentAlert],
    timeline: Sequence[TimelineEntry],
    record: IncidentRecord | None = None,
) -> str:
    lines = [
        f"Incident #{incident.id}: {incident.title}",
        f"state {incident.state}, severity {incident.severity}, opened "
        f"{incident.opened_at:%Y-%m-%d %H:%M:%S} UTC"
        + (
            f", resolved {incident.resolved_at:%Y-%m-%d %H:%M:%S} UTC"
            if incident.resolved_at
            else ""
        ),
        "",
        "Alerts:",
    ]
    lines += [f"  [{a.status}] {_describe(a)}" for a in alerts] or ["  (none)"]
    lines += ["", "Timeline:"]
    for entry in timeline:
        who = "" if entry.actor == "nightshift" else f" ({entry.actor})"
        lines.append(f"  {entry.at:%H:%M:%S} {entry.kind}{who}: {entry.detail}")
    if incident.investigation:
        lines += ["", "Findings:", incident.investigation]
    if incident.postmortem:
        lines += ["", "Postmortem:", incident.postmortem]
    if record is not None:
        lines += ["", "Record (what the next similar incident starts from):"]
        lines += [f"  {line}" for line in record_lines(record)]
    return "\n".join(lines)


def record_lines(record: IncidentRecord) -> list[str]:
    """An incident record in a few lines: date and outcome, signature, cause, fix, evidence."""
    when = f"{record.created_at:%Y-%m-%d}" if record.created_at else "unknown date"
    lines = [
        f"Incident #{record.incident_id} on {when}: {OUTCOME_TEXT[record.outcome]}"
        + ("" if record.complete else " (partial record)"),
        f"Alerts: {', '.join(record.signature.alertnames)}; "
        f"labels: {' '.join(record.signature.labels) or '-'}",
    ]
    if record.cause:
        lines.append(f"Cause: {record.cause}")
    if record.fix:
        lines.append(f"Fix: {record.fix}")
    if record.action:
        verdict = "worked" if record.fix_worked else "did not fix it"
        lines.append(f"Action run: {record.action} ({verdict})")
    lines += [f"Evidence: {e.tool} {e.arguments} -> {e.excerpt}" for e in record.evidence]
    return lines


def silences(items: Sequence[Silence], now: datetime) -> str:
    if not items:
        return "No silences."
    rows = []
    for item in items:
        state = "active" if item.active(now) else "expired"
        rows.append(
            f"#{item.id} {state:<7} {', '.join(item.matchers)} until "
            f"{item.ends_at:%Y-%m-%d %H:%M} UTC by {item.created_by}"
            + (f" — {item.comment}" if item.comment else "")
        )
    return "\n".join(rows)


def _describe(alert: IncidentAlert) -> str:
    summary = alert.annotations.get("summary") or alert.name
    extra = {k: v for k, v in alert.labels.items() if k not in _HIDDEN_LABELS}
    if not extra:
        return summary
    return summary + " (" + ", ".join(f"{k}={v}" for k, v in sorted(extra.items())) + ")"


def _hhmm(at: datetime) -> str:
    return f"{at:%H:%M} UTC"


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
