"""The secret formats the redactor knows: one RE2 pattern per format, with cheap hints.

Every pattern is compiled by RE2 (linear time, no look-around, no back-references), so no text
can make redaction slow. A pattern runs only when one of its lower-case hints occurs in the
lower-cased text. Replacements either drop the whole match or keep a leading group (the key,
the flag, the user name) so the context stays readable: ``password=[REDACTED]``.

Decisions on look-alikes (see tests/test_redact.py):
- ``-p`` is a password only right after ``mysql``/``mariadb`` (``-pSECRET``, attached), after
  ``sshpass`` (``-p X``); ``ssh -p 2222``, ``docker run -p 8080:80``, ``mkdir -p`` stay.
- ``-u user:pass`` is a credential only after ``curl``/``wget``; ``docker run -u 1000:1000``
  stays. ``-a X`` only after ``redis-cli``.
- ``passwd: files systemd`` (nsswitch.conf), ``auth: ok``, ``max_tokens=…``, ``PWD=/home/x``
  stay; ``DB_PASS=``, ``MYSQL_PWD=``, ``basic_auth=`` and ``"auth": "…"`` (docker) do not.
- ``password <word>`` counts only on a ``.netrc`` line (``machine … password …``, or a line
  that starts with ``password``), so auth.log's ``Failed password for root`` stays.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import re2

__all__ = ["REDACTED", "SecretPattern", "compile_linear", "PATTERNS"]

REDACTED = "[REDACTED]"

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # RE2 would print parse errors to stderr itself

_Match = Any  # re2 ships no type hints
_Regex = Any
Replacement = Callable[[_Match], str]


def compile_linear(pattern: str) -> _Regex:
    """Compile ``pattern`` with RE2 or raise ValueError naming what RE2 cannot run."""
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        detail = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
        raise ValueError(
            f"regular expression {pattern!r} cannot run on the linear-time engine (RE2): "
            f"{detail}; look-arounds and back-references are not supported"
        ) from None


@dataclass(frozen=True, slots=True)
class SecretPattern:
    """One secret format: where it shows up (hints) and how to mask it."""

    name: str
    regex: _Regex
    replace: Replacement
    hints: tuple[str, ...]


def _whole(match: _Match) -> str:
    return REDACTED


def _keep_head(match: _Match) -> str:
    whole = str(match.group(0))
    tail = whole[len(whole.rstrip(" \t\n\\")) :]  # a blank after, escapes of a closing quote
    return f"{match.group(1)}{REDACTED}{tail}"


_NSS_SOURCES = frozenset(
    ("files", "systemd", "compat", "ldap", "nis", "nisplus", "sss", "db", "winbind", "dns",
     "myhostname", "resolve", "mymachines", "mdns4_minimal", "mdns4", "mdns", "wins")
)  # fmt: skip


def _key_value(match: _Match) -> str:
    key, sep, value = (str(match.group(name)) for name in ("key", "sep", "value"))
    after = match.group("after") or ""  # what ends a JSON string: `"k": "v", ` or `"v"}`
    value = value[: len(value) - len(after)]
    if value in (REDACTED, f'"{REDACTED}"', f"'{REDACTED}'"):
        return str(match.group(0))
    if key.lower().endswith("passwd") and ":" in sep and value.lower() in _NSS_SOURCES:
        return str(match.group(0))  # nsswitch.conf: "passwd: files systemd"
    unescaped = value.lstrip("\\")
    quote = value[: len(value) - len(unescaped)] + unescaped[:1]
    if quote[-1:] in ("'", '"') and len(value) >= 2 * len(quote) and value.endswith(quote):
        return f"{key}{sep}{quote}{REDACTED}{quote}{after}"  # "…", '…', \"…\" (JSON in JSON)
    tail = value[len(value.rstrip("\\")) :]  # the escapes of a closing \" in JSON text
    return f"{key}{sep}{REDACTED}{tail}{after}"


def _scheme_token(match: _Match) -> str:
    token = str(match.group(2))
    if token.isalpha() and token.islower():  # "basic authentication", "bearer tokenization"
        return str(match.group(0))
    following = str(match.string)[match.end() : match.end() + 1]
    if following == ":" or (token.endswith("=") and following.strip()):
        return str(match.group(0))  # "token DB_PASS=x": a key, redacted as key = value
    ahead = str(match.string)[match.end() : match.end() + 16].lstrip(" \t")
    if ahead[:1] in (":", "=") and _KEY_NAME.fullmatch(token):
        return str(match.group(0))  # "TOKEN aws_secret_access_key = x": the same, spaced
    return f"{match.group(1)}{REDACTED}"


# Key names whose value is a secret in ``key=value`` / ``key: value`` / ``"key": "value"``:
# anything ending in one of these words (a prefix such as DB_, PG or aws_secret_ may precede).
_ANY_PREFIX_WORDS = (
    r"password|passphrase|passwd|secret|token|api[_-]?key|apikey|credentials?"
    r"|(?:secret|private|access|signing|encryption|auth|account|master|client|shared[_-]?access)"
    r"[_-]?key|client[_-]key[_-]data|shared[_-]?access[_-]?signature|session[_-]?id"
)
# Short words that count only after a separator (DB_PASS, MYSQL_PWD, basic_auth, sasl.jaas.pwd).
_SEPARATED_WORDS = r"pass|pwd|auth"
_KEY = (
    rf"(?P<key>(?:[A-Za-z0-9_.\-]*(?:{_ANY_PREFIX_WORDS})"
    rf"|[A-Za-z0-9]+(?:[_.\-][A-Za-z0-9]+)*[_.\-](?:{_SEPARATED_WORDS}))(?:\\*[\"'])?)"
)
_KEY_NAME = compile_linear(rf"(?i){_KEY}")  # a whole word that names a secret
_VALUE = (
    r"(?P<value>\[REDACTED\]|\\+\"[^\"\\\n]*\\+\"|\"[^\"\n]*\"(?P<after>[\s,;}\]]|\z)|'[^'\n]*'"
    r"|[^\s,;&\"'}\])]+)"
)
# A double-quoted shell word must end at a blank or the end: in JSON text a bare quote ends the
# string, and `-p", "next": "` is structure, not a password.
_DQ = r"""\"[^"\n]*\"(?:[ \t\n]|\z)"""
_ARG = rf"""(?:'[^'\n]*'|{_DQ}|[^\s'"]+)"""  # one shell word
_SAME_COMMAND = r"[^\n|;&]*?"  # the rest of one simple command, lazily
_FLAG = r"[ \t]['\"]?"  # before an option: a blank, maybe an opening quote (shlex.join)

