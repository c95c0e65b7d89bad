"""Label matchers in Alertmanager syntax: name=value, name!=value, name=~re, name!~re.

Used by silences, maintenance windows and inhibition. Regexes match the whole value and run on
the linear-time engine (daemon.core.patterns): a matcher typed in chat cannot stall the daemon.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from daemon.core.patterns import Pattern, compile_untrusted

# The value is stripped in Python: `\s*(.*?)\s*$` backtracks quadratically over long blanks.
_MATCHER = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)(.*)$")


@dataclass(frozen=True, slots=True)
class Matcher:
    """One condition on one label; a missing label counts as the empty string."""

    name: str
    op: str
    value: str
    _regex: Pattern | None = field(init=False, default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.op in ("=~", "!~"):
            object.__setattr__(
                self, "_regex", compile_untrusted(self.value, where=f"matcher {self}")
            )

    @classmethod
    def parse(cls, text: str) -> Matcher:
        """Parse ``name=value`` and friends, or raise ValueError saying what is expected."""
        found = _MATCHER.match(text)
        if found is None:
            raise ValueError(
                f"bad matcher {text!r}: write label=value, label!=value, label=~regex or "
                "label!~regex (e.g. alertname=DiskFull, mount=~/var.*)"
            )
        name, op, value = found.groups()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        return cls(name, op, value)

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        assert self._regex is not None
        hit = self._regex.fullmatch(actual) is not None
        return hit if self.op == "=~" else not hit

    def matches_empty(self) -> bool:
        """Whether a missing label (the empty string) satisfies this matcher."""
        return self.matches({})

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.value}"


def parse_matchers(texts: Iterable[str], *, narrow: bool = True) -> list[Matcher]:
    """Parse several matchers; with ``narrow`` (silences) they may not match every alert."""
    matchers = [Matcher.parse(text) for text in texts]
    if not matchers:
        raise ValueError("give at least one matcher, e.g. alertname=DiskFull")
    if narrow and all(
        m.op in ("!=", "!~") or (m.op == "=~" and m.matches_empty()) for m in matchers
    ):
        raise ValueError(
            "these matchers would match every alert; add one that names what to match, "
            "e.g. alertname=DiskFull"
        )
    return matchers


def match_all(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    return all(matcher.matches(labels) for matcher in matchers)
