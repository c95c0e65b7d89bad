"""One error tree for nightshift, grouped by who handles the error.

    NightshiftError
    ├── ConfigError              bad configuration: tell the operator, exit 78
    ├── TransientError           worth retrying later (network, 5xx, 429, locked db)
    │   └── LlmUnavailableError  the model API cannot be reached or keeps failing
    ├── BudgetExhaustedError     the hard daily token budget is spent: degrade, never call
    ├── AgentDisabledError       no LLM configured (no API key): the agent is off
    ├── ToolError                a tool failed: the message goes back to the model
    │   ├── PolicyDeniedError    the policy refused the call (tier, path, unattended)
    │   └── ToolTimeoutError     the tool ran past its timeout
    ├── AlreadyRunningError      another daemon holds the state-directory lock
    └── NotFoundError            a lookup by id found nothing (carries the id)

Storage errors live in ``memory.errors`` (the lower layer) and are re-exported here.
"""

from __future__ import annotations

from memory.errors import SchemaTooNewError, StoreError

__all__ = [
    "AgentDisabledError",
    "AlreadyRunningError",
    "BudgetExhaustedError",
    "ConfigError",
    "LlmUnavailableError",
    "NightshiftError",
    "NotFoundError",
    "PolicyDeniedError",
    "SchemaTooNewError",
    "StoreError",
    "ToolError",
    "ToolTimeoutError",
    "TransientError",
]

EXIT_CONFIG = 78  # EX_CONFIG from sysexits.h; systemd's RestartPreventExitStatus uses it


class NightshiftError(Exception):
    """Base of every error nightshift raises on purpose."""


class ConfigError(NightshiftError):
    """The configuration is invalid; the message says where and how to fix it."""


class TransientError(NightshiftError):
    """A failure that may go away if retried later."""


class LlmUnavailableError(TransientError):
    """The model API failed after all retries and fallbacks."""


class BudgetExhaustedError(NightshiftError):
    """The hard daily token budget is spent; callers must degrade, not retry."""

    def __init__(self, used: int, limit: int) -> None:
        super().__init__(f"daily LLM token budget exhausted: {used} of {limit} tokens used today")
        self.used = used
        self.limit = limit


class AgentDisabledError(NightshiftError):
    """The agent is off (for example no API key); the reason is the message."""


class ToolError(NightshiftError):
    """A tool failed; the message is returned to the model as the tool result."""


class PolicyDeniedError(ToolError):
    """The tool policy refused the call."""


class ToolTimeoutError(ToolError):
    """A tool ran past its timeout and was cancelled."""


class AlreadyRunningError(NightshiftError):
    """Another nightshift process holds the lock on this state directory."""


class NotFoundError(NightshiftError, LookupError):
    """A lookup found nothing."""

    def __init__(self, kind: str, ident: object) -> None:
        super().__init__(f"{kind} {ident!r} not found")
        self.kind = kind
        self.ident = ident
