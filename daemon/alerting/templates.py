"""Annotation templates (``{mount} is {value:.0f}% full``): checked at load, rendered bounded.

A template is ``str.format`` syntax over plain names and ``[key]`` lookups. Format specs are
limited so that no template can ask for a gigabyte-wide field (``{value:>999999999}``), reach
into objects (``{value.__class__}``), or take its width from a label (``{value:>{mount}}``).
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from typing import Any

from daemon.core.errors import TemplateError

__all__ = ["MAX_PRECISION", "MAX_RENDERED", "MAX_WIDTH", "check_template", "render"]

MAX_WIDTH = 200  # characters one field may be padded to
MAX_PRECISION = 50  # digits after the point (or characters kept of a text)
MAX_RENDERED = 8192  # characters of one rendered annotation

# The standard format-spec mini-language, with width and precision captured.
_SPEC = re.compile(
    r"(?:.?[<>=^])?[-+ ]?z?#?0?(?P<width>\d+)?[_,]?(?:\.(?P<precision>\d+))?[bcdeEfFgGnosxX%]?",
    re.DOTALL,
)
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\[[^\[\]{}]*\])*")


def check_spec(spec: str) -> None:
    """Raise TemplateError unless ``spec`` is a plain format spec within the size limits."""
    if "{" in spec or "}" in spec:
        raise TemplateError(f"format spec {spec!r} takes a value from a field; write it out")
    found = _SPEC.fullmatch(spec)
    if found is None:
        raise TemplateError(f"format spec {spec!r} is not valid (e.g. '.0f', '>8', ',d')")
    width, precision = found.group("width"), found.group("precision")
    # compare as text first: a 10,000-digit width must not become an int (CPython refuses)
    if width is not None and (len(width) > 4 or int(width) > MAX_WIDTH):
        raise TemplateError(f"format spec {spec!r}: width at most {MAX_WIDTH}")
    if precision is not None and (len(precision) > 4 or int(precision) > MAX_PRECISION):
        raise TemplateError(f"format spec {spec!r}: precision at most {MAX_PRECISION}")


def check_template(text: str) -> str:
    """The template itself, or a TemplateError naming the bad part and the expected form."""
    try:
        parts = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise TemplateError(
            f"bad template {text[:80]!r}: {exc}; use {{value}}, {{threshold}} or a label like "
            "{mount}, and double braces {{{{ }}}} for literal ones"
        ) from None
    for _, field, spec, _ in parts:
        if field is None:
            continue
        if not _FIELD.fullmatch(field):
            raise TemplateError(
                f"template field {{{field[:40]}}}: use a plain name like {{mount}} or "
                "{labels[team]}; attributes and positional fields are not allowed"
            )
        check_spec(spec or "")
    return text


class _BoundedFormatter(string.Formatter):
    """str.format that refuses oversized specs and attribute access, whatever the template."""

    def get_field(self, field_name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        if not _FIELD.fullmatch(field_name):
            raise TemplateError(f"field {field_name[:40]!r} not allowed")
        return super().get_field(field_name, args, kwargs)

    def format_field(self, value: Any, format_spec: str) -> Any:
        check_spec(format_spec)
        return super().format_field(value, format_spec)


class _Missing(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def render(template: str, values: Mapping[str, Any]) -> str:
    """Fill ``{name}`` placeholders; unknown names stay as written, a bad spec leaves it raw.

    The result is at most MAX_RENDERED characters, whatever the template and the values.
    """
    if not template:
        return ""
    try:
        text = _BoundedFormatter().vformat(template, (), _Missing(values))
    except (ValueError, KeyError, IndexError, AttributeError, TypeError):
        text = template
    if len(text) > MAX_RENDERED:
        return text[: MAX_RENDERED - 1] + "…"
    return text
