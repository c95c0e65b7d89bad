"""The one duration grammar: what silences, task intervals, CLI flags and tools accept."""

from __future__ import annotations

from datetime import timedelta

import pytest

from daemon.core.durations import (
    EXAMPLES,
    DurationError,
    looks_like_duration,
    parse_duration,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("2h", 7200), ("1d", 86400), ("1w", 604800), ("1h30m", 5400)]
    + [("1.5h", 5400), ("0.5s", 0.5), ("1.1h", 3960), ("2.25d", 194400), ("1w2d", 777600)]
    + [(" 1h 30m ", 5400), ("15 m", 900), ("2H", 7200), ("1d2h3m4s", 93784), ("365d", 31536000)],
)
def test_accepted_spellings(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


def test_both_former_spellings_are_one_grammar() -> None:
    """Silences took `1.5h` and `30m1h`; task intervals took `1h 30m` and refused `1.5h`."""
    assert parse_duration("1.5h") == parse_duration("1h 30m") == parse_duration("90m")
    assert parse_duration("1.1h").total_seconds() == 3960  # exact: no float fuzz (3960.0000…05)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("15", f"duration '15' has no unit: {EXAMPLES}"),
        ("1.5", f"duration '1.5' has no unit: {EXAMPLES}"),
        ("", f"duration '' is not understood: {EXAMPLES}"),
        ("soon", f"duration 'soon' is not understood: {EXAMPLES}"),
        ("15 minutes", f"duration '15 minutes' is not understood: {EXAMPLES}"),
        ("1,5h", f"duration '1,5h' is not understood: {EXAMPLES}"),
        ("2hx", f"duration '2hx' is not understood: {EXAMPLES}"),
        ("30m1h", f"duration '30m1h' repeats or misorders units (largest first): {EXAMPLES}"),
        ("1h1h", f"duration '1h1h' repeats or misorders units (largest first): {EXAMPLES}"),
        ("0s", f"duration '0s' is zero: a duration is longer than that; {EXAMPLES}"),
        ("0h0m", f"duration '0h0m' is zero: a duration is longer than that; {EXAMPLES}"),
        ("-5m", f"duration '-5m' is negative: a duration is longer than zero; {EXAMPLES}"),
        ("366d", "duration '366d' is too long: at most 365d"),
        ("9" * 40 + "w", f"duration '{'9' * 40}w' is too long: at most 365d"),
    ],
)
def test_refusals_say_what_is_accepted(text: str, message: str) -> None:
    with pytest.raises(DurationError) as caught:
        parse_duration(text)
    assert str(caught.value) == message


def test_the_error_names_what_was_typed() -> None:
    with pytest.raises(DurationError, match=r"^interval '15' has no unit: write e\.g\. 90s"):
        parse_duration("15", "interval")
    assert EXAMPLES == "write e.g. 90s, 15m, 1.5h, 1h30m or 2d (units: w, d, h, m, s)"


@pytest.mark.parametrize(
    ("word", "expected"),
    [("2h", True), ("1.5h", True), ("2hours", True), ("2H", True), ("12", False)]
    + [("alertname=X", False), ("forever", False), ("-5m", False), ("#12", False)],
)
def test_looks_like_duration_picks_the_duration_out_of_a_command(word: str, expected: bool) -> None:
    assert looks_like_duration(word) is expected
