"""The per-turn tool-call limits: per step, per turn, identical repeats."""

from __future__ import annotations

import json

from daemon.agent.call_guard import CallGuard, call_key
from daemon.agent.settings import AgentSettings


def test_free_text_fields_do_not_make_calls_different() -> None:
    first = call_key("run_command", json.dumps({"command": "df -h", "reason": "disk?"}))
    again = call_key("run_command", '{"reason": "check once more", "command": "df -h"}')
    other = call_key("run_command", json.dumps({"command": "df -i", "reason": "disk?"}))
    assert first == again != other
    assert call_key("x", "not json") != call_key("x", "not json ")  # raw text compared as is


def test_repeats_end_the_turn_and_later_calls_are_refused_too() -> None:
    guard = CallGuard(AgentSettings(repeated_call_limit=1))
    assert guard.check("look", '{"path": "/"}', 0) is None
    refusal = guard.check("look", '{"path": "/", "why": "again"}', 1)
    assert refusal is not None and refusal.status == "repeated_call"
    later = guard.check("look", '{"path": "/etc"}', 2)
    assert later is not None and later.status is None and "already called 1 times" in later.text
    assert guard.run == 1


def test_step_cap_refuses_without_ending_and_turn_cap_ends() -> None:
    guard = CallGuard(AgentSettings(max_tool_calls_per_step=2, max_tool_calls_per_turn=3))
    step = [guard.check("echo", json.dumps({"n": n}), n) for n in range(3)]
    assert step[:2] == [None, None] and step[2] is not None and step[2].status is None
    assert guard.check("echo", '{"n": 3}', 0) is None
    ended = guard.check("echo", '{"n": 4}', 1)
    assert ended is not None and ended.status == "tool_cap" and guard.run == 3
