"""Rendering and installing the systemd unit, sysusers.d and tmpfiles.d files."""

from __future__ import annotations

import io
import os
import stat
import sys
from pathlib import Path
from typing import TypedDict

import pytest
from pydantic import BaseModel, SecretStr

from daemon.cli.service import (
    CREDENTIALS,
    DEFAULT_EXEC_PATH,
    SYSUSERS_CONF,
    TMPFILES_CONF,
    install_service,
    render_unit,
)
from daemon.config import Settings

SYSTEMD_DIR = Path(__file__).resolve().parents[3] / "systemd"


def exec_start(unit: str) -> str:
    (line,) = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
    return line.removeprefix("ExecStart=")


class Dirs(TypedDict):
    unit_dir: Path
    sysusers_dir: Path
    tmpfiles_dir: Path


@pytest.fixture
def dirs(tmp_path: Path) -> Dirs:
    """Stand-ins for /etc/systemd/system, /etc/sysusers.d and /etc/tmpfiles.d."""
    return {
        "unit_dir": tmp_path / "etc/systemd/system",
        "sysusers_dir": tmp_path / "etc/sysusers.d",
        "tmpfiles_dir": tmp_path / "etc/tmpfiles.d",
    }


@pytest.fixture
def executable(tmp_path: Path) -> Path:
    path = tmp_path / "venv/bin/nightshift"
    path.parent.mkdir(parents=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_render_puts_the_executable_and_config_on_the_command_line() -> None:
    unit = render_unit("/srv/ns/bin/nightshift")

    assert exec_start(unit) == "/srv/ns/bin/nightshift run --config /etc/nightshift/config.toml"
    assert "\nUser=nightshift\nGroup=nightshift\n" in unit
    assert "__EXEC__" not in unit and "__USER__" not in unit


def test_render_with_another_user_and_extra_args_escapes_for_systemd() -> None:
    unit = render_unit(
        "/opt/night shift/bin/nightshift", user="ops", extra_args=["--log-level", "50%", "$HOME"]
    )

    assert exec_start(unit) == (
        '"/opt/night shift/bin/nightshift" run --config /etc/nightshift/config.toml '
        "--log-level 50%% $$HOME"
    )
    assert "\nUser=ops\nGroup=ops\n" in unit


@pytest.mark.parametrize("exec_path", ["nightshift", "bin/nightshift", ""])
def test_render_refuses_a_relative_executable(exec_path: str) -> None:
    with pytest.raises(ValueError, match="absolute"):
        render_unit(exec_path)


def test_render_refuses_a_newline_in_an_argument() -> None:
    with pytest.raises(ValueError, match="command line"):
        render_unit("/usr/bin/nightshift", extra_args=["a\nExecStartPre=/bin/evil"])


def test_committed_files_are_what_the_code_renders() -> None:
    assert (SYSTEMD_DIR / "nightshift.service").read_text() == render_unit(DEFAULT_EXEC_PATH)
    assert (SYSTEMD_DIR / "nightshift.sysusers.conf").read_text() == SYSUSERS_CONF
    assert (SYSTEMD_DIR / "nightshift.tmpfiles.conf").read_text() == TMPFILES_CONF


def test_every_credential_is_loaded_and_names_a_secret_setting() -> None:
    unit = render_unit(DEFAULT_EXEC_PATH)
    loaded = [
        line.removeprefix("LoadCredential=")
        for line in unit.splitlines()
        if line.startswith("LoadCredential=")
    ]

    assert loaded == [f"{name}:nightshift.{name}" for name in CREDENTIALS]
    for name in CREDENTIALS:
        model: type[BaseModel] = Settings
        *sections, field = name.split("__")
        for section in sections:
            annotation = model.model_fields[section].annotation
            assert isinstance(annotation, type) and issubclass(annotation, BaseModel), name
            model = annotation
        assert model.model_fields[field].annotation == SecretStr | None, name


def test_sysusers_creates_the_user_with_log_groups() -> None:
    lines = [line for line in SYSUSERS_CONF.splitlines() if line and not line.startswith("#")]

    assert lines == [
        'u nightshift - "nightshift ops agent" /var/lib/nightshift',
        "m nightshift adm",
        "m nightshift systemd-journal",
    ]


def test_dry_run_prints_the_unit_and_writes_nothing(dirs: Dirs, executable: Path) -> None:
    out = io.StringIO()

    code = install_service(exec_path=str(executable), dry_run=True, out=out, **dirs)

    assert code == 0
    assert out.getvalue() == render_unit(str(executable))
    assert not any(dirs[key].exists() for key in ("unit_dir", "sysusers_dir", "tmpfiles_dir"))


def test_install_writes_the_three_files_and_prints_next_steps(dirs: Dirs, executable: Path) -> None:
    out = io.StringIO()

    code = install_service(exec_path=str(executable), out=out, **dirs)

    assert code == 0
    unit = dirs["unit_dir"] / "nightshift.service"
    sysusers = dirs["sysusers_dir"] / "nightshift.conf"
    tmpfiles = dirs["tmpfiles_dir"] / "nightshift.conf"
    assert unit.read_text() == render_unit(str(executable))
    assert sysusers.read_text() == SYSUSERS_CONF
    assert tmpfiles.read_text() == TMPFILES_CONF
    for path in (unit, sysusers, tmpfiles):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        assert f"wrote {path}" in out.getvalue()
    text = out.getvalue()
    for step in (
        f"systemd-sysusers {sysusers}",
        f"systemd-tmpfiles --create {tmpfiles}",
        "systemctl daemon-reload",
        "systemctl enable --now nightshift",
        "/etc/nightshift/config.toml",
        "/etc/credstore/nightshift.llm__api_key",
    ):
        assert step in text
    assert sorted(p.name for p in dirs["unit_dir"].iterdir()) == ["nightshift.service"]


def test_reinstall_reports_unchanged_files(dirs: Dirs, executable: Path) -> None:
    install_service(exec_path=str(executable), out=io.StringIO(), **dirs)
    out = io.StringIO()

    assert install_service(exec_path=str(executable), out=out, **dirs) == 0

    assert f"unchanged {dirs['unit_dir'] / 'nightshift.service'}" in out.getvalue()


def test_unwritable_directory_fails_clearly_and_writes_nothing(
    dirs: Dirs, executable: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tests may run as root, for whom every directory is writable: simulate a normal user.
    blocked = dirs["sysusers_dir"].parent
    blocked.mkdir(parents=True)
    real_access = os.access
    monkeypatch.setattr(
        "daemon.cli.service.os.access",
        lambda p, mode: Path(p) != blocked and real_access(p, mode),
    )
    monkeypatch.setattr("daemon.cli.service.os.geteuid", lambda: 1000)
    out = io.StringIO()

    code = install_service(exec_path=str(executable), out=out, **dirs)

    assert code == 77
    assert "cannot write to" in out.getvalue()
    assert "run as root" in out.getvalue()
    assert not (dirs["unit_dir"] / "nightshift.service").exists()


def test_a_file_in_the_way_of_a_directory_is_not_writable(dirs: Dirs, executable: Path) -> None:
    dirs["unit_dir"].parent.mkdir(parents=True)
    dirs["unit_dir"].write_text("not a directory")
    out = io.StringIO()

    assert install_service(exec_path=str(executable), out=out, **dirs) == 77
    assert str(dirs["unit_dir"]) in out.getvalue()


def test_default_executable_is_the_script_beside_the_interpreter(
    executable: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", str(executable.parent / "python"))
    out = io.StringIO()

    assert install_service(dry_run=True, out=out) == 0

    assert exec_start(out.getvalue()).startswith(f"{executable} run ")


def test_default_executable_falls_back_to_path(
    tmp_path: Path, executable: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "elsewhere/python"))
    monkeypatch.setenv("PATH", str(executable.parent))
    out = io.StringIO()

    assert install_service(dry_run=True, out=out) == 0

    assert exec_start(out.getvalue()).startswith(f"{executable} run ")


def test_missing_executable_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    out = io.StringIO()

    assert install_service(dry_run=True, out=out) == 1
    assert "cannot find the nightshift executable" in out.getvalue()


def test_install_warns_about_paths_the_service_cannot_reach(dirs: Dirs, executable: Path) -> None:
    out = io.StringIO()

    install_service(exec_path=str(executable), out=out, **dirs)

    # pytest's tmp_path lives under /tmp, which PrivateTmp=yes hides from the service.
    assert "warning:" in out.getvalue()
    assert "hidden by PrivateTmp=yes" in out.getvalue()


def test_install_warns_when_the_scripts_interpreter_is_private(dirs: Dirs, tmp_path: Path) -> None:
    # The trap of a venv built on a pyenv Python under /root (mode 0700).
    private = tmp_path / "root/.pyenv/bin"
    private.mkdir(parents=True)
    interpreter = private / "python3.11"
    interpreter.write_text("")
    interpreter.chmod(0o755)
    (tmp_path / "root").chmod(0o700)
    script = tmp_path / "venv/bin/nightshift"
    script.parent.mkdir(parents=True)
    script.write_text(f"#!{interpreter}\n")
    script.chmod(0o755)
    out = io.StringIO()

    install_service(exec_path=str(script), out=out, **dirs)

    assert f"the nightshift user cannot run {interpreter}" in out.getvalue()
