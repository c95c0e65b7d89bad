"""The environment every program nightshift starts gets: a fixed few variables, never the
daemon's own (it holds keys)."""

from __future__ import annotations

import os

# Only these variables reach commands: the daemon's own environment may hold API keys.
PASSED_ENVIRONMENT = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ")
FIXED_ENVIRONMENT = {"SYSTEMD_PAGER": "", "PAGER": "cat", "SYSTEMD_COLORS": "0", "TERM": "dumb"}


def child_environment() -> dict[str, str]:
    """The environment every program we start gets: never the daemon's own (it holds keys)."""
    return _environment()


def _environment() -> dict[str, str]:
    env = {name: os.environ[name] for name in PASSED_ENVIRONMENT if name in os.environ}
    env.setdefault("PATH", os.defpath)
    env.update(FIXED_ENVIRONMENT)
    return env
