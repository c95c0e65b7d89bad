"""Settings of the Slack channel ([channels.slack])."""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator

from daemon.core.section import Section
from integrations.base import Role


class SlackChannelSettings(Section):
    """Slack through Socket Mode (no public URL needed)."""

    enabled: bool = False
    bot_token: SecretStr | None = None  # xoxb-…
    app_token: SecretStr | None = None  # xapp-… with connections:write
    api_url: str = "https://slack.com/api/"
    default_channel: str = ""  # where notifications go, e.g. "C0123456789"
    users: dict[str, Role] = Field(default_factory=dict)  # Slack user id -> role
    liveness_seconds: float = Field(default=30.0, ge=5)

    @model_validator(mode="after")
    def _tokens_when_enabled(self) -> SlackChannelSettings:
        if self.enabled and (self.bot_token is None or self.app_token is None):
            raise ValueError(
                "Slack is enabled but bot_token (xoxb-…) and app_token (xapp-…) are not both "
                "set; give them as credential files channels__slack__bot_token / "
                "channels__slack__app_token or env NIGHTSHIFT_CHANNELS__SLACK__BOT_TOKEN"
            )
        return self
