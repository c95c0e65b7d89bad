"""The words of access control: what a chat user may ask for (actions) and the ordered roles."""

from __future__ import annotations

from enum import IntEnum
from typing import Literal

Action = Literal["ask", "approve", "silence", "admin"]


class Role(IntEnum):
    """Ordered: each role may do everything the ones below it may."""

    VIEWER = 1  # ask questions, read status
    OPERATOR = 2  # approve actions, silence alerts
    ADMIN = 3  # tasks and policy


REQUIRED: dict[Action, Role] = {
    "ask": Role.VIEWER,
    "approve": Role.OPERATOR,
    "silence": Role.OPERATOR,
    "admin": Role.ADMIN,
}
