"""Base class and small validators shared by every config section."""

from __future__ import annotations

import re
from pathlib import PurePath
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

from daemon.core.patterns import check_pattern, compile_pattern

INT_MAX = 2**63 - 1  # SQLite's INTEGER and C's ssize_t: larger numbers crash far from the config
# Durations by their key's unit: ten years is longer than any schedule, and still fits datetime.
_TEN_YEARS_S = 3650 * 86400.0
DURATION_MAX = {"_seconds": _TEN_YEARS_S, "_minutes": _TEN_YEARS_S / 60, "_days": 3650.0}
DURATION_MAX_MS = 2**31 - 1  # C int milliseconds (SQLite's busy timeout)


class Section(BaseModel):
    """Base for config sections: unknown keys are errors, values are validated on assignment.

    Project-wide rules for every field: no inf/nan floats, no integer beyond 64 bits, no NUL
    character in any text, and durations (keys ending in _seconds, _minutes, _days, _ms) of at
    most ten years.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*")
    @classmethod
    def _sane_values(cls, value: Any, info: ValidationInfo) -> Any:
        check_sane(value)
        return check_duration(info.field_name or "", value)


def check_sane(value: Any) -> None:
    """No NUL in any text and no integer past 64 bits, anywhere inside ``value``."""
    if isinstance(value, str | PurePath):
        if "\x00" in str(value):
            raise ValueError("contains a NUL character (\\0); remove it")
    elif isinstance(value, int) and not isinstance(value, bool):
        if not -INT_MAX <= value <= INT_MAX:
            raise ValueError(f"number out of range; use at most {INT_MAX}")
    elif isinstance(value, dict):
        for key, item in value.items():
            check_sane(key)
            check_sane(item)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            check_sane(item)


def check_duration(name: str, value: Any) -> Any:
    """A number for a key ending in _seconds/_minutes/_days/_ms is at most ten years."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return value
    if name.endswith("_ms"):
        limit: float = DURATION_MAX_MS
    else:
        limit = next((top for unit, top in DURATION_MAX.items() if name.endswith(unit)), 0.0)
    if limit and abs(value) > limit:
        raise ValueError(f"{value:g} is longer than ten years; use at most {limit:g}")
    return value


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


def check_http_url(value: str) -> str:
    """An absolute http(s) URL with a host and no spaces, or a ValueError with an example."""
    from urllib.parse import urlsplit

    example = 'e.g. "https://api.moonshot.ai/v1" or "http://127.0.0.1:8000/v1"'
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValueError(f"{value!r} contains spaces or control characters; {example}")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a valid URL ({exc}); {example}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} must be an http:// or https:// URL with a host; {example}")
    return value


def check_file_name(value: str) -> str:
    """A path that names a file (relative to the state directory, or absolute)."""
    name = value.rstrip("/").rsplit("/", 1)[-1]
    if not value.strip() or value.endswith("/") or name in ("", ".", ".."):
        raise ValueError(f"{value!r} does not name a file; give a file name or an absolute path")
    return value
