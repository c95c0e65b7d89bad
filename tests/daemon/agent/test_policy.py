"""The tool policy: which files the agent may read and how risky a command is."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from daemon.agent.policy import (
    Decision,
    check_read_path,
    classify_command,
    decide,
    is_auto_approved,
)
from daemon.agent.settings import PolicySettings
from daemon.agent.tools.base import Tier
from daemon.core.errors import PolicyDeniedError


@pytest.fixture
def allowed(tmp_path: Path) -> Path:
    root = tmp_path / "allowed"
    (root / "private").mkdir(parents=True)
    (root / "app.log").write_text("hello\n")
    (root / "private" / "key.pem").write_text("secret\n")
    (tmp_path / "outside.txt").write_text("not yours\n")
    return root


@pytest.fixture
def paths(allowed: Path) -> PolicySettings:
    return PolicySettings(read_paths=[str(allowed)], deny_paths=[str(allowed / "private")])


# -- check_read_path ----------------------------------------------------------------------------


def test_a_file_under_read_paths_is_allowed(allowed: Path, paths: PolicySettings) -> None:
    assert check_read_path(str(allowed / "app.log"), paths) == allowed / "app.log"


def test_a_file_outside_read_paths_is_denied_naming_the_setting(
    allowed: Path, paths: PolicySettings
) -> None:
    outside = allowed.parent / "outside.txt"
    with pytest.raises(PolicyDeniedError) as err:
        check_read_path(str(outside), paths)
    assert str(outside) in str(err.value)
    assert "[policy] read_paths" in str(err.value)


def test_a_symlink_escaping_the_allowed_dir_is_denied(allowed: Path, paths: PolicySettings) -> None:
    link = allowed / "innocent.log"
    link.symlink_to(allowed.parent / "outside.txt")
    with pytest.raises(PolicyDeniedError, match="resolves to"):
        check_read_path(str(link), paths)


def test_a_symlinked_directory_escaping_is_denied(allowed: Path, paths: PolicySettings) -> None:
    (allowed / "up").symlink_to(allowed.parent)
    with pytest.raises(PolicyDeniedError):
        check_read_path(str(allowed / "up" / "outside.txt"), paths)


def test_dot_dot_cannot_climb_out(allowed: Path, paths: PolicySettings) -> None:
    with pytest.raises(PolicyDeniedError):
        check_read_path(f"{allowed}/../outside.txt", paths)


def test_a_sibling_with_the_same_prefix_is_not_inside(allowed: Path) -> None:
    sibling = allowed.parent / "allowed-not"
    sibling.mkdir()
    (sibling / "x").write_text("x")
    with pytest.raises(PolicyDeniedError):
        check_read_path(str(sibling / "x"), PolicySettings(read_paths=[str(allowed)]))


def test_deny_paths_win_over_read_paths(allowed: Path, paths: PolicySettings) -> None:
    with pytest.raises(PolicyDeniedError) as err:
        check_read_path(str(allowed / "private" / "key.pem"), paths)
    assert "[policy] deny_paths" in str(err.value)


def test_a_symlink_into_a_denied_dir_is_denied(allowed: Path, paths: PolicySettings) -> None:
    (allowed / "shortcut").symlink_to(allowed / "private" / "key.pem")
    with pytest.raises(PolicyDeniedError, match="deny_paths"):
        check_read_path(str(allowed / "shortcut"), paths)


def test_relative_paths_are_refused(paths: PolicySettings) -> None:
    with pytest.raises(PolicyDeniedError, match="not absolute"):
        check_read_path("app.log", paths)


def test_a_symlinked_read_root_still_works(tmp_path: Path, allowed: Path) -> None:
    alias = tmp_path / "alias"
    alias.symlink_to(allowed)
    policy = PolicySettings(read_paths=[str(alias)], deny_paths=[])
    assert check_read_path(str(alias / "app.log"), policy) == allowed / "app.log"


def test_default_policy_denies_shadow() -> None:
    with pytest.raises(PolicyDeniedError, match="deny_paths"):
        check_read_path("/etc/shadow", PolicySettings())


def test_proc_root_links_cannot_bypass_deny_paths() -> None:
    if not os.access(f"/proc/{os.getpid()}/root", os.R_OK):
        pytest.skip("cannot resolve /proc/<pid>/root here")
    with pytest.raises(PolicyDeniedError):
        check_read_path(f"/proc/{os.getpid()}/root/etc/shadow", PolicySettings())


# -- classify_command ---------------------------------------------------------------------------

DEFAULTS = PolicySettings()


@pytest.mark.parametrize(
    "command,tier",
    [
        ("df -h", Tier.READ_ONLY),
        ("uptime", Tier.READ_ONLY),
        ("systemctl status nginx", Tier.READ_ONLY),
        ("journalctl -u nginx --since today", Tier.READ_ONLY),
        ("top -b -n 1", Tier.READ_ONLY),
        ("top", Tier.PRIVILEGED),  # only "top -b -n 1" is listed
        ("systemctl restart x", Tier.PRIVILEGED),
        ("systemctl  'restart'  x", Tier.PRIVILEGED),
        ("apt-get install nginx", Tier.PRIVILEGED),
        ("rm -rf /", Tier.PRIVILEGED),
        ("sudo systemctl status nginx", Tier.PRIVILEGED),
        ("/usr/bin/df -h", Tier.PRIVILEGED),  # not the listed "df"
        ("ls | sh", Tier.PRIVILEGED),
        ("cat /etc/hosts > /tmp/x", Tier.PRIVILEGED),
        ("echo $HOME", Tier.PRIVILEGED),
        ("ls; reboot", Tier.PRIVILEGED),
        ("ls `id`", Tier.PRIVILEGED),
        ("ls\nreboot", Tier.PRIVILEGED),
        ("cat 'unbalanced", Tier.PRIVILEGED),
        ("", Tier.PRIVILEGED),
        ("ip addr", Tier.READ_ONLY),
        ("ip addr show dev eth0", Tier.READ_ONLY),
        ("ip addr add 10.0.0.1/24 dev eth0", Tier.PRIVILEGED),
        ("ip addr a 10.0.0.1/24 dev eth0", Tier.PRIVILEGED),
        ("ip route flush table main", Tier.PRIVILEGED),
        ("journalctl --vacuum-size=1M", Tier.PRIVILEGED),
        ("journalctl --rotate", Tier.PRIVILEGED),
        ("dmesg -T", Tier.READ_ONLY),
        ("dmesg -Tc", Tier.PRIVILEGED),
        ("mount", Tier.READ_ONLY),
        ("mount /dev/sdb1 /mnt", Tier.PRIVILEGED),
        ("date +%s", Tier.READ_ONLY),
        ("date -s 2020-01-01", Tier.PRIVILEGED),
        ("hostname", Tier.READ_ONLY),
        ("hostname evil", Tier.PRIVILEGED),
        ("ss -tanp", Tier.READ_ONLY),
        ("ss -K dst 10.0.0.1", Tier.PRIVILEGED),
    ],
)
def test_default_classification(command: str, tier: Tier) -> None:
    assert classify_command(command, DEFAULTS) is tier


def test_the_hard_floor_beats_a_read_only_listing() -> None:
    careless = PolicySettings(
        read_only_commands=["rm", "kill", "sudo", "find", "timeout", "systemctl", "bash"]
    )
    for command in [
        "rm -rf /",
        "/bin/rm -rf /",
        "kill -9 1",
        "sudo ls",
        "find / -delete",
        "find /var -name '*.log' -exec gzip {} +",
        "timeout 5 rm -rf /",
        "systemctl reboot",
        "bash -c 'ls'",
        "mkfs.ext4 /dev/sda1",
    ]:
        assert classify_command(command, careless) is Tier.PRIVILEGED, command
    assert classify_command("find /var/log -name '*.gz'", careless) is Tier.READ_ONLY


def test_write_commands_are_write_and_win_over_read_only() -> None:
    policy = PolicySettings(
        read_only_commands=["systemctl status"],
        write_commands=["systemctl restart nginx", "systemctl"],
    )
    assert classify_command("systemctl restart nginx", policy) is Tier.WRITE
    assert classify_command("systemctl status nginx", policy) is Tier.WRITE
    assert classify_command("systemctl reboot", policy) is Tier.PRIVILEGED


def test_entries_are_matched_as_argv_prefixes() -> None:
    policy = PolicySettings(read_only_commands=["systemctl status"], write_commands=[])
    assert classify_command("systemctl status nginx", policy) is Tier.READ_ONLY
    assert classify_command("systemctl statusx nginx", policy) is Tier.PRIVILEGED
    assert classify_command("systemctl", policy) is Tier.PRIVILEGED


def test_an_argv_list_is_classified_like_the_string() -> None:
    assert classify_command(["df", "-h"], DEFAULTS) is Tier.READ_ONLY
    assert classify_command(["rm", "-rf", "/"], DEFAULTS) is Tier.PRIVILEGED
    assert classify_command(["ls", "a|b"], DEFAULTS) is Tier.PRIVILEGED


# -- auto approval and the decision -------------------------------------------------------------


def test_auto_approve_is_an_exact_match_after_normalising_quotes_and_spaces() -> None:
    policy = PolicySettings(auto_approve=["systemctl restart nginx"])
    assert is_auto_approved("systemctl restart nginx", policy)
    assert is_auto_approved("  systemctl   'restart' \"nginx\" ", policy)
    assert not is_auto_approved("systemctl restart nginx postgresql", policy)
    assert not is_auto_approved("systemctl restart", policy)
    assert not is_auto_approved("systemctl restart 'nginx", policy)
    assert not is_auto_approved("", policy)


@pytest.mark.parametrize(
    "tier,unattended,auto,decision",
    [
        (Tier.READ_ONLY, False, False, Decision.ALLOW),
        (Tier.READ_ONLY, True, False, Decision.ALLOW),
        (Tier.WRITE, False, False, Decision.ALLOW),
        (Tier.WRITE, True, False, Decision.ALLOW),
        (Tier.PRIVILEGED, False, True, Decision.ALLOW),
        (Tier.PRIVILEGED, True, True, Decision.ALLOW),
        (Tier.PRIVILEGED, True, False, Decision.DENY),
        (Tier.PRIVILEGED, False, False, Decision.NEEDS_APPROVAL),
    ],
)
def test_decide(tier: Tier, unattended: bool, auto: bool, decision: Decision) -> None:
    assert decide(tier, unattended=unattended, auto_approved=auto) is decision


@pytest.mark.parametrize(
    ("command", "tier"),
    [
        ("cat /etc/shadow", Tier.PRIVILEGED),
        ("tail -n 50 /root/.bash_history", Tier.PRIVILEGED),
        ("head /etc/ssh/sshd_config", Tier.PRIVILEGED),
        ("ls /root", Tier.PRIVILEGED),
        ("cat /var/log/syslog", Tier.READ_ONLY),
        ("tail -n 50 /var/log/syslog", Tier.READ_ONLY),
        ("ls -la /var/log", Tier.READ_ONLY),
        ("df -h /root", Tier.READ_ONLY),  # df does not read the files it is given
    ],
)
def test_file_reading_commands_obey_the_path_policy(command: str, tier: Tier) -> None:
    assert classify_command(command, PolicySettings()) is tier
