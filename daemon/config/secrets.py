"""Configured secrets: register them for redaction, mask them for `check-config`, and warn when
one sits in plain TOML instead of a credential file or an environment variable."""

from __future__ import annotations

import shlex
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

from daemon.core.redact import add_secrets, is_secret_key, redact, use_patterns

__all__ = ["MASK", "masked_config", "plain_toml_warnings", "register_secrets", "secret_values"]

MASK = "**********"  # what pydantic shows for a SecretStr

_Path = tuple[str | int, ...]


def _secret_fields(value: Any, path: _Path = ()) -> Iterator[tuple[_Path, SecretStr]]:
    """Every ``SecretStr`` in a settings tree, with its path."""
    if isinstance(value, SecretStr):
        yield path, value
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _secret_fields(getattr(value, name), (*path, name))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _secret_fields(item, (*path, index))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _secret_fields(item, (*path, str(key)))


def _secret_keyed_strings(value: Any) -> Iterator[str]:
    """Strings under secret-named keys of free-form tables (``headers = {Authorization = …}``).

    Only plain dicts count: a settings field such as ``no_news_token`` is not a secret.
    """
    if isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _secret_keyed_strings(getattr(value, name))
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _secret_keyed_strings(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, str) and isinstance(key, str) and is_secret_key(key):
                yield item
                yield item.rsplit(" ", 1)[-1]  # "Bearer abc…" → also "abc…" on its own
            else:
                yield from _secret_keyed_strings(item)


def secret_values(settings: BaseModel) -> list[str]:
    """Every configured secret value: ``SecretStr`` fields and values under secret-named keys."""
    values = [secret.get_secret_value() for _, secret in _secret_fields(settings)]
    values += _secret_keyed_strings(settings)
    return [value for value in values if value and value != MASK]


def register_secrets(settings: BaseModel) -> None:
    """Mask every configured secret verbatim from now on (kept across reloads), and apply the
    operator's ``[policy] redact_patterns`` in every redaction."""
    add_secrets(secret_values(settings))
    policy = getattr(settings, "policy", None)
    use_patterns(getattr(policy, "redact_patterns", ()))


# -- check-config -------------------------------------------------------------------------------


def _mask_argv(argv: list[str]) -> list[str]:
    """A command's arguments with secrets masked, looking across arguments (``-u`` ``a:b``)."""
    joined = shlex.join(argv)
    masked = redact(joined)
    if masked == joined:
        return argv
    try:
        parts = shlex.split(masked)
    except ValueError:
        parts = []
    if len(parts) == len(argv):
        return parts
    return [redact(arg) for arg in argv]


def _mask(obj: Any, data: Any) -> Any:
    """``data`` (the JSON dump of ``obj``) with secrets masked, walking both side by side."""
    if isinstance(obj, BaseModel) and isinstance(data, dict):
        return {key: _mask(getattr(obj, key, None), item) for key, item in data.items()}
    if isinstance(obj, SecretStr):
        return MASK
    if isinstance(obj, dict) and isinstance(data, dict):
        return {
            key: MASK
            if is_secret_key(key) and isinstance(item, str) and item
            else _mask(value, item)
            for value, (key, item) in zip(obj.values(), data.items(), strict=False)
        }
    if isinstance(data, list):
        if data and all(isinstance(item, str) for item in data):
            return _mask_argv(data)
        items = obj if isinstance(obj, list | tuple) else [None] * len(data)
        return [_mask(value, item) for value, item in zip(items, data, strict=False)]
    if isinstance(data, str):
        return redact(data)
    return data


def masked_config(settings: BaseModel) -> dict[str, Any]:
    """The effective config as plain data with every secret-shaped value masked: secret fields,
    values under secret-named keys (headers), URL passwords and secrets in command arguments."""
    masked: dict[str, Any] = _mask(settings, settings.model_dump(mode="json"))
    return masked


def _at(data: Any, path: _Path) -> Any:
    for part in path:
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        else:
            return None
    return data


def _dotted(path: _Path, raw: Any) -> str:
    """``watchers.http.0 (api).headers.Authorization``: list items named by their ``name``."""
    parts: list[str] = []
    node = raw
    for part in path:
        text = str(part)
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            node = None
        if isinstance(part, int) and isinstance(node, dict) and isinstance(node.get("name"), str):
            text += f" ({node['name']})"
        parts.append(text)
    return ".".join(parts)


def _leaves(value: Any, path: _Path = ()) -> Iterator[tuple[_Path, Any]]:
    """(path, value) for every string, and for every list of strings (a command) as one."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, (*path, key))
    elif isinstance(value, list) and not (value and all(isinstance(i, str) for i in value)):
        for index, item in enumerate(value):
            yield from _leaves(item, (*path, index))
    elif isinstance(value, str | list):
        yield path, value


def plain_toml_warnings(settings: BaseModel, config_path: Path | None) -> list[str]:
    """One line per secret written into the TOML file itself, saying how to move it out."""
    if config_path is None:
        return []
    try:
        raw = tomllib.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return []
    secret_paths = {path for path, _ in _secret_fields(settings)}
    shown, masked = settings.model_dump(mode="json"), masked_config(settings)
    warnings: list[str] = []
    for path, value in _leaves(raw):
        if not value:
            continue
        key = _dotted(path, raw)
        if path in secret_paths:
            credential = "__".join(str(part) for part in path)
            warnings.append(
                f"{config_path}: {key} is a secret in plain TOML; move it out: a credential "
                f"file {credential} (systemd: LoadCredential={credential}:/path/to/file, read "
                f"from $CREDENTIALS_DIRECTORY/{credential}; or put it in [state] secrets_dir) "
                f"or the environment variable NIGHTSHIFT_{credential.upper()}, then delete the "
                "key from the file"
            )
        elif _at(shown, path) != _at(masked, path):
            warnings.append(
                f"{config_path}: {key} holds a secret in plain TOML; this key cannot come from "
                "a credential file, so keep the secret out of it (e.g. a command that reads "
                "the secret from $CREDENTIALS_DIRECTORY/<name> via LoadCredential=) and keep "
                "the config file readable only by nightshift (chmod 600)"
            )
    return warnings
