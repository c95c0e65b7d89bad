"""Mask secrets in text and data before anything is logged, stored, shown or sent to the model.

One step for everything: :func:`redact` replaces every configured secret value verbatim (see
:func:`use_secrets`, called when settings load), then every known secret format (the RE2
patterns in :mod:`daemon.core._secret_patterns`), then the operator's ``[policy] redact_patterns``
(also on RE2, so redaction is linear in the text). ``redact_data`` walks dicts, lists and
tuples, replacing the values of secret-looking keys wholesale and redacting every string.
:func:`redact_message` does that once for a chat message that is kept and re-sent (a
:class:`Redacted` one); :func:`redact_messages`, the last stop before a prompt leaves the host,
walks only the messages not redacted yet under the current secrets and patterns.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from typing import Any

from daemon.core._secret_patterns import PATTERNS, REDACTED, compile_linear

__all__ = [
    "MIN_SECRET_LENGTH",
    "REDACTED",
    "Redacted",
    "add_secrets",
    "check_pattern",
    "is_secret_key",
    "redact",
    "redact_data",
    "redact_message",
    "redact_messages",
    "use_patterns",
    "use_secrets",
]

# Configured values shorter than this are not matched verbatim: "abc" would mask every "abc".
MIN_SECRET_LENGTH = 6
# Passes until nothing changes: masking one secret never uncovers another half-matched one.
_MAX_PASSES = 4

# Key names whose value is a secret: the name ends with one of these words (so "access_token"
# and "x-api-key" count, "max_tokens" and "author" do not).
_KEY_WORDS = (
    r"password|passphrase|passwd|pass|secret|token|api[_-]?key|apikey"
    r"|(?:secret|private|access|signing|encryption|auth|account|master|client)[_-]?key"
    r"|credentials?|auth|authorization|cookies?|session[_-]?id|client-key-data"
    r"|shared[_-]?access[_-]?(?:key|signature)"
)
_SECRET_KEY = re.compile(rf"(?:^|[_.\-\s])(?:{_KEY_WORDS})$|[_.\-]pwd$|^pgpassword$",
                         re.IGNORECASE)  # fmt: skip

_secrets: tuple[str, ...] = ()
_patterns: tuple[str, ...] = ()  # [policy] redact_patterns, applied by every redact() call
# redact() results by (text, compiled extra patterns): an agent re-sends its whole conversation
# on every model call, so the same texts come back again and again. Emptied whenever the
# secrets change (the patterns are part of the key), and when it holds too many characters.
_MEMO_CHARS = 4_000_000
_memo: dict[tuple[str, tuple[Any, ...]], str] = {}
_memo_chars = 0
# Bumped whenever the secrets or the patterns change: a message redacted under an older set is
# redacted again before it is sent.
_generation = 0


def use_secrets(values: Iterable[str]) -> None:
    """Mask these values verbatim from now on (replacing the previous set).

    Called with every configured secret (``SecretStr`` settings) whenever settings load, so a
    secret in a format no pattern knows is still masked in logs, SQLite, prompts and output.
    """
    global _secrets, _generation
    unique = {v for v in values if len(v) >= MIN_SECRET_LENGTH and v not in REDACTED}
    _secrets = tuple(sorted(unique, key=len, reverse=True))  # longest first: no partial leftovers
    _generation += 1
    _forget()


def _forget() -> None:
    global _memo_chars
    _memo.clear()
    _memo_chars = 0


def add_secrets(values: Iterable[str]) -> None:
    """Mask these values verbatim too, keeping the ones already known (a reload that rotates
    a token still masks the old one, which a running component may hold)."""
    use_secrets((*_secrets, *values))


def use_patterns(patterns: Iterable[str]) -> None:
    """Apply these operator patterns (``[policy] redact_patterns``) in every :func:`redact`."""
    global _patterns, _generation
    _patterns = tuple(check_pattern(pattern) for pattern in patterns)
    _generation += 1


def check_pattern(pattern: str) -> str:
    """An operator's redaction pattern that RE2 can run, or ValueError naming the problem."""
    if compile_linear(pattern).search("") is not None:
        raise ValueError(
            f"redaction pattern {pattern!r} matches the empty string, so it would mask between "
            "every character; make it match at least one character (e.g. + instead of *)"
        )
    return pattern


