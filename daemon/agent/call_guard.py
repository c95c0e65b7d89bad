"""Per-turn limits on the model's tool calls: per step, per turn, and identical repeats.

A call the guard refuses is not run; the model still gets a tool message for it (every call
needs its answer). Refusals past the per-turn cap or the repeat limit end the turn: the loop
then asks the model once more, without tools, for an answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from daemon.agent.settings import AgentSettings

__all__ = ["FREE_TEXT_FIELDS", "CallGuard", "Refusal", "call_key"]

# Argument names whose values are prose for people, not inputs to the tool: a model that loops
# rewords them on every call, so they do not make two calls different.
FREE_TEXT_FIELDS = frozenset(
    {"reason", "why", "purpose", "note", "notes", "explanation", "justification", "comment"}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Refusal:
    """Why a call did not run: ``text`` is for the model; ``status`` is set if it ends the turn."""

    text: str
    reason: str
    status: str | None = None


def call_key(name: str, arguments: str) -> str:
    """What makes two calls the same: the tool and its arguments, free-text fields left out."""
    try:
        parsed: Any = json.loads(arguments)
    except (json.JSONDecodeError, TypeError):
        return f"{name}:{arguments}"
    if isinstance(parsed, dict):
        parsed = {k: v for k, v in parsed.items() if k not in FREE_TEXT_FIELDS}
    return f"{name}:{json.dumps(parsed, sort_keys=True)}"


class CallGuard:
    """Counts one turn's tool calls and refuses those past the configured limits."""

    def __init__(self, settings: AgentSettings) -> None:
        self._per_step = settings.max_tool_calls_per_step
        self._per_turn = settings.max_tool_calls_per_turn
        self._repeats = settings.repeated_call_limit
        self._seen: dict[str, int] = {}
        self.run = 0
        self.ending: Refusal | None = None

    def check(self, name: str, arguments: str, position: int) -> Refusal | None:
        """None when the call (the ``position``-th of its step, from 0) may run; it is counted."""
        if self.ending is not None:
            return Refusal(text=f"ERROR: not run: {self.ending.reason}", reason=self.ending.reason)
        if position >= self._per_step:
            reason = (
                f"at most {self._per_step} tool calls run per step "
                "(agent.max_tool_calls_per_step); ask for the rest in your next step"
            )
            return Refusal(text=f"ERROR: not run: {reason}", reason=reason)
        if self.run >= self._per_turn:
            return self._end(
                "tool_cap",
                f"this request used all {self._per_turn} tool calls it may make "
                "(agent.max_tool_calls_per_turn)",
            )
        key = call_key(name, arguments)
        count = self._seen[key] = self._seen.get(key, 0) + 1
        if count > self._repeats:
            return self._end(
                "repeated_call",
                f"{name} was already called {count - 1} times with exactly these arguments; "
                "the result will not change",
            )
        self.run += 1
        return None

    def _end(self, status: str, reason: str) -> Refusal:
        self.ending = Refusal(text=f"ERROR: not run: {reason}", reason=reason, status=status)
        return self.ending