_TABLE: tuple[tuple[str, str, Replacement, tuple[str, ...]], ...] = (
    (  # PEM/OpenSSH/PGP private keys, also when cut off by a truncated read: then up to the
        # end, or to the closing quote of the JSON string it sits in (keeps JSON valid).
        "private key block",
        r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----"
        r"(?:[^\"]*?-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|[^\"\\]*(?:\\[^\"][^\"\\]*)*)",
        _whole,
        ("private key",),
    ),
    (  # scheme://user:password@host: keep the user.
        "url userinfo",
        r"\b([a-zA-Z][a-zA-Z0-9+.\-]{0,30}://[^\s/:@]{0,256}:)[^\s/]+@",
        lambda m: f"{m.group(1)}{REDACTED}@",
        ("://",),
    ),
    (
        "slack webhook url",
        r"(?i)(hooks\.slack\.com/(?:services|workflows|triggers)/)[A-Za-z0-9/_\-]+",
        _keep_head,
        ("hooks.slack.com",),
    ),
    (
        "discord webhook url",
        r"(?i)(discord(?:app)?\.com/api/webhooks/[0-9]+/)[A-Za-z0-9_\-]+",
        _keep_head,
        ("/api/webhooks/",),
    ),
    (  # ?access_token=…, &sig=… (Azure SAS), X-Amz-Signature=…, ?key=… (Google).
        "url query secret",
        r"(?i)([?&](?:sig|signature|x-amz-signature|x-amz-credential|x-amz-security-token"
        r"|x-goog-signature|key|code|client_secret|access_token|refresh_token|id_token|token"
        r"|api_key|apikey|password|secret)=)[^&\s#\"'<>]+",
        _keep_head,
        ("?", "&"),
    ),
    (
        "authorization header",
        r"(?i)\b((?:proxy-)?authorization\\?[\"']?[ \t]*[:=][ \t]*\\?[\"']?)"
        r"(?:[a-z]+[ \t]+)?[^\s\"',;\\]+",
        _keep_head,
        ("authorization",),
    ),
    (
        "cookie header",
        r"(?i)\b((?:set-)?cookie\\?[\"']?[ \t]*[:=][ \t]*\\?[\"']?)[^\r\n\"'\\]+",
        _keep_head,
        ("cookie",),
    ),
    ("openai/moonshot/anthropic key", r"\bsk-[A-Za-z0-9_\-]{16,}", _whole, ("sk-",)),
    (
        "stripe key",
        r"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{10,}|\bwhsec_[A-Za-z0-9]{16,}",
        _whole,
        ("k_live_", "k_test_", "whsec_"),
    ),
    ("slack token", r"\bxox[abposre]-[A-Za-z0-9\-]{8,}", _whole, ("xox",)),
    ("slack app token", r"\bxapp-[A-Za-z0-9\-]{8,}", _whole, ("xapp-",)),
    (
        "github token",
        r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})",
        _whole,
        ("gh", "github_pat_"),
    ),
    (
        "gitlab token",
        r"\bgl(?:pat|dt|rt|ptt|cbt|oas|soat|ft|imt)-[A-Za-z0-9_\-]{20,}",
        _whole,
        ("gl",),
    ),
    ("npm token", r"\bnpm_[A-Za-z0-9]{36,}", _whole, ("npm_",)),
    ("hugging face token", r"\b(?:hf|api_org)_[A-Za-z0-9]{30,}", _whole, ("hf_", "api_org_")),
    ("google api key", r"\bAIza[0-9A-Za-z_\-]{35}", _whole, ("aiza",)),
    (
        "google oauth token",
        r"\bya29\.[0-9A-Za-z_\-]{20,}|\bGOCSPX-[0-9A-Za-z_\-]{20,}",
        _whole,
        ("ya29.", "gocspx-"),
    ),  # fmt: skip
    (
        "aws access key id",
        r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\b",
        _whole,
        ("akia", "asia", "agpa", "aida", "aroa", "anpa", "anva", "aipa"),
    ),
    ("telegram bot token", r"[0-9]{6,12}:[A-Za-z0-9_\-]{35,}", _whole, (":",)),
    (
        "jwt",
        r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*",
        _whole,
        ("eyj",),
    ),
    (  # /etc/shadow, htpasswd, crypt(3) hashes: $6$…, $2y$…, $apr1$…, $y$…, $argon2id$…
        "password hash",
        r"\$(?:1|2[abxy]?|5|6|7|y|gy|apr1|md5|sha1|argon2(?:id|i|d)|scrypt|pbkdf2[a-z0-9\-_]*)"
        r"\$[A-Za-z0-9./+=$,\-]{8,}|\{(?:SSHA|SHA|SMD5|MD5|CRYPT)\}[A-Za-z0-9+/=.$]{8,}",
        _whole,
        ("$", "{"),
    ),
    (  # docker config.json: "auth": "base64(user:password)"
        "docker auth",
        r"(?i)(\\*\"auth\\*\"[ \t]*:[ \t]*\\*\")[^\"\\\n]+",
        _keep_head,
        ('"auth', '\\"auth'),
    ),
    (
        "key = value",
        rf"(?i){_KEY}(?P<sep>[ \t]*[:=][ \t]*){_VALUE}",
        _key_value,
        ("pass", "pwd", "secret", "token", "key", "auth", "credential", "session", "signature"),
    ),
    # Arguments of known commands last: a key=value inside them keeps its own context.
    (  # mysql -pSECRET (attached, as mysql wants it); -P 3306 and -p alone stay.
        "mysql -p",
        rf"((?i:\b(?:mysql|mariadb)[a-z\-]*){_SAME_COMMAND}{_FLAG}-p){_ARG}",
        _keep_head,
        ("mysql", "mariadb"),
    ),
    (
        "curl -u user:password",
        rf"((?i:\b(?:curl|wget)){_SAME_COMMAND}{_FLAG}(?:-u|--user|--proxy-user|-U)[ \t=]*"
        r"['\"]?[^\s:'\"]*:)[^\s'\"]+",
        _keep_head,
        ("curl", "wget"),
    ),
    (
        "sshpass -p",
        rf"(\bsshpass\b{_SAME_COMMAND}{_FLAG}-p[ \t]*){_ARG}",
        _keep_head,
        ("sshpass",),
    ),
    (
        "redis-cli -a",
        rf"(\bredis-cli\b{_SAME_COMMAND}{_FLAG}(?:-a|--pass)[ \t]+){_ARG}",
        _keep_head,
        ("redis-cli",),
    ),
    (
        "openssl pass:",
        r"(\bpass:)[^\s'\"]+",
        _keep_head,
        ("pass:",),
    ),
    (  # --password X, --api-key X, --auth-token X (the --password=X form is a key=value).
        "secret flag",
        r"(?i)(--?[a-z0-9\-]*(?:password|passwd|passphrase|token|secret|api-key|apikey)"
        rf"[ \t]+)(?:'[^'\n]*'|{_DQ}|[^\s'\"\-][^\s'\"]*)",
        _keep_head,
        ("pass", "token", "secret", "api-key", "apikey"),
    ),
    (  # .netrc: machine h login u password p, one line or one token per line.
        "netrc password",
        r"(?m)((?:\bmachine\b|\bdefault\b)[^\n]*?[ \t]password[ \t]+|^[ \t]*password[ \t]+)"
        r"[^\s'\"]+",
        _keep_head,
        ("password",),
    ),
    (  # .pgpass: hostname:port:database:username:password
        "pgpass line",
        r"(?m)^([ \t]*[^:\s]+:(?:[0-9]+|\*):[^:\s]+:[^:\s]+:)[^\s]+([ \t]*)$",
        lambda m: f"{m.group(1)}{REDACTED}{m.group(2)}",
        (":",),
    ),
    # Last: "token WORD" would otherwise take the word another format needs as its context
    # ("token redis-cli -a PASS", "TOKEN aws_secret_access_key = KEY").
    (
        "bearer or basic credentials",
        r"(?i)\b((?:bearer|basic|token)[ \t]+)([A-Za-z0-9._~+/\-]{8,}=*)",
        _scheme_token,
        ("bearer", "basic", "token"),
    ),
)

PATTERNS: tuple[SecretPattern, ...] = tuple(
    SecretPattern(name, compile_linear(pattern), replace, hints)
    for name, pattern, replace, hints in _TABLE
)
