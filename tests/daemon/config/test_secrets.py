"""Configured secrets: `check-config` masks every secret-shaped value and warns about secrets in
plain TOML; every configured secret is masked verbatim once settings load."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.config import load_settings
from daemon.core.errors import ConfigError
from daemon.core.redact import REDACTED, redact, use_secrets
from tests.daemon.config.test_loading import run_cli

SECRETS = {
    "url password": "UrlPa55word",
    "authorization header": "abc.def.ghi-jkl",
    "api key header": "k3y-in-header-123",
    "mysql -p argument": "CmdS3cret",
    "redis-cli -a argument": "R3disPw",
    "curl -u in a task command": "TaskCurlPw",
    "restart command token": "tok-in-restart-arg",
    "llm api key": "plain-toml-llm-key",
    "webhook token": "opaque-webhook-t0ken",
}

CONFIG = """
[llm]
api_key = "plain-toml-llm-key"

[api]
webhook_token = "opaque-webhook-t0ken"

[[watchers.http]]
name = "api"
url = "https://monitor:UrlPa55word@api.internal/health"
headers = { Authorization = "Bearer abc.def.ghi-jkl", X-Api-Key = "k3y-in-header-123" }

[[watchers.commands]]
name = "db"
command = ["mysql", "-u", "mon", "-pCmdS3cret!", "-e", "select 1"]

[[watchers.commands]]
name = "cache"
command = "redis-cli -a R3disPw ping"

[incidents.remediation]
restart_command = ["/usr/local/bin/restart", "--token", "tok-in-restart-arg", "{service}"]

[scheduler]
enabled = true

[[scheduler.tasks]]
name = "ping"
interval_seconds = 3600
command = ["curl", "-fsS", "-u", "ops:TaskCurlPw", "https://hc.example/ping"]
"""


@pytest.fixture(autouse=True)
def no_registered_secrets() -> Iterator[None]:
    yield
    use_secrets([])


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG)
    return path


def test_check_config_masks_every_secret_shaped_value(config: Path) -> None:
    result = run_cli("check-config", str(config))
    assert result.returncode == 0, result.stderr
    for what, secret in SECRETS.items():
        assert secret not in result.stdout, f"{what} shown by check-config"
        assert secret not in result.stderr, f"{what} in check-config's warnings"
    assert "https://monitor:" in result.stdout  # the user stays, the password goes
    assert '"-u",\n' in result.stdout and '"mon",' in result.stdout  # ordinary arguments stay


def test_check_config_warns_about_secrets_in_plain_toml(config: Path) -> None:
    result = run_cli("check-config", str(config))
    assert result.returncode == 0  # a warning, not an error
    warnings = [line for line in result.stderr.splitlines() if "# warning:" in line]
    joined = "\n".join(warnings)
    assert "llm.api_key is a secret in plain TOML" in joined
    assert "LoadCredential=llm__api_key:" in joined
    assert "$CREDENTIALS_DIRECTORY/llm__api_key" in joined
    assert "NIGHTSHIFT_LLM__API_KEY" in joined
    assert "api.webhook_token is a secret in plain TOML" in joined
    for key in (
        "watchers.http.0 (api).url",
        "watchers.http.0 (api).headers.Authorization",
        "watchers.http.0 (api).headers.X-Api-Key",
        "watchers.commands.0 (db).command",
        "watchers.commands.1 (cache).command",
        "incidents.remediation.restart_command",
        "scheduler.tasks.0 (ping).command",
    ):
        assert f"{key} holds a secret in plain TOML" in joined


def test_no_warning_when_secrets_come_from_credentials_or_env(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[llm]\nmodel = 'kimi-k2.6'\n")
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "api__webhook_token").write_text("from-a-credential-file")
    result = run_cli(
        "check-config",
        str(path),
        env={
            "NIGHTSHIFT_LLM__API_KEY": "from-the-env-1234",
            "CREDENTIALS_DIRECTORY": str(credentials),
        },
    )
    assert result.returncode == 0, result.stderr
    assert "# warning:" not in result.stderr
    assert "from-the-env-1234" not in result.stdout
    assert "from-a-credential-file" not in result.stdout


def test_configured_secrets_are_masked_verbatim_after_load(config: Path) -> None:
    load_settings(config, environ_secrets=False)
    text = "model echoed plain-toml-llm-key and opaque-webhook-t0ken and k3y-in-header-123"
    assert redact(text) == f"model echoed {REDACTED} and {REDACTED} and {REDACTED}"


def test_a_redaction_pattern_re2_cannot_run_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[policy]\nredact_patterns = ["(?<=id=)\\\\d+"]\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ_secrets=False)
    assert "policy.redact_patterns" in str(info.value)
    assert "RE2" in str(info.value)
