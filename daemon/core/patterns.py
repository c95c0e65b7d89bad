"""Linear-time regular expressions (RE2) for every pattern a config, a model or a chat supplies.

Python's ``re`` backtracks: ``(a+)+$`` against a line of 30 ``a`` and a ``!`` runs for minutes
and, holding the GIL, stalls the event loop even from a worker thread. RE2 runs in time linear in
the text, releases the GIL while it matches, and refuses what it cannot run that way
(backreferences, lookaround, possessive quantifiers). Use :func:`compile_pattern` for any pattern
that did not come from our own source code; fixed patterns written in our code may stay on ``re``.

Differences from ``re`` worth knowing when writing a pattern: ``\\d``, ``\\w``, ``\\s`` and ``\\b``
are ASCII-only (use ``\\pL``, ``\\pN`` or ``[\\p{L}\\p{N}_]`` for other scripts); ``$`` matches
only at the very end, not before a final newline; write ``\\z`` for ``re``'s ``\\Z``; named
groups are ``(?P<name>…)`` or ``(?<name>…)``; repetition counts stop at 1000.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol, cast

import re2

from daemon.core.errors import PatternError

__all__ = [
    "MAX_MEM",
    "UNTRUSTED_MAX_CHARS",
    "UNTRUSTED_MAX_MEM",
    "Match",
    "Pattern",
    "PatternError",
    "PatternFilter",
    "check_pattern",
    "compile_pattern",
    "compile_untrusted",
    "search_text",
]

MAX_MEM = 8 << 20  # RE2's own default: compiled program plus DFA cache, per pattern
# A pattern a model or a chat message supplies. Compiling holds the GIL, and its worst case
# grows with the memory allowed: at 1 MiB it stays within a few milliseconds.
UNTRUSTED_MAX_MEM = 1 << 20
UNTRUSTED_MAX_CHARS = 1000

# RE2's message (prefix) → what it refused, and how to do without it.
_WITHOUT = "rewrite the pattern without it"
_UNSUPPORTED: tuple[tuple[str, str, str], ...] = (
    ("invalid perl operator: (?=", "lookahead `(?=…)`", _WITHOUT),
    ("invalid perl operator: (?!", "negative lookahead `(?!…)`", _WITHOUT),
    ("invalid perl operator: (?<=", "lookbehind `(?<=…)`", _WITHOUT),
    ("invalid perl operator: (?<!", "negative lookbehind `(?<!…)`", _WITHOUT),
    ("invalid perl operator: (?>", "the atomic group `(?>…)`", "use a plain group `(?:…)`"),
    ("invalid perl operator: (?#", "the comment group `(?#…)`", "remove the comment"),
    ("invalid perl operator: (?(", "the conditional group `(?(…)…)`", _WITHOUT),
    ("invalid perl operator: (?x", "verbose mode `(?x)`", "remove the flag and the spaces"),
    ("invalid perl operator: (?a", "the flag `(?a)`", "drop it: \\d, \\w, \\s are ASCII already"),
    ("invalid perl operator: (?u", "the flag `(?u)`", "use \\pL and \\pN for Unicode"),
    ("invalid perl operator: (?L", "the flag `(?L)`", _WITHOUT),
    ("invalid escape sequence: \\Z", "`\\Z`", "write `\\z` for the end of the text"),
    ("bad repetition operator: ++", "the possessive `++`", "use `+`: RE2 never backtracks"),
    ("bad repetition operator: *+", "the possessive `*+`", "use `*`: RE2 never backtracks"),
    ("bad repetition operator: ?+", "the possessive `?+`", "use `?`: RE2 never backtracks"),
)


class Match(Protocol):
    """The part of ``re.Match`` RE2's matches offer."""

    def group(self, *groups: int | str) -> Any: ...
    def groups(self, default: Any = None) -> tuple[Any, ...]: ...
    def groupdict(self, default: Any = None) -> dict[str, Any]: ...
    def start(self, group: int = 0) -> int: ...  # unlike re, numbers only
    def end(self, group: int = 0) -> int: ...
    def span(self, group: int = 0) -> tuple[int, int]: ...


class Pattern(Protocol):
    """The part of ``re.Pattern`` RE2's compiled patterns offer (str patterns only)."""

    @property
    def pattern(self) -> str: ...
    @property
    def groups(self) -> int: ...
    @property
    def groupindex(self) -> Mapping[str, int]: ...
    def search(
        self, text: str, pos: int | None = None, endpos: int | None = None
    ) -> Match | None: ...
    def match(
        self, text: str, pos: int | None = None, endpos: int | None = None
    ) -> Match | None: ...
    def fullmatch(
        self, text: str, pos: int | None = None, endpos: int | None = None
    ) -> Match | None: ...
    def finditer(
        self, text: str, pos: int | None = None, endpos: int | None = None
    ) -> Iterator[Match]: ...
    def sub(self, repl: Any, text: str, count: int = 0) -> str: ...


