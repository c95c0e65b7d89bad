"""Config: precedence, validation messages naming the key, masking, exit code 78."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.config import load_settings, masked_dump
from daemon.errors import ConfigError
from tests.support import ROOT


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    full_env = {k: v for k, v in os.environ.items() if not k.startswith("NIGHTSHIFT_")}
    full_env.pop("CREDENTIALS_DIRECTORY", None)
    full_env.update(env or {}, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "daemon.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
    )


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("NIGHTSHIFT_") or key in ("CREDENTIALS_DIRECTORY", "STATE_DIRECTORY"):
            monkeypatch.delenv(key)


def test_example_config_passes_check_config() -> None:
    result = run_cli("check-config", str(ROOT / "config.example.toml"))
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout and "[llm]" in result.stdout


def test_example_config_documents_every_option() -> None:
    """Every key of every section appears in config.example.toml (commented or not)."""
    text = (ROOT / "config.example.toml").read_text()
    defaults = masked_dump(load_settings(None))

    def keys(data: dict, prefix: str = "") -> list[str]:
        out = []
        for key, value in data.items():
            if isinstance(value, dict):
                out += keys(value, f"{prefix}{key}.")
            else:
                out.append(key)
        return out

    missing = [
        key
        for key in keys(defaults)
        if f"{key} =" not in text and not re.search(rf"\[\[(\w+\.)*{key}\]\]", text)
    ]
    assert missing == []


def test_precedence_flags_over_env_over_secrets_over_toml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        '[llm]\nmodel = "from-toml"\napi_key = "toml-key"\nbase_url = "http://toml"\n'
        "[agent]\nmax_steps = 3\n"
    )
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "llm__api_key").write_text("cred-key")
    (creds / "llm__model").write_text("from-cred")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    monkeypatch.setenv("NIGHTSHIFT_LLM__MODEL", "from-env")
    settings = load_settings(config, overrides={"agent": {"max_steps": 7}})
    assert settings.llm.model == "from-env"  # env beats credentials and TOML
    assert settings.llm.api_key is not None
    assert settings.llm.api_key.get_secret_value() == "cred-key"  # credentials beat TOML
    assert settings.llm.base_url == "http://toml"  # TOML beats defaults
    assert settings.agent.max_steps == 7  # flags beat everything


def test_state_dir_flag_and_derived_paths(tmp_path: Path) -> None:
    settings = load_settings(None, state_dir=tmp_path / "st")
    assert settings.database_path == tmp_path / "st" / "nightshift.db"
    assert settings.socket_path == tmp_path / "st" / "nightshift.sock"


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('[llm]\nmodle = "x"\n', "llm.modle: unknown key"),
        ('[agent]\nmax_steps = "many"\n', "agent.max_steps: Input should be a valid integer"),
        ('[agent.budget]\ntimezone = "Mars/Base"\n', "agent.budget.timezone"),
        ('[[rules]]\nname = "x"\nmetric = "bogus"\nthreshold = 1\n', "rules.0 (x).metric"),
        ('[policy]\nredact_patterns = ["("]\n', "invalid regular expression"),
        ("[llm\n", "invalid TOML"),
        ("[channels.slack]\nenabled = true\n", "channels.slack: Value error, Slack is enabled"),
        ('[channels.telegram.users]\n"42" = "boss"\n', "channels.telegram.users.42"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, toml: str, expected: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert expected in str(info.value)
    assert str(path) in str(info.value)


def test_secret_values_never_appear_in_errors_or_dumps(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[llm]\napi_key = "sk-very-secret"\n')
    assert "sk-very-secret" not in str(masked_dump(load_settings(path)))
    path.write_text('[llm]\napi_key = ["sk-very-secret"]\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert "sk-very-secret" not in str(info.value)


def test_check_config_exit_78_and_masks_secrets(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[agent]\nmax_steps = 0\n")
    result = run_cli("check-config", str(bad))
    assert result.returncode == 78
    assert "agent.max_steps" in result.stderr
    good = tmp_path / "good.toml"
    good.write_text("[llm]\n")
    result = run_cli("check-config", str(good), env={"NIGHTSHIFT_LLM__API_KEY": "sk-hidden"})
    assert result.returncode == 0
    assert "sk-hidden" not in result.stdout and "**********" in result.stdout


def test_run_with_bad_config_exits_78(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[nope]\n")
    result = run_cli("run", "--config", str(bad), "--state-dir", str(tmp_path / "s"))
    assert result.returncode == 78
    assert "nope: unknown key" in result.stderr


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    result = run_cli("run", "--config", str(tmp_path / "absent.toml"))
    assert result.returncode == 78
    assert "config file not found" in result.stderr


def test_unusable_state_dir_exits_78(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run_cli("run", "--state-dir", str(blocker / "state"))
    assert result.returncode == 78
    assert "state directory" in result.stderr


def test_an_invalid_rule_is_named_in_the_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        '[[rules]]\nname = "DiskFull"\nmetric = "disk_percent"\nop = ">"\nthreshold = 90\n\n'
        '[[rules]]\nname = "HotCpu"\nmetric = "cpu_temp"\nop = ">"\nthreshold = 80\n'
    )
    result = run_cli("check-config", str(path))
    assert result.returncode == 78
    assert "rules.1 (HotCpu).metric: Value error, unknown metric 'cpu_temp'" in result.stderr


def test_patterns_the_linear_time_engine_cannot_run_exit_78_naming_the_key(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        '[[rules]]\nname = "DiskFull"\nmetric = "disk_percent"\nop = ">"\nthreshold = 90\n\n'
        '[[rules]]\nname = "HotCpu"\nmetric = "log_line"\nmatch = \'error(?=: disk)\'\n\n'
        "[[routes]]\nmatch_re = { host = '(web)-\\1' }\nto = []\n"
    )
    state = str(tmp_path / "state")
    for args in (["check-config", str(path)], ["run", "--config", str(path), "--state-dir", state]):
        result = run_cli(*args)
        assert result.returncode == 78
        assert (
            "rules.1 (HotCpu).match: Value error, invalid regular expression 'error(?=: disk)': "
            "lookahead `(?=…)` is not supported by the linear-time engine (RE2)" in result.stderr
        )
        assert (
            "routes.0.match_re: Value error, host: invalid regular expression '(web)-\\\\1': "
            "the backreference `\\1` is not supported" in result.stderr
        )


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ('cron = "61 9 * * *"', "minute field '61' is out of range 0-59"),
        ('cron = "0 9 * * *"\ntimezone = "Mars/Base"', "unknown time zone 'Mars/Base'"),
        ("interval_seconds = 0", "interval"),
        ('cron = "0 9 * * *"\ndeliver_to = "pager"', "unknown delivery target 'pager'"),
        ('cron = "0 9 * * *"\ndeliver_to = "slack:C1"', "channel 'slack' is not enabled"),
    ],
)
def test_bad_tasks_are_refused_by_check_config(tmp_path: Path, task: str, message: str) -> None:
    path = tmp_path / "tasks.toml"
    path.write_text(f'[[scheduler.tasks]]\nname = "report"\nprompt = "hi"\n{task}\n')
    result = run_cli("check-config", str(path))
    assert result.returncode == 78
    assert message in result.stderr and "scheduler.tasks" in result.stderr
