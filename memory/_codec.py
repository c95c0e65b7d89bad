"""Conversions between Python values and their stored form (timestamps, JSON)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any


def to_db_time(value: datetime) -> str:
    """An aware datetime as fixed-width ISO-8601 UTC text, so text order is time order."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value!r}: pass an aware (UTC) datetime")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def from_db_time(text: str) -> datetime:
    """Stored ISO-8601 text back to an aware UTC datetime."""
    return datetime.fromisoformat(text).astimezone(UTC)


def from_db_time_opt(text: str | None) -> datetime | None:
    """Like from_db_time, passing NULL through."""
    return None if text is None else from_db_time(text)


def dump_json(value: Any, *, lenient: bool = False) -> str | None:
    """JSON text for a value (None stays NULL); lenient turns unknown objects into str."""
    if value is None:
        return None
    return json.dumps(value, ensure_ascii=False, default=str if lenient else None)


def load_json(text: str | None) -> Any:
    """Stored JSON text back to a value (NULL becomes None)."""
    return None if text is None else json.loads(text)
