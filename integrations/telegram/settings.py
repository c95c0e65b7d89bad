"""Settings of the Telegram channel ([channels.telegram])."""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator

from daemon.core.section import Section
from integrations.base import Role


class TelegramChannelSettings(Section):
    """Telegram through long polling."""

    enabled: bool = False
    bot_token: SecretStr | None = None
    api_url: str = "https://api.telegram.org/bot"
    default_chat: str = ""  # chat id for notifications
    users: dict[str, Role] = Field(default_factory=dict)  # Telegram user id -> role
    require_mention_in_groups: bool = True

    @model_validator(mode="after")
    def _token_when_enabled(self) -> TelegramChannelSettings:
        if self.enabled and self.bot_token is None:
            raise ValueError(
                "Telegram is enabled but bot_token is not set; give it as the credential file "
                "channels__telegram__bot_token or env NIGHTSHIFT_CHANNELS__TELEGRAM__BOT_TOKEN"
            )
        return self
