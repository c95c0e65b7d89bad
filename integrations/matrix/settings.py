"""Settings of the Matrix channel ([channels.matrix])."""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator

from daemon.core.section import Section
from integrations.base import Role


class MatrixChannelSettings(Section):
    enabled: bool = False
    homeserver: str = ""
    user_id: str = ""
    access_token: SecretStr | None = None
    default_room: str = ""
    users: dict[str, Role] = Field(default_factory=dict)  # Matrix user id -> role

    @model_validator(mode="after")
    def _login_when_enabled(self) -> MatrixChannelSettings:
        if self.enabled and (not self.homeserver or not self.user_id or self.access_token is None):
            raise ValueError(
                "Matrix is enabled but homeserver, user_id and access_token are not all set; "
                "give the token as the credential file channels__matrix__access_token"
            )
        return self
