"""What a delegating agent is told of its sub-agents: counts, then each subtask's status, reason
and result (those not done first) while they fit its tool output — results, not transcripts,
and never more than it can read."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from memory.swarm import FINAL

if TYPE_CHECKING:
    from daemon.agent.swarm.child import RunBudget
    from memory.swarm import SwarmTask

__all__ = ["summarise"]

RESULT_CHARS = 8_000  # all results together, as the coordinator sees them
REPORT_SLACK = 200  # room kept in the tool output for the list's own punctuation


def summarise(budget: RunBudget, tasks: list[SwarmTask], output_chars: int) -> dict[str, Any]:
    """The report on ``tasks`` of the run, within ``output_chars``."""
    counts: dict[str, int] = {}
    for task in tasks:
        counts[task.status] = counts.get(task.status, 0) + 1
    report: dict[str, Any] = {
        "run": budget.run_id,
        "summary": counts,
        "stopped": budget.stopped,
        "tokens_used": budget.tokens,
        "tokens_left": max(budget.max_tokens - budget.tokens, 0),
    }
    room = output_chars - len(json.dumps(report)) - REPORT_SLACK
    each = max(RESULT_CHARS // max(len(tasks), 1), 120)
    shown: list[dict[str, Any]] = []
    for task in sorted(tasks, key=lambda t: t.status == "done"):  # stable: not done first
        entry = _brief(task, each)
        room -= len(json.dumps(entry, ensure_ascii=False)) + 2
        if room < 0:
            break
        shown.append(entry)
    report["subtasks"] = shown
    if len(shown) < len(tasks):
        hidden: dict[str, int] = {}
        for task in sorted(tasks, key=lambda t: t.status == "done")[len(shown) :]:
            hidden[task.status] = hidden.get(task.status, 0) + 1
        report["not_shown"] = hidden
    return report


def _brief(task: SwarmTask, chars: int) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": task.id, "status": task.status, "attempts": task.attempt}
    if task.reason:
        entry["reason"] = task.reason
    if task.status == "done":
        text = json.dumps(task.result, ensure_ascii=False)
        entry["result"] = task.result if len(text) <= chars else text[:chars] + "…(truncated)"
    entry["tokens"] = task.tokens
    if task.status not in FINAL:
        entry["status"] = "unknown"
    return entry
