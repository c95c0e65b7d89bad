"""The one grammar for a duration a person types: silences, task intervals, CLI flags, tools.

A duration is one or more parts, each a number and a unit, largest unit first, each unit once:
``90s``, ``15m``, ``1.5h``, ``1h30m``, ``1h 30m``, ``2d``, ``1w``. Units: w(eeks), d(ays),
h(ours), m(inutes), s(econds), in either case. A number may have a decimal part (``1.5h``).
Refused, with a message saying what is accepted: a bare number (seconds or minutes?), anything
else, units out of order or repeated (``30m1h`` is likely a typo), zero, negatives, and more than
:data:`MAX_DURATION` (a year). Callers add their own bounds (a silence lasts at most 30 days, a
task interval is whole seconds).
"""

from __future__ import annotations

import re
from datetime import timedelta
from fractions import Fraction

from daemon.core.errors import InputError

__all__ = ["EXAMPLES", "MAX_DURATION", "DurationError", "looks_like_duration", "parse_duration"]

MAX_DURATION = timedelta(days=365)
EXAMPLES = "write e.g. 90s, 15m, 1.5h, 1h30m or 2d (units: w, d, h, m, s)"
_UNITS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([wdhms])", re.IGNORECASE)
_WHOLE = re.compile(r"\s*(?:\d+(?:\.\d+)?\s*[wdhms]\s*)+", re.IGNORECASE)
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")
_NEGATIVE = re.compile(r"-\s*\d")


class DurationError(InputError):
    """A typed duration is not understood or out of bounds; the message says what to write."""


def looks_like_duration(word: str) -> bool:
    """True when ``word`` starts like a duration (a number then a unit), e.g. to pick the
    duration out of a command's words; :func:`parse_duration` then judges all of it."""
    return _PART.match(word) is not None


def parse_duration(text: str, what: str = "duration") -> timedelta:
    """``text`` as a positive timedelta (microsecond precision); ``what`` names it in errors."""
    cleaned = str(text).strip()
    shown = f"{what} {text!r}"
    if _NUMBER.fullmatch(cleaned):
        raise DurationError(f"{shown} has no unit: {EXAMPLES}")
    if _NEGATIVE.match(cleaned):
        raise DurationError(f"{shown} is negative: a duration is longer than zero; {EXAMPLES}")
    if not _WHOLE.fullmatch(cleaned):
        raise DurationError(f"{shown} is not understood: {EXAMPLES}")
    parts = [(Fraction(number), unit.lower()) for number, unit in _PART.findall(cleaned)]
    units = [unit for _, unit in parts]
    if units != sorted(set(units), key=list(_UNITS).index):
        raise DurationError(f"{shown} repeats or misorders units (largest first): {EXAMPLES}")
    seconds = sum((number * _UNITS[unit] for number, unit in parts), Fraction(0))
    if seconds > MAX_DURATION.total_seconds():
        raise DurationError(f"{shown} is too long: at most {MAX_DURATION.days}d")
    micro = round(seconds * 1_000_000)
    if micro <= 0:
        raise DurationError(f"{shown} is zero: a duration is longer than that; {EXAMPLES}")
    return timedelta(microseconds=micro)