def compile_pattern(
    text: str, *, where: str = "", max_chars: int | None = None, max_mem: int = MAX_MEM
) -> Pattern:
    """``text`` compiled for RE2, or a PatternError saying what the engine cannot run and why.

    ``where`` names the pattern's place (a config key, a tool argument, a chat matcher) and
    starts the message; config validators leave it empty because pydantic names the key.
    ``max_chars`` bounds the pattern's length, ``max_mem`` its compiled size and DFA cache
    (a pattern too big for it is refused; matching itself stays linear either way).
    """
    prefix = f"{where}: " if where else ""
    if not isinstance(text, str):
        raise PatternError(f"{prefix}a regular expression must be text, got {type(text).__name__}")
    if max_chars is not None and len(text) > max_chars:
        raise PatternError(
            f"{prefix}regular expression is {len(text)} characters long; the limit is {max_chars}"
        )
    try:
        return cast(Pattern, re2.compile(text, _options(max_mem)))
    except re2.error as exc:
        raise PatternError(f"{prefix}{explain(text, exc)}") from None


class PatternFilter:
    """Which of many patterns may match a text, in one pass over it (RE2's FilteredRE2).

    ``candidates`` is a superset of the patterns that match: each pattern's required literals
    are looked for together, and a pattern without any is always a candidate. Searching only
    the candidates costs one pass per line instead of one per pattern.
    """

    def __init__(self, patterns: Sequence[str]) -> None:
        self._all = frozenset(range(len(patterns)))
        self._filter: Any = re2.Filter()
        for text in patterns:
            try:
                self._filter.Add(text, _options(MAX_MEM))
            except re2.error as exc:
                raise PatternError(explain(text, exc)) from None
        try:
            self._filter.Compile()
        except re2.error:  # nothing to filter on (no patterns): every pattern is a candidate
            self._filter = None

    def candidates(self, text: str) -> frozenset[int]:
        """Indices (into the patterns given) of those that may match ``text``."""
        if self._filter is None:
            return self._all
        return frozenset(self._filter.Match(text, True) or ())


def compile_untrusted(text: str, *, where: str) -> Pattern:
    """:func:`compile_pattern` with the limits for a pattern a model or a chat message chose."""
    return compile_pattern(
        text, where=where, max_chars=UNTRUSTED_MAX_CHARS, max_mem=UNTRUSTED_MAX_MEM
    )


def check_pattern(text: str) -> str:
    """``text`` unchanged if RE2 can run it (for pydantic validators), else a PatternError."""
    compile_pattern(text)
    return text


def _options(max_mem: int) -> Any:
    options = re2.Options()
    options.max_mem = max_mem
    options.log_errors = False  # RE2 would print to stderr; the error is raised instead
    return options


def explain(text: str, exc: Exception) -> str:
    """A person's reading of RE2's error ``exc`` for the pattern ``text``."""
    raw = exc.args[0] if exc.args else exc
    message = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    shown = text if len(text) <= 80 else text[:80] + "…"
    head = f"invalid regular expression {shown!r}"
    if message == "invalid perl operator: (?P" and "(?P=" in text:
        return _refused(head, "the named backreference `(?P=name)`", _WITHOUT)
    for start, what, fix in _UNSUPPORTED:
        if message.startswith(start):
            return _refused(head, what, fix)
    if message.startswith("invalid escape sequence: \\") and message[-1:].isdigit():
        return _refused(head, f"the backreference `{message.rsplit(' ', 1)[-1]}`", _WITHOUT)
    if message.startswith("invalid repetition size"):
        return f"{head}: {message} (RE2 allows counts up to 1000)"
    if message.startswith("pattern too large"):
        return (
            f"{head}: too large for the linear-time engine's memory limit; shorten it or use "
            "smaller repetition counts"
        )
    return f"{head}: {message}"


def _refused(head: str, what: str, fix: str) -> str:
    return f"{head}: {what} is not supported by the linear-time engine (RE2); {fix}"


def search_text(pattern: Pattern, text: str) -> Match | None:
    """``pattern.search(text)``; like ``re``, a ``$`` also matches before one final newline.

    For program output and response bodies, which usually end with a newline that ``^ok$``
    means to ignore.
    """
    found = pattern.search(text)
    if found is None and text.endswith("\n"):
        found = pattern.search(text[:-1])
    return found
