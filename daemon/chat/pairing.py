"""One-time pairing codes: `nightshift pair --role operator` binds the chat user who sends it."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from daemon.core.clock import Clock

CODE_TTL = timedelta(minutes=10)
ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O or 1/I to misread


@dataclass(frozen=True, slots=True)
class PairingCode:
    code: str
    role: str
    expires_at: datetime


class PairingCodes:
    """Codes live in memory only: a restart invalidates them, which is the safe direction."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._codes: dict[str, PairingCode] = {}

    def issue(self, role: str) -> PairingCode:
        raw = "".join(secrets.choice(ALPHABET) for _ in range(8))
        code = PairingCode(f"{raw[:4]}-{raw[4:]}", role, self._clock.now() + CODE_TTL)
        self._codes[code.code] = code
        return code

    def redeem(self, text: str) -> str | None:
        """The role for a valid code (which is then used up), else None."""
        code = self._codes.pop(text.strip().upper(), None)
        if code is None or code.expires_at < self._clock.now():
            return None
        return code.role
