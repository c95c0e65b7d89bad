"""Secrets never reach the audit log or the model: what redact() masks and what it leaves."""

from __future__ import annotations

import pytest

from daemon.redact import REDACTED, is_secret_key, redact, redact_data

SECRETS = {
    "bearer": ("curl -H 'X: Bearer abcdef0123456789xyz' https://api", "abcdef0123456789xyz"),
    "authorization": ("Authorization: Basic dXNlcjpodW50ZXIy", "dXNlcjpodW50ZXIy"),
    "openai": ("key=sk-proj-AbCdEf0123456789xyz used", "sk-proj-AbCdEf0123456789xyz"),
    "moonshot": ("using sk-9f8e7d6c5b4a3210fedcba in header", "sk-9f8e7d6c5b4a3210fedcba"),
    "slack bot": ("SLACK xoxb-1234567890-0987654321-AbCdEfGh", "xoxb-1234567890-0987654321"),
    "slack user": ("token xoxp-1111-2222-3333-abcdef", "xoxp-1111-2222-3333-abcdef"),
    "slack app": ("app xapp-1-A0123456789-1234-abcdef", "xapp-1-A0123456789-1234-abcdef"),
    "telegram": (
        "GET https://api.telegram.org/bot123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1/getMe",
        "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1",
    ),
    "aws key id": ("aws AKIAIOSFODNN7EXAMPLE region", "AKIAIOSFODNN7EXAMPLE"),
    "aws secret": (
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    ),
    "password=": ("login user=bob password=hunter2 ok", "hunter2"),
    "token:": ("token: 7a8b9c0d1e2f", "7a8b9c0d1e2f"),
    "json": ('{"user": "bob", "password": "hunter2"}', "hunter2"),
    "env var": ("DB_PASS=correct-horse", "correct-horse"),
    "cli flag": ("mysql --password s3cr3t -u root", "s3cr3t"),
    "url": ("postgres://admin:pa55@word@db.internal:5432/app", "pa55"),
    "github": ("ghp_abcdefghijklmnopqrstuvwxyz0123456789", "ghp_abcdefghijklmnopqrstuvwxyz"),
    "cookie": ("Cookie: session=abc123; csrftoken=def456", "def456"),
    "jwt": (
        "id eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0",
        "dozjgNryP4J3jVmNHl0w5N_XgL0",
    ),
}


@pytest.mark.parametrize("text,secret", SECRETS.values(), ids=SECRETS.keys())
def test_secret_is_masked(text: str, secret: str) -> None:
    out = redact(text)
    assert secret not in out
    assert REDACTED in out


def test_private_key_block_is_removed_whole() -> None:
    text = (
        "before\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\nQUJD\n"
        "-----END OPENSSH PRIVATE KEY-----\nafter"
    )
    assert redact(text) == f"before\n{REDACTED}\nafter"


def test_private_key_cut_off_by_a_truncated_read_is_still_removed() -> None:
    text = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA1234"
    assert redact(text) == REDACTED


def test_context_around_secrets_stays_readable() -> None:
    assert redact("login user=bob password=hunter2 ok") == f"login user=bob password={REDACTED} ok"
    assert redact("postgres://admin:pw@db:5432/app") == f"postgres://admin:{REDACTED}@db:5432/app"
    assert redact('{"password": "x1"}') == f'{{"password": "{REDACTED}"}}'


@pytest.mark.parametrize(
    "text",
    [
        "max_tokens=8192 input_tokens: 12",
        "author: Jane Doe",
        "passwd: files systemd",  # nsswitch.conf
        "auth: ok",
        "the bearer of bad news",
        "12:34:56 backup finished in 3s",
        "GET http://localhost:8080/health 200",
        "Accepted publickey for bob from 10.0.0.1 port 22",
        "",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact(text) == text


@pytest.mark.parametrize("text,secret", SECRETS.values(), ids=SECRETS.keys())
def test_redacting_twice_changes_nothing(text: str, secret: str) -> None:
    once = redact(text)
    assert redact(once) == once


def test_operator_patterns_are_applied() -> None:
    out = redact("customer ACME-4242-XYZ called", [r"ACME-\d{4}-[A-Z]{3}"])
    assert out == f"customer {REDACTED} called"


def test_redact_data_masks_secret_keys_wholesale_and_recurses() -> None:
    data = {
        "api_key": "abc",
        "headers": {"Authorization": "Basic Zm9v", "X-Request-Id": "42", "Cookie": "a=b"},
        "items": [{"client_secret": {"nested": "x"}}, "password=hunter2", 7],
        "pair": ("token=zzz", None),
        "max_tokens": 100,
        "token": None,
    }
    assert redact_data(data) == {
        "api_key": REDACTED,
        "headers": {"Authorization": REDACTED, "X-Request-Id": "42", "Cookie": REDACTED},
        "items": [{"client_secret": REDACTED}, f"password={REDACTED}", 7],
        "pair": (f"token={REDACTED}", None),
        "max_tokens": 100,
        "token": None,  # "not set" stays visible
    }


def test_redact_data_leaves_the_input_untouched() -> None:
    data = {"password": "hunter2", "list": ["token=abc"]}
    redact_data(data)
    assert data == {"password": "hunter2", "list": ["token=abc"]}


@pytest.mark.parametrize(
    "key,secret",
    [
        ("api_key", True),
        ("X-Api-Key", True),
        ("access_token", True),
        ("PASSWORD", True),
        ("db_pass", True),
        ("set-cookie", True),
        ("max_tokens", False),
        ("author", False),
        ("token_count", False),
        ("keys", False),
    ],
)
def test_secret_key_names(key: str, secret: bool) -> None:
    assert is_secret_key(key) is secret
