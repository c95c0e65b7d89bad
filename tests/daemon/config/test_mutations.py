"""Property: any mutation of config.example.toml is accepted or refused with exit 78 naming a key.

`nightshift check-config` runs in-process (daemon.cli.main.main); any exception other than the
handled ConfigError escapes and fails the test with its traceback.
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.cli.main import main
from tests.support import ROOT

EXAMPLE: dict[str, Any] = tomllib.loads((ROOT / "config.example.toml").read_text())


class Raw(str):
    """TOML text written as is (deep nesting that no Python value should be built for)."""


def paths(node: Any, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every table, array and value position in the example, as key paths."""
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += paths(value, (*prefix, index))
    return found


PATHS = paths(EXAMPLE)
KNOWN_KEYS = {".".join(str(part) for part in path) for path in PATHS}


def toml_value(value: Any) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        items = (f"{toml_string(str(k))} = {toml_value(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    raise TypeError(type(value))


def toml_string(text: str) -> str:
    """A TOML basic string: JSON's escapes, plus DEL, which TOML wants escaped too."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def to_toml(data: dict[str, Any]) -> str:
    """One `key = value` line per top-level key, tables inline (TOML 1.0)."""
    return "\n".join(f"{toml_string(key)} = {toml_value(value)}" for key, value in data.items())


def deep(opening: str, closing: str, inner: str) -> st.SearchStrategy[Raw]:
    return st.integers(1, 3000).map(lambda n: Raw(opening * n + inner + closing * n))


ODD_TEXTS = ["", " ", "a\x00b", "/tmp/x\x00", "{value:>999999999}", "{x:099999999d}", "ftp://x",
             "http://", "http://a b", "slack", "pager:1", "0.0.0.0"]  # fmt: skip
VALUES: st.SearchStrategy[Any] = st.one_of(
    st.integers(-(10**30), 10**30),
    st.sampled_from([0, -1, 2**63, 2**63 - 1, 10**400, 99999999999999999999999]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.inf, -math.inf, math.nan, 1e300, -0.0]),
    st.text(max_size=20),
    st.sampled_from(ODD_TEXTS),
    st.booleans(),
    st.lists(st.one_of(st.text(max_size=5), st.integers()), max_size=3),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
    st.integers(4000, 6000).map(lambda digits: Raw("9" * digits)),  # past int("…") limits
    deep("[", "]", ""),
    deep("{a=", "}", "1"),
)


def mutate(data: Any, path: tuple[str | int, ...], value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(data, dict):
        copy = dict(data)
        copy[head] = mutate(copy.get(head), rest, value)
        return copy
    if isinstance(data, list) and isinstance(head, int) and head < len(data):
        copy_list = list(data)
        copy_list[head] = mutate(copy_list[head], rest, value)
        return copy_list
    return value


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("NIGHTSHIFT_") or key in ("CREDENTIALS_DIRECTORY", "STATE_DIRECTORY"):
            monkeypatch.delenv(key)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    mutations=st.lists(st.tuples(st.sampled_from(PATHS), VALUES), min_size=1, max_size=3),
    extra=st.one_of(st.none(), st.tuples(st.sampled_from(PATHS), st.text(min_size=1, max_size=8))),
)
def test_check_config_accepts_or_names_the_key(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    clean_env: None,
    mutations: list[tuple[tuple[str | int, ...], Any]],
    extra: tuple[tuple[str | int, ...], str] | None,
) -> None:
    data: Any = EXAMPLE
    for path, value in mutations:
        data = mutate(data, path, value)
    if extra is not None:  # an unknown key inside an existing table
        data = mutate(data, (*extra[0], extra[1]), 1)
    config = tmp_path / "mutated.toml"
    config.write_text(to_toml(data))
    state = tmp_path / "state"

    code = main(["check-config", str(config), "--state-dir", str(state)])

    out, err = capsys.readouterr()
    assert code in (0, 78), err
    if code == 0:
        assert "valid" in out
        return
    assert err.startswith(f"nightshift: configuration error: {config}: "), err
    problems = err.strip().splitlines()
    assert all(len(line) < 400 for line in problems), err  # one readable line per problem
    mutated = {".".join(str(part) for part in path[:2]) for path, _ in mutations}
    if extra is not None:
        mutated.add(".".join(str(part) for part in extra[0][:2]))
    named = KNOWN_KEYS | mutated | {"$CREDENTIALS_DIRECTORY"}
    assert any(key in err for key in named) or "invalid TOML" in err, err
    assert "Traceback" not in err
