"""Routing: severities and labels decide which channels hear about an alert."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.config import load_settings
from daemon.core.errors import ConfigError
from daemon.incidents.routing import Destination, Router

CONFIG = """
[channels.slack]
enabled = true
bot_token = "xoxb-1"
app_token = "xapp-1"
[channels.telegram]
enabled = true
bot_token = "1:x"

[[routes]]
match = { severity = "critical" }
to = ["slack:C0OPS", "telegram:4242"]
continue_matching = true

[[routes]]
match = { severity = "critical", team = "db" }
to = ["slack:C0DBA"]

[[routes]]
match_re = { service = "nginx|haproxy" }
to = ["slack:C0WEB"]

[[routes]]
match = { severity = "info" }
to = []
"""


@pytest.fixture
def router(tmp_path: Path) -> Router:
    path = tmp_path / "c.toml"
    path.write_text(CONFIG)
    settings = load_settings(path, environ_secrets=False)
    return Router(settings.routes, settings.default_route)


def test_critical_goes_to_ops_and_on_call_and_continues(router: Router) -> None:
    assert router.destinations({"severity": "critical", "team": "db"}) == [
        Destination("slack", "C0OPS"),
        Destination("telegram", "4242"),
        Destination("slack", "C0DBA"),
    ]


def test_regex_matches_whole_values(router: Router) -> None:
    assert router.destinations({"severity": "warning", "service": "nginx"}) == [
        Destination("slack", "C0WEB")
    ]
    assert router.destinations({"severity": "warning", "service": "nginx-exporter"}) == [
        Destination("console")
    ]


def test_info_is_routed_nowhere_and_unmatched_goes_to_the_default(router: Router) -> None:
    assert router.destinations({"severity": "info"}) == []
    assert router.destinations({"severity": "warning"}) == [Destination("console")]


@pytest.mark.parametrize(
    ("routes", "message"),
    [
        ('[[routes]]\nto = ["pager"]\n', "unknown channel 'pager'"),
        ('[[routes]]\nto = ["slack:C1"]\n', "channel 'slack' is not enabled"),
        ('[[routes]]\nmatch_re = { a = "(" }\nto = []\n', "invalid regular expression"),
    ],
)
def test_bad_routes_are_config_errors(tmp_path: Path, routes: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(routes)
    with pytest.raises(ConfigError, match="routes"):
        load_settings(path, environ_secrets=False)
    try:
        load_settings(path, environ_secrets=False)
    except ConfigError as exc:
        assert message in str(exc)
