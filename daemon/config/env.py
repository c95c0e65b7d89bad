"""Settings from NIGHTSHIFT_* environment variables: which variable set a value (so an error can
name it), and which variables name no setting at all (a typo would otherwise be ignored)."""

from __future__ import annotations

import os
import typing
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

__all__ = ["ENV_PREFIX", "from_environment", "unknown_environment"]

ENV_PREFIX = "NIGHTSHIFT_"


def _env_name(loc: tuple[int | str, ...]) -> str:
    return ENV_PREFIX + "__".join(str(part) for part in loc).upper()


def from_environment(loc: tuple[int | str, ...]) -> str:
    """`` (from $NIGHTSHIFT_LLM__BASE_URL)`` when that variable set the value (or its table)."""
    for size in range(len(loc), 0, -1):
        name = _env_name(loc[:size])
        if name in os.environ:
            return f" (from ${name}; fix or unset it)"
    return ""


def unknown_environment(
    settings: type[BaseModel], environ: Mapping[str, str] | None = None
) -> list[str]:
    """NIGHTSHIFT_* variables that name no field of ``settings`` (pydantic-settings ignores a
    top-level typo silently; one inside a known section is already an error naming it)."""
    environ = os.environ if environ is None else environ
    known: set[str] = set()

    def walk(model: type[BaseModel], path: tuple[str, ...]) -> None:
        for name, field in model.model_fields.items():
            here = (*path, name)
            known.add(_env_name(here))
            for kind in _models_in(field.annotation):
                walk(kind, here)

    walk(settings, ())
    free = ("NIGHTSHIFT_LLM__API_KEY",)  # secrets may also be read from files: always known
    return sorted(
        name
        for name in environ
        if name.startswith(ENV_PREFIX) and name not in known and name not in free
        and not any(name.startswith(k + "__") and _is_mapping(settings, k) for k in known)
    )  # fmt: skip


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models a field's type holds (directly, in a union or a list)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        found += _models_in(arg)
    return found


def _is_mapping(settings: type[BaseModel], env_name: str) -> bool:
    """Whether the setting behind ``env_name`` is a free-form table (users, headers …)."""
    path = env_name.removeprefix(ENV_PREFIX).lower().split("__")
    model: Any = settings
    for part in path:
        fields = getattr(model, "model_fields", {})
        if part not in fields:
            return False
        annotation = fields[part].annotation
        if typing.get_origin(annotation) is dict:
            return True
        models = _models_in(annotation)
        model = models[0] if models else None
    return False
