"""Base class and small validators shared by every config section."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

from daemon.patterns import check_pattern, compile_pattern


class Section(BaseModel):
    """Base for config sections: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def check_regex(pattern: str) -> str:
    """``pattern`` if the linear-time engine (RE2) runs it, else a ValueError naming the problem."""
    return check_pattern(pattern)


_HHMM = re.compile(r"([01]\d|2[0-3]):[0-5]\d")


def check_hhmm(value: str) -> str:
    """A 24-hour "HH:MM" time of day, or a ValueError showing the expected form."""
    if not _HHMM.fullmatch(value):
        raise ValueError(f'{value!r} must be a 24-hour time HH:MM, e.g. "02:30"')
    return value


def check_zone(value: str) -> str:
    """An IANA time zone name, or a ValueError with an example."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {value!r} (use an IANA name like 'Europe/Berlin')"
        ) from None
    return value


def check_word(value: str) -> str:
    """A non-empty name without spaces (used in labels and component names)."""
    value = value.strip()
    if not value or any(ch.isspace() for ch in value):
        raise ValueError(f"must be a non-empty word without spaces (got {value!r})")
    return value


def check_regexes(patterns: dict[str, str]) -> dict[str, str]:
    """Every value compiles for the linear-time engine; an error names the label key."""
    for key, pattern in patterns.items():
        compile_pattern(pattern, where=key)
    return patterns


def split_argv(value: object) -> object:
    """A command given as one string becomes its argument list (shell quoting, no shell)."""
    if isinstance(value, str):
        import shlex

        try:
            return shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"cannot split {value!r} into arguments: {exc}") from None
    return value
