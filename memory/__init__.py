"""nightshift's memory: one SQLite file (WAL) and a small typed repository per aggregate."""

from memory.audit import AuditEntry, AuditRecord, AuditRepo
from memory.components import ComponentEvent, ComponentEventRepo
from memory.conversations import Conversation, ConversationRepo, StoredMessage
from memory.facts import Fact, FactRepo
from memory.outbox import OutboxMessage, OutboxRepo
from memory.runs import AgentRun, RunRepo, RunStep
from memory.store import SqliteStore
from memory.usage import LlmUsage, UsageRecord, UsageRepo, UsageSummary

__all__ = [
    "AgentRun",
    "AuditEntry",
    "AuditRecord",
    "AuditRepo",
    "ComponentEvent",
    "ComponentEventRepo",
    "Conversation",
    "ConversationRepo",
    "Fact",
    "FactRepo",
    "LlmUsage",
    "OutboxMessage",
    "OutboxRepo",
    "RunRepo",
    "RunStep",
    "SqliteStore",
    "StoredMessage",
    "UsageRecord",
    "UsageRepo",
    "UsageSummary",
]
