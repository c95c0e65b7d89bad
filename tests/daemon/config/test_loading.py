"""Config: precedence, validation messages naming the key, masking, exit code 78."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from daemon.config import load_settings, masked_dump
from daemon.core.errors import ConfigError
from tests.support import ROOT


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    full_env = {k: v for k, v in os.environ.items() if not k.startswith("NIGHTSHIFT_")}
    full_env.pop("CREDENTIALS_DIRECTORY", None)
    full_env.update(env or {}, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "daemon.cli.main", *args],
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

    def keys(data: dict[str, Any], prefix: str = "") -> list[str]:
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
        # integers too long for Python to convert: the setting is named, wherever it sits
        ("[agent]\nmax_steps = " + "9" * 4301, "agent.max_steps: number out of range"),
        ("agent = {budget = {daily_tokens = " + "9" * 4400 + "}}", "agent.budget.daily_tokens"),
        (
            '[[scheduler.tasks]]\nname = "a"\ninterval_seconds = -' + "9" * 5000,
            "scheduler.tasks.0.interval_seconds: number out of range",
        ),  # fmt: skip
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


# -- every bad config exits 78 naming the key (issue 9, part 7) ----------------------------------

RULE = '[[rules]]\nname = "HotCpu"\nmetric = "cpu_percent"\nop = ">"\nthreshold = 90\n'
TASK = '[[scheduler.tasks]]\nname = "report"\nprompt = "hi"\ninterval_seconds = 60\n'


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        # nesting past the TOML parser's recursion, and deep but parseable nesting
        ("a = " + "[" * 10_000 + "]" * 10_000, "line 1 (a): arrays or tables nested more than"),
        ("a = " + "{a=" * 10_000 + "1" + "}" * 10_000, "line 1 (a): arrays or tables nested"),
        ("[llm]\nfallback_models = " + "[" * 40 + "]" * 40, "llm.fallback_models.0.0."),
        # huge integers: range errors naming the key, on one short line
        (f"[api]\ntcp_port = {10**400}", "api.tcp_port: Input should be less than or equal"),
        ("[agent]\nrepeated_call_limit = 9223372036854775808", "agent.repeated_call_limit: "),
        ("[api]\ntcp_port = " + "9" * 5000, "api.tcp_port: number out of range"),
        ("[state]\nbusy_timeout_ms = 99999999999999", "state.busy_timeout_ms: Value error"),
        (TASK + "retry_backoff_seconds = 1e300", "scheduler.tasks.0 (report).retry_backoff_sec"),
        ("[scheduler]\nkeep_runs_days = 1e12", "scheduler.keep_runs_days: Value error"),
        ("[policy]\nmax_read_bytes = 4611686018427387904", "policy.max_read_bytes: Input should"),
        ("[llm]\nmax_tokens_instant = 9999999999", "llm.max_tokens_instant: Input should be"),
        # inf and nan, which are valid TOML floats
        ("[llm]\ntimeout_seconds = inf", "llm.timeout_seconds: Input should be a finite number"),
        ("[agent]\ntool_timeout_seconds = inf", "agent.tool_timeout_seconds: Input should be a"),
        (RULE.replace("90", "nan"), "rules.0 (HotCpu).threshold: Input should be a finite"),
        (RULE + "clear_threshold = -inf", "rules.0 (HotCpu).clear_threshold: Input should be"),
        (
            '[[incidents.remediation.auto]]\nmatchers = ["alertname=X"]\ntool = "restart_service"'
            "\narguments = { wait = nan }",
            "incidents.remediation.auto.0.arguments.wait",
        ),
        # templates that would allocate gigabytes, or reach into objects
        (RULE + 'summary = "{value:>999999999}"', "rules.0 (HotCpu).summary: Value error, forma"),
        (RULE + 'description = "{x:099999999d}"', "rules.0 (HotCpu).description: Value error"),
        (RULE + 'summary = "{value:.999999999f}"', "precision at most 50"),
        (RULE + 'summary = "{value:>{mount}}"', "takes a value from a field"),
        (RULE + 'summary = "{value.__class__}"', "attributes and positional fields"),
        # llm.base_url
        ('[llm]\nbase_url = "ftp://example.org/v1"', "llm.base_url: Value error, 'ftp://"),
        ('[llm]\nbase_url = "https://"', "must be an http:// or https:// URL with a host"),
        ('[llm]\nbase_url = "http://api .example.org/v1"', "contains spaces or control"),
        ('[llm]\nbase_url = "api.moonshot.ai/v1"', "llm.base_url: Value error"),
        # a NUL byte in any path (or any text)
        ('[state]\ndatabase = "db\\u0000.sqlite"', "state.database: Value error, contains a NUL"),
        ('[api]\nsocket = "s\\u0000.sock"', "api.socket: Value error, contains a NUL"),
        ('[policy]\nread_paths = ["/var/log\\u0000"]', "policy.read_paths: Value error, contains"),
        ('[incidents]\nrunbooks_dir = "/etc\\u0000"', "incidents.runbooks_dir: Value error"),
        ('default_route = ["console:\\u0000"]', "default_route"),
        # a socket or database that would be the state directory itself
        ('[api]\nsocket = ""', "api.socket: Value error, '' does not name a file"),
        ('[state]\ndatabase = "sub/"', "state.database: Value error, 'sub/' does not name a"),
        # listening everywhere must be said out loud
        ('[api]\ntcp_host = ""\ntcp_port = 9464', "api.tcp_host: Value error, '' is not a host"),
        # notifications to a channel that is not enabled, or not a channel
        ('default_route = ["slack:C0OPS"]', "default_route: channel 'slack' is not enabled"),
        ('default_route = ["pager"]', "default_route: channel 'pager' is not a channel"),
        (
            "[channels.console]\nenabled = false\n[channels.telegram]\nenabled = true\n"
            'bot_token = "1:x"\n[scheduler.digest]\ndeliver_to = "telegram"',
            "default_route: channel 'console' is not enabled (use one of telegram",
        ),
    ],
)
def test_every_bad_config_is_refused_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], toml: str, expected: str
) -> None:
    from daemon.cli.main import main

    path = tmp_path / "bad.toml"
    path.write_text(toml + "\n")
    code = main(["check-config", str(path), "--state-dir", str(tmp_path / "state")])
    err = capsys.readouterr().err
    assert code == 78
    assert err.startswith(f"nightshift: configuration error: {path}: ")
    assert expected in err
    assert all(len(line) < 400 for line in err.splitlines())  # one short line per problem


def test_a_secrets_dir_that_is_a_file_is_named(tmp_path: Path) -> None:
    secret = tmp_path / "api_key"
    secret.write_text("sk-not-a-directory")
    path = tmp_path / "c.toml"
    path.write_text(f'[state]\nsecrets_dir = "{secret}"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert f"state.secrets_dir: {secret} is not a directory" in str(info.value)
    assert "sk-not-a-directory" not in str(info.value)


def test_a_credentials_directory_that_is_a_file_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "creds"
    secret.write_text("")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(secret))
    with pytest.raises(ConfigError) as info:
        load_settings(None)
    assert f"$CREDENTIALS_DIRECTORY: {secret} is not a directory" in str(info.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any directory")
def test_an_unreadable_secrets_dir_is_named(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir(mode=0o000)
    path = tmp_path / "c.toml"
    path.write_text(f'[state]\nsecrets_dir = "{secrets}"\n')
    try:
        with pytest.raises(ConfigError) as info:
            load_settings(path)
    finally:
        secrets.chmod(0o700)
    assert f"state.secrets_dir: {secrets} is not readable" in str(info.value)


def test_a_socket_path_too_long_for_af_unix_is_named(tmp_path: Path) -> None:
    state = tmp_path / ("s" * 100)
    path = tmp_path / "c.toml"
    path.write_text("")
    with pytest.raises(ConfigError) as info:
        load_settings(path, state_dir=state)
    assert "api.socket: the socket path" in str(info.value)
    assert "more than the 107 a unix socket allows" in str(info.value)
    path.write_text('[api]\nsocket = "/tmp/ns.sock"\n')  # an absolute, short one is fine
    assert load_settings(path, state_dir=state).socket_path == Path("/tmp/ns.sock")


def test_listening_on_every_interface_is_allowed_when_explicit(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[api]\ntcp_host = "0.0.0.0"\ntcp_port = 9464\n')
    assert load_settings(path).api.tcp_host == "0.0.0.0"


def test_deep_nesting_exits_78_in_a_real_process(tmp_path: Path) -> None:
    path = tmp_path / "deep.toml"
    path.write_text("[llm]\nfallback_models = " + "[" * 10_000 + "]" * 10_000 + "\n")
    result = run_cli("check-config", str(path))
    assert result.returncode == 78
    assert "line 2 (fallback_models): arrays or tables nested more than" in result.stderr
    assert "Traceback" not in result.stderr
    result = run_cli("run", "--config", str(path), "--state-dir", str(tmp_path / "s"))
    assert result.returncode == 78 and "nested more than" in result.stderr


def test_a_value_of_several_allowed_types_is_one_problem_on_one_line(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[[incidents.remediation.auto]]\nmatchers = ["alertname=X"]\ntool = "restart_service"\n'
        "arguments = { wait = nan }\n"
        '[[watchers.http]]\nname = "site"\nurl = "http://127.0.0.1/"\nexpect_status = [inf]\n'
    )
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(info.value).splitlines() == [
        f"{path}: 2 problem(s):",
        "  watchers.http.0 (site).expect_status.0: Input should be a finite number (inf and nan "
        "are not allowed; give a number) (got inf)",
        "  incidents.remediation.auto.0.arguments.wait: Input should be a finite number (inf and "
        "nan are not allowed; give a number) (got nan)",
    ]


def test_deep_json_in_an_environment_variable_is_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from daemon.cli.main import main

    monkeypatch.setenv("NIGHTSHIFT_LLM__FALLBACK_MODELS", "[" * 20_000 + "]" * 20_000)
    assert main(["check-config"]) == 78
    err = capsys.readouterr().err
    assert "$NIGHTSHIFT_LLM__FALLBACK_MODELS: JSON nested more than 32 levels deep" in err


def test_check_config_prints_toml_that_is_accepted_again(tmp_path: Path) -> None:
    import tomllib

    result = run_cli("check-config", "--config", str(ROOT / "config.example.toml"))
    assert result.returncode == 0, result.stderr
    effective = tomllib.loads(result.stdout)  # valid TOML, not TOML-like text
    assert effective["llm"]["model"] == "kimi-k2.6"
    again = tmp_path / "effective.toml"
    again.write_text(result.stdout)
    second = run_cli("check-config", str(again))
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines()[1:] == result.stdout.splitlines()[1:]


def test_an_error_from_an_environment_variable_names_it() -> None:
    result = run_cli("check-config", env={"NIGHTSHIFT_LLM__BASE_URL": "ftp://nowhere"})
    assert result.returncode == 78
    assert "llm.base_url" in result.stderr and "$NIGHTSHIFT_LLM__BASE_URL" in result.stderr


def test_an_unknown_nightshift_variable_is_warned_about_not_ignored() -> None:
    env = {"NIGHTSHIFT_LMM__MODEL": "kimi-k2.6", "NIGHTSHIFT_CHANNELS__SLACK__USERS__U1": "admin"}
    result = run_cli("check-config", env=env)
    assert result.returncode == 0, result.stderr
    assert "$NIGHTSHIFT_LMM__MODEL names no setting" in result.stderr
    assert "USERS__U1" not in result.stderr  # a key of a free-form table is a setting
    typo = run_cli("check-config", env={"NIGHTSHIFT_LLM__MODLE": "kimi-k2.6"})
    assert typo.returncode == 78  # in a known section: an error naming the variable
    assert "llm.modle: unknown key" in typo.stderr and "$NIGHTSHIFT_LLM__MODLE" in typo.stderr