@functools.lru_cache(maxsize=64)
def _compile_extra(patterns: tuple[str, ...]) -> tuple[Any, ...]:
    return tuple(compile_linear(p) for p in patterns)


def _mask_nonempty(match: Any) -> str:
    return REDACTED if match.group(0) else ""


def _one_pass(text: str, extra: tuple[Any, ...]) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    lowered = text.lower()
    for pattern in PATTERNS:
        if any(hint in lowered for hint in pattern.hints):
            replaced = pattern.regex.sub(pattern.replace, text)
            if replaced != text:
                text, lowered = replaced, replaced.lower()
    for regex in extra:
        text = regex.sub(_mask_nonempty, text)
    return text


def redact(text: str, extra_patterns: Sequence[str] = ()) -> str:
    """Return ``text`` with every recognised secret replaced by ``[REDACTED]``.

    Args:
        text: Any text: command output, log lines, a model's arguments, a chat message.
        extra_patterns: More regular expressions (``[policy] redact_patterns``, RE2 syntax);
            each whole match is replaced.
    """
    if not text:
        return text
    return _redact(text, _extra(extra_patterns))


def _extra(extra_patterns: Sequence[str]) -> tuple[Any, ...]:
    return _compile_extra(tuple(dict.fromkeys((*_patterns, *extra_patterns))))


def _redact(text: str, extra: tuple[Any, ...]) -> str:
    global _memo_chars
    key = (text, extra)
    if (known := _memo.get(key)) is not None:
        return known
    for _ in range(_MAX_PASSES):
        redacted = _one_pass(text, extra)
        if redacted == text:
            break
        text = redacted
    if _memo_chars + len(key[0]) > _MEMO_CHARS:
        _forget()
    if len(key[0]) <= _MEMO_CHARS // 16:
        _memo[key] = text
        _memo_chars += len(key[0]) + len(text)
    return text


@functools.lru_cache(maxsize=4096)
def is_secret_key(key: str) -> bool:
    """Whether a mapping key names a secret (``api_key``, ``X-Auth-Token``, ``cookie`` …)."""
    return bool(_SECRET_KEY.search(key.strip()))


def redact_data(value: Any, extra_patterns: Sequence[str] = (), *, by_key: bool = True) -> Any:
    """Return a copy of ``value`` with secrets masked, recursing into dicts, lists and tuples.

    With ``by_key``, values under secret-looking keys are replaced wholesale (``None`` stays
    ``None`` so "not set" remains visible); every other string goes through :func:`redact`.
    Other types are returned unchanged.
    """
    return _redact_data(value, _extra(extra_patterns), by_key)


def _redact_data(value: Any, extra: tuple[Any, ...], by_key: bool) -> Any:
    if isinstance(value, str):
        return _redact(value, extra) if value else value
    if isinstance(value, dict):
        return {
            key: (
                REDACTED
                if by_key and isinstance(key, str) and is_secret_key(key) and item is not None
                else _redact_data(item, extra, by_key)
            )
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_redact_data(item, extra, by_key) for item in value]
    if isinstance(value, tuple):
        return tuple(_redact_data(item, extra, by_key) for item in value)
    return value


class Redacted(dict[str, Any]):
    """A chat message already passed through :func:`redact_data`; made only by
    :func:`redact_message`, and read-only so nothing unredacted can be put into it later."""

    __slots__ = ("generation",)

    def __init__(self, message: dict[str, Any], generation: int) -> None:
        super().__init__(message)
        self.generation = generation

    def _read_only(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("a redacted message is read-only: build a new one with redact_message")

    __setitem__ = __delitem__ = __ior__ = _read_only
    update = pop = popitem = setdefault = clear = _read_only

    def __reduce__(self) -> tuple[Any, ...]:  # copy and pickle as a plain dict: not vouched for
        return dict, (dict(self),)


def redact_message(message: dict[str, Any]) -> Redacted:
    """``message`` with its secrets masked, marked so :func:`redact_messages` does not walk it
    again (while the secrets and patterns stay the same)."""
    if type(message) is Redacted and message.generation == _generation:
        return message
    return Redacted(redact_data(message), _generation)


def redact_messages(messages: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every message redacted: the ones :func:`redact_message` did under the current secrets
    and patterns as they are, the rest walked now. The last stop before a prompt leaves the host."""
    return [redact_message(message) for message in messages]
