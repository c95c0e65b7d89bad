"""Who may do what from chat: user ids mapped to roles per channel; everyone else is denied."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from daemon.config import ChannelsSettings
from daemon.core.access import REQUIRED, Action, Role

DENIAL_NOTICE_INTERVAL = timedelta(hours=1)


class AccessControl:
    """Default deny: a chat user without a configured role can do nothing."""

    def __init__(self, users: dict[str, dict[str, str]]) -> None:
        """``users`` maps channel name -> platform user id -> role name."""
        self._users = users
        self._paired: dict[str, dict[str, str]] = {}
        self._last_notice: dict[tuple[str, str], datetime] = {}

    @classmethod
    def from_settings(cls, channels: ChannelsSettings) -> AccessControl:
        return cls(
            {
                "slack": dict(channels.slack.users),
                "telegram": dict(channels.telegram.users),
                "matrix": dict(channels.matrix.users),
            }
        )

    def grant(self, channel: str, user_id: str, role: str) -> None:
        """Add a paired user; a role written in the config file is never overridden."""
        self._paired.setdefault(channel, {})[user_id] = role

    def role_of(self, channel: str, user_id: str) -> Role | None:
        if channel == "console":
            return Role.ADMIN  # the socket is 0600: only the daemon's own user can reach it
        name = self._users.get(channel, {}).get(user_id) or self._paired.get(channel, {}).get(
            user_id
        )
        return Role[name.upper()] if name else None

    def allows(self, channel: str, user_id: str, action: Action) -> bool:
        role = self.role_of(channel, user_id)
        return role is not None and role >= REQUIRED[action]

    def should_tell(self, channel: str, user_id: str, now: datetime) -> bool:
        """Whether to answer a denied user: at most hourly, so strangers cannot make us spam."""
        key = (channel, user_id)
        last = self._last_notice.get(key)
        if last is not None and now - last < DENIAL_NOTICE_INTERVAL:
            return False
        self._last_notice[key] = now
        return True


def actor_roles(access: AccessControl) -> Callable[[str], str | None]:
    """For ToolServices.role_of: "slack:U123" → that user's role name (console: admin)."""

    def role_of(actor: str) -> str | None:
        channel, _, user_id = actor.partition(":")
        role = access.role_of(channel, user_id)
        return role.name.lower() if role is not None else None

    return role_of
