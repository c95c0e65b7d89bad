"""The expected shape of a sub-agent's result: a small JSON Schema subset, checked without a
dependency.

Supported keywords: ``type`` (one name or a list), ``properties``, ``required``,
``additionalProperties`` (boolean), ``items``, ``enum``, ``minItems``, ``maxItems``,
``description`` (ignored). Anything else is refused up front, so the coordinator learns at
delegation time, not after the sub-agent has worked.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["ShapeError", "check_schema", "parse_result", "problems"]

KEYWORDS = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "enum",
        "minItems",
        "maxItems",
        "description",
    }
)
TYPES = frozenset({"object", "array", "string", "number", "integer", "boolean", "null"})
_FENCE = re.compile(r"^```(?:json)?\s*\n?(.*?)\n?```$", re.DOTALL)
MAX_PROBLEMS = 5


class ShapeError(ValueError):
    """A schema uses something outside the supported subset, or a result is not JSON."""


def check_schema(schema: Any, path: str = "$") -> None:
    """Raise ShapeError if ``schema`` is not in the supported subset."""
    if not isinstance(schema, dict):
        raise ShapeError(f"{path}: a schema must be a JSON object")
    unknown = set(schema) - KEYWORDS
    if unknown:
        raise ShapeError(
            f"{path}: unsupported keyword(s) {', '.join(sorted(unknown))}; "
            f"use only {', '.join(sorted(KEYWORDS))}"
        )
    kinds = schema.get("type")
    for kind in kinds if isinstance(kinds, list) else [kinds] if kinds is not None else []:
        if kind not in TYPES:
            raise ShapeError(f"{path}: unknown type {kind!r}")
    for name, sub in (schema.get("properties") or {}).items():
        check_schema(sub, f"{path}.{name}")
    if "items" in schema:
        check_schema(schema["items"], f"{path}[]")
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise ShapeError(f"{path}: required must be a list of property names")


def problems(value: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """Where ``value`` does not match ``schema`` (at most a few), or [] when it does."""
    found: list[str] = []
    _walk(value, schema, path, found)
    return found[:MAX_PROBLEMS]


def _type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _walk(value: Any, schema: dict[str, Any], path: str, found: list[str]) -> None:
    if len(found) >= MAX_PROBLEMS:
        return
    kinds = schema.get("type")
    if kinds is not None:
        allowed = set(kinds if isinstance(kinds, list) else [kinds])
        actual = _type_of(value)
        if actual not in allowed and not (actual == "integer" and "number" in allowed):
            found.append(f"{path}: expected {' or '.join(sorted(allowed))}, got {actual}")
            return
    if "enum" in schema and value not in schema["enum"]:
        found.append(f"{path}: {value!r} is not one of {schema['enum']!r}")
    if isinstance(value, dict):
        properties: dict[str, Any] = schema.get("properties") or {}
        for name in schema.get("required", []):
            if name not in value:
                found.append(f"{path}: missing required property {name!r}")
        for name, item in value.items():
            if name in properties:
                _walk(item, properties[name], f"{path}.{name}", found)
            elif schema.get("additionalProperties") is False:
                found.append(f"{path}: unexpected property {name!r}")
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            found.append(f"{path}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            found.append(f"{path}: more than {schema['maxItems']} items")
        if "items" in schema:
            for index, item in enumerate(value):
                _walk(item, schema["items"], f"{path}[{index}]", found)


def parse_result(text: str) -> Any:
    """The JSON value of a final answer (a ```json fence around it is allowed)."""
    body = text.strip()
    if match := _FENCE.match(body):
        body = match.group(1).strip()
    if not body:
        raise ShapeError("the answer was empty, not JSON")
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        raise ShapeError(f"the answer is not JSON ({exc.msg} at position {exc.pos})") from None
