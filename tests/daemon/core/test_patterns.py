"""compile_pattern: RE2 runs what it can in linear time and names what it refuses."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.core.errors import PatternError
from daemon.core.patterns import (
    PatternFilter,
    check_pattern,
    compile_pattern,
    compile_untrusted,
    search_text,
)


def test_a_catastrophic_pattern_answers_on_a_long_hostile_text() -> None:
    pattern = compile_pattern("(a+)+$")
    assert pattern.search("a" * 100_000 + "!") is None
    found = pattern.search("x" + "a" * 100_000)
    assert found is not None and found.span() == (1, 100_001)


def test_unicode_text_named_groups_and_substitution() -> None:
    pattern = compile_pattern(r"user=(?P<user>\S+) ärger")
    found = pattern.search("ünïcode user=jörg ärger")
    assert found is not None
    assert found.groupdict() == {"user": "jörg"} and found.start(1) == 13
    assert dict(pattern.groupindex) == {"user": 1}
    assert compile_pattern(r"(\d+)").sub(r"<\1>", "a1b22") == "a<1>b<22>"
    assert [m.group() for m in compile_pattern(r"\pL+").finditer("été 1 ok")] == ["été", "ok"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("error(?=: disk)", "lookahead `(?=…)` is not supported by the linear-time engine (RE2)"),
        ("(?<!no )disk", "negative lookbehind `(?<!…)` is not supported"),
        (r"(web)-\1", r"the backreference `\1` is not supported"),
        ("(?P<h>web)-(?P=h)", "the named backreference `(?P=name)` is not supported"),
        ("a++", "the possessive `++` is not supported by the linear-time engine (RE2); use `+`"),
        (r"done\Z", r"write `\z` for the end of the text"),
        ("a{1001}", "invalid repetition size: {1001} (RE2 allows counts up to 1000)"),
        ("(unclosed", "missing ): (unclosed"),
    ],
)
def test_what_the_engine_cannot_run_is_named_with_where(text: str, message: str) -> None:
    with pytest.raises(PatternError) as info:
        compile_pattern(text, where="rules.1 (HotCpu).match")
    assert str(info.value).startswith(
        f"rules.1 (HotCpu).match: invalid regular expression {text!r}"
    )
    assert message in str(info.value)
    with pytest.raises(ValueError, match="not supported|invalid"):
        check_pattern(text)  # what pydantic validators call


def test_untrusted_patterns_are_bounded_in_length_and_size() -> None:
    with pytest.raises(PatternError, match="grep: .* 1001 characters long; the limit is 1000"):
        compile_untrusted("x" * 1001, where="grep")
    with pytest.raises(PatternError, match="too large for the linear-time engine's memory limit"):
        compile_untrusted(r"\w{1000}" * 20, where="grep")
    assert compile_pattern(r"\w{1000}" * 20).search("x") is None  # a config's may be bigger


def test_search_text_lets_dollar_match_before_a_final_newline_like_re() -> None:
    pattern = compile_pattern("^READY$")
    assert pattern.search("READY\n") is None  # RE2's own `$`: the very end only
    assert search_text(pattern, "READY\n") is not None
    assert search_text(pattern, "READY\n\n") is None


FILTERED = [
    r"\bERROR\b|\bFATAL\b",
    r"(?i)kernel panic",
    r"Out of memory: Killed process (\d+)",
    r"Prüfung (?:fehlgeschlagen|failed)",
    r"took (\d{4,}) ?ms",
    r"(?i)straße|ÉTÉ",
    r"^sshd\[\d+\]: Invalid user (\S+)$",
]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "ERROR",
                "error",
                "FATAL",
                "KERNEL PANIC",
                "kernel panic",
                "Out of memory: ",
                "Killed process 42",
                "Prüfung ",
                "failed",
                "took 12345ms",
                "STRASSE",
                "straße",
                "été",
                "sshd[7]: ",
                "Invalid user bob",
                " ",
                "x",
                "\u00e9",
                "\n",
            ]
        ),
        max_size=8,
    ).map("".join)
)
def test_a_pattern_filter_never_rules_out_a_pattern_that_matches(text: str) -> None:
    matching = {i for i, p in enumerate(FILTERED) if compile_pattern(p).search(text)}
    assert matching <= PatternFilter(FILTERED).candidates(text)
