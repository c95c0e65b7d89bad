"""One error tree for nightshift, grouped by who handles the error.

NightshiftError
├── ConfigError                bad configuration: tell the operator, exit 78
├── InputError (ValueError)    bad input from a person, a model or a peer: say what to fix
│   ├── CommandError           a chat or CLI command typed wrong; shows the right form
│   ├── TaskRejected           a task request that cannot be carried out
│   │   └── TaskConflict       a task of that name exists already
│   ├── ScheduleError          a schedule that cannot be parsed or is out of range
│   ├── PatternError           a regex the linear-time engine (RE2) cannot run
│   ├── TemplateError          an annotation template that cannot be rendered safely
│   └── PayloadError           a webhook body that is not Alertmanager's version 4
├── TransientError             worth retrying later (network, 5xx, 429, locked db)
│   ├── LlmUnavailableError    the model API cannot be reached or keeps failing
│   └── DeliveryError          a channel cannot deliver now: the outbox retries
├── PermanentDeliveryError     the platform refused a message for good: give up, tell
├── BudgetExhaustedError       the hard daily token budget is spent: degrade, never call
├── AgentDisabledError         no LLM configured (no API key): the agent is off
├── ToolError                  a tool failed: the message goes back to the model
│   ├── PolicyDeniedError      the policy refused the call (tier, path, unattended)
│   └── ToolTimeoutError       the tool ran past its timeout
├── StoreError                 the database cannot be opened or used: tell the operator
│   └── SchemaTooNewError      written by a newer release; left untouched
├── NotFoundError (LookupError)  a lookup found nothing; carries what was looked for
│   ├── RecordNotFound         no row with that id
│   └── UnknownTask            no task with that name
├── AlreadyRunningError        another daemon holds the state-directory lock
├── DrainingError              the daemon is shutting down: new work is refused
└── ClientError                the CLI cannot get an answer from the daemon
    ├── DaemonNotRunning       no daemon answers on the socket
    └── ApiError               the daemon answered with an error status
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "EXIT_CONFIG",
    "AgentDisabledError",
    "AlreadyRunningError",
    "ApiError",
    "BudgetExhaustedError",
    "ClientError",
    "CommandError",
    "ConfigError",
    "DaemonNotRunning",
    "DeliveryError",
    "DrainingError",
    "InputError",
    "LlmUnavailableError",
    "NightshiftError",
    "NotFoundError",
    "PatternError",
    "PayloadError",
    "PermanentDeliveryError",
    "PolicyDeniedError",
    "RecordNotFound",
    "ScheduleError",
    "SchemaTooNewError",
    "StoreError",
    "TaskConflict",
    "TaskRejected",
    "TemplateError",
    "ToolError",
    "ToolTimeoutError",
    "TransientError",
    "UnknownTask",
]

EXIT_CONFIG = 78  # EX_CONFIG from sysexits.h; systemd's RestartPreventExitStatus uses it


class NightshiftError(Exception):
    """Base of every error nightshift raises on purpose."""


class ConfigError(NightshiftError):
    """The configuration is invalid; the message says where and how to fix it."""


# -- bad input: the message is for the person (or model, or peer) who sent it ---------------


class InputError(NightshiftError, ValueError):
    """Input that cannot be used; the message says what is wrong and how to fix it."""


class CommandError(InputError):
    """A command typed wrong; the message says how to type it right."""


class TaskRejected(InputError):
    """A task request that cannot be carried out; the message says why and what to do."""


class TaskConflict(TaskRejected):
    """A task of that name exists already."""


class ScheduleError(InputError):
    """A schedule is invalid; the message names the problem and how to fix it."""


class PatternError(InputError):
    """A pattern the linear-time engine cannot run, with what and where in the message."""


class TemplateError(InputError):
    """A template that cannot be rendered safely; the message says what to change."""


class PayloadError(InputError):
    """The payload is not a valid Alertmanager webhook (v4); the message names where and what."""

    def __init__(self, location: str, problem: str) -> None:
        super().__init__(f"{location}: {problem}" if location else problem)
        self.location = location
        self.problem = problem


# -- retry later, or give up and say so -------------------------------------------------------


class TransientError(NightshiftError):
    """A failure that may go away if retried later."""


class LlmUnavailableError(TransientError):
    """The model API failed after all retries and fallbacks."""


class DeliveryError(TransientError):
    """Sending failed but may succeed later (network, rate limit: ``retry_after`` seconds)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentDeliveryError(NightshiftError):
    """Sending can never succeed (unknown room, message rejected, revoked token)."""


# -- the agent ----------------------------------------------------------------------------------


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


# -- storage and lookups ------------------------------------------------------------------------


class StoreError(NightshiftError):
    """The database cannot be opened or used."""


class FencedError(StoreError):
    """A write by a worker whose epoch is stale: the task was reassigned, so it is refused."""

    def __init__(self, task_id: int, epoch: int) -> None:
        super().__init__(f"swarm task {task_id}: write at stale epoch {epoch} refused")
        self.task_id = task_id
        self.epoch = epoch


class SchemaTooNewError(StoreError):
    """The database was written by a newer nightshift than this one."""

    def __init__(self, path: str, found: int, known: int) -> None:
        super().__init__(
            f"database {path} has schema version {found}, but this nightshift knows only up to "
            f"{known}: it was written by a newer release. Upgrade nightshift, or point "
            f"--state-dir at another directory; the database was left untouched."
        )
        self.path = path
        self.found = found
        self.known = known


class NotFoundError(NightshiftError, LookupError):
    """A lookup found nothing."""

    def __init__(self, kind: str, ident: object) -> None:
        super().__init__(f"{kind} {ident!r} not found")
        self.kind = kind
        self.ident = ident


class RecordNotFound(NotFoundError):
    """A lookup by id found no row; carries what was looked for."""

    def __init__(self, kind: str, record_id: int | str) -> None:
        LookupError.__init__(self, f"no {kind} with id {record_id}")
        self.kind = kind
        self.ident = self.record_id = record_id


class UnknownTask(NotFoundError):
    """No task has this name."""

    def __init__(self, name: str) -> None:
        LookupError.__init__(self, f"no task named {name!r}")
        self.kind = "task"
        self.ident = self.name = name


# -- the process and its CLI --------------------------------------------------------------------


class AlreadyRunningError(NightshiftError):
    """Another nightshift process holds the lock on this state directory."""


class DrainingError(NightshiftError):
    """The daemon is shutting down and accepts no new work."""


class ClientError(NightshiftError):
    """The CLI could not get a usable answer from the daemon."""


class DaemonNotRunning(ClientError):
    """No daemon answers on the socket."""

    def __init__(self, socket_path: Path, detail: str = "") -> None:
        state_dir = socket_path.parent
        super().__init__(
            f"nightshift is not running for state directory {state_dir} (no answer on "
            f"{socket_path}{': ' + detail if detail else ''}). Start it with `nightshift run` "
            "(or `systemctl start nightshift`), and pass the same --config/--state-dir here."
        )


class ApiError(ClientError):
    """The daemon answered with an error status."""
