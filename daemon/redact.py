"""Mask secrets in text and data before anything is logged, stored or sent to the model.

``redact`` scans text with a fixed set of precompiled patterns (bearer tokens, API keys,
chat-platform tokens, cloud keys, ``password=…`` assignments, private key blocks, passwords in
URLs) plus the operator's ``[policy] redact_patterns``. ``redact_data`` walks dicts, lists and
tuples, replacing the values of secret-looking keys wholesale and redacting every string.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["REDACTED", "is_secret_key", "redact", "redact_data"]

REDACTED = "[REDACTED]"

# Key names whose value is a secret: the name ends with one of these words (so "access_token"
# and "x-api-key" count, "max_tokens" and "author" do not).
_KEY_WORDS = (
    r"password|passphrase|passwd|pass|secret|token|api[_-]?key|apikey"
    r"|(?:secret|private|access|signing|encryption|auth)[_-]?key|credentials?|auth"
    r"|authorization|cookies?|session[_-]?id"
)
_SECRET_KEY = re.compile(rf"(?:^|[_.\-\s])(?:{_KEY_WORDS})$", re.IGNORECASE)
# In free text only unambiguous names count ("passwd: files" in nsswitch.conf and "auth: ok"
# are not secrets); "pass" and "auth" need a prefix, as in DB_PASS or basic_auth.
_TEXT_WORDS = (
    r"password|passphrase|secret|token|api[_-]?key|apikey"
    r"|(?:secret|private|access|signing|encryption|auth)[_-]?key|(?<=[_.\-])(?:pass|auth)"
)

_Replacement = str | Callable[[re.Match[str]], str]


def _keep_quotes(match: re.Match[str]) -> str:
    value = match.group("value")
    quote = value[0] if value[:1] in ("'", '"') else ""
    return f"{match.group('key')}{match.group('sep')}{quote}{REDACTED}{quote}"


# (pattern, replacement, hints): a pattern only runs when one of its lower-case hints occurs in
# the lower-cased text, so clean text costs a few substring scans.
_PATTERNS: tuple[tuple[re.Pattern[str], _Replacement, tuple[str, ...]], ...] = (
    # PEM private keys, also when the block is cut off by a truncated read.
    (
        re.compile(
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
            r"[\s\S]*?(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|\Z)"
        ),
        REDACTED,
        ("private key",),
    ),
    # user:password@ in URLs: keep the user, drop the password.
    (
        re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.\-]{0,30}://[^\s/:@]{1,256}:)[^\s/]+@"),
        rf"\1{REDACTED}@",
        ("://",),
    ),
    # Authorization and Cookie headers, bearer tokens.
    (
        re.compile(
            r"(?i)\b(authorization[\"']?[ \t]*[:=][ \t]*[\"']?)(?:[a-z]+[ \t]+)?[^\s\"',;]+"
        ),
        rf"\1{REDACTED}",
        ("authorization",),
    ),
    (
        re.compile(r"(?i)\b((?:set-)?cookie[\"']?[ \t]*[:=][ \t]*[\"']?)[^\r\n\"']+"),
        rf"\1{REDACTED}",
        ("cookie",),
    ),
    (
        re.compile(r"(?i)\b(bearer[ \t]+)[A-Za-z0-9._~+/\-]{8,}=*"),
        rf"\1{REDACTED}",
        ("bearer",),
    ),
    # Provider tokens with a recognisable shape.
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}"), REDACTED, ("sk-",)),  # OpenAI, Moonshot, …
    (re.compile(r"\bxox[abposr]-[A-Za-z0-9\-]{8,}"), REDACTED, ("xox",)),  # Slack
    (re.compile(r"\bxapp-[A-Za-z0-9\-]{8,}"), REDACTED, ("xapp-",)),  # Slack app-level
    (
        re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})"),
        REDACTED,
        ("gh", "github_pat_"),
    ),
    (re.compile(r"\bAIza[0-9A-Za-z_\-]{35}"), REDACTED, ("aiza",)),  # Google API keys
    (
        re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\b"),
        REDACTED,
        ("akia", "asia", "agpa", "aida", "aroa", "anpa", "anva", "aipa"),
    ),
    (  # Telegram bot tokens
        re.compile(r"(?<![\d:])\d{6,12}:[A-Za-z0-9_\-]{35}(?![\w\-])"),
        REDACTED,
        (":",),
    ),
    (  # JWTs
        re.compile(r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]+"),
        REDACTED,
        ("eyj",),
    ),
    # key = value / key: value / "key": "value" (the prefix, as in DB_ or aws_, stays).
    (
        re.compile(
            rf"(?i)(?P<key>(?<![A-Za-z0-9])(?:{_TEXT_WORDS})(?![\w\-])[\"']?)"
            r"(?P<sep>[ \t]*[:=][ \t]*)(?!\[REDACTED\])"
            r"(?P<value>\"[^\"\n]*\"|'[^'\n]*'|[^\s,;&\"'}\])]+)"
        ),
        _keep_quotes,
        ("pass", "secret", "token", "key", "auth"),
    ),
    # --password value
    (
        re.compile(r"(?i)(--?(?:password|passphrase|token|secret|api-key)[ \t]+)[^\s\-]\S*"),
        rf"\1{REDACTED}",
        ("pass", "token", "secret", "api-key"),
    ),
)


@functools.lru_cache(maxsize=64)
def _compile_extra(patterns: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(p) for p in patterns)


def redact(text: str, extra_patterns: Sequence[str] = ()) -> str:
    """Return ``text`` with every recognised secret replaced by ``[REDACTED]``.

    Args:
        text: Any text: command output, log lines, a model's arguments.
        extra_patterns: More regular expressions (``[policy] redact_patterns``); each whole
            match is replaced.
    """
    if not text:
        return text
    lowered = text.lower()
    for pattern, replacement, hints in _PATTERNS:
        if any(hint in lowered for hint in hints):
            text = pattern.sub(replacement, text)
    for pattern in _compile_extra(tuple(extra_patterns)):
        text = pattern.sub(REDACTED, text)
    return text


def is_secret_key(key: str) -> bool:
    """Whether a mapping key names a secret (``api_key``, ``X-Auth-Token``, ``cookie`` …)."""
    return bool(_SECRET_KEY.search(key.strip()))


def redact_data(value: Any, extra_patterns: Sequence[str] = ()) -> Any:
    """Return a copy of ``value`` with secrets masked, recursing into dicts, lists and tuples.

    Values under secret-looking keys are replaced wholesale (``None`` stays ``None`` so "not
    set" remains visible); every other string goes through :func:`redact`. Other types are
    returned unchanged.
    """
    if isinstance(value, str):
        return redact(value, extra_patterns)
    if isinstance(value, dict):
        return {
            key: (
                REDACTED
                if isinstance(key, str) and is_secret_key(key) and item is not None
                else redact_data(item, extra_patterns)
            )
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [redact_data(item, extra_patterns) for item in value]
    if isinstance(value, tuple):
        return tuple(redact_data(item, extra_patterns) for item in value)
    return value
