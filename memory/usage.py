"""Model usage: one row per LLM call, summed for budgets and cost reports."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import aiosqlite

from daemon.core.clock import Clock
from memory._codec import from_db_time, to_db_time
from memory.store import GroupInsert, SqliteStore

__all__ = ["CacheUse", "LlmUsage", "UsageRecord", "UsageRepo", "UsageSummary"]

log = logging.getLogger(__name__)

_COLUMNS = (
    "id, run_id, model, purpose, prompt_tokens, completion_tokens, cached_tokens, total_tokens,"
    " cost_usd, latency_ms, ok, error, created_at"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class LlmUsage:
    """What one model call used (to record)."""

    run_id: int | None
    model: str
    purpose: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    total_tokens: int
    cost_usd: float
    latency_ms: float
    ok: bool
    error: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageRecord(LlmUsage):
    """A stored usage row."""

    id: int
    created_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageSummary:
    """Usage summed over a period."""

    calls: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    total_tokens: int
    cost_usd: float


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheUse:
    """How much of one conversation's input the provider's prompt cache served."""

    conversation_id: int
    calls: int
    prompt_tokens: int
    cached_tokens: int

    @property
    def ratio(self) -> float:
        """Cached share of the input tokens (0 when there were none)."""
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


def _record(row: aiosqlite.Row) -> UsageRecord:
    return UsageRecord(
        id=row["id"],
        run_id=row["run_id"],
        model=row["model"],
        purpose=row["purpose"],
        prompt_tokens=row["prompt_tokens"],
        completion_tokens=row["completion_tokens"],
        cached_tokens=row["cached_tokens"],
        total_tokens=row["total_tokens"],
        cost_usd=row["cost_usd"],
        latency_ms=row["latency_ms"],
        ok=bool(row["ok"]),
        error=row["error"],
        created_at=from_db_time(row["created_at"]),
    )


class UsageRepo:
    """Record model calls and sum them."""

    def __init__(self, store: SqliteStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._rows = GroupInsert(store, "llm_usage", _COLUMNS.split(", ")[1:])

    async def record(self, usage: LlmUsage) -> int:
        """Store one call's usage, timestamped now; returns once committed. Calls that finish
        together share one INSERT and one commit (see GroupInsert)."""
        return await self._rows.insert(
            (
                usage.run_id,
                usage.model,
                usage.purpose,
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.cached_tokens,
                usage.total_tokens,
                usage.cost_usd,
                usage.latency_ms,
                int(usage.ok),
                usage.error,
                to_db_time(self._clock.now()),
            )
        )

    async def tokens_since(self, since: datetime) -> int:
        """Total tokens of calls made at or after ``since`` (aware datetime)."""
        return (await self.summary_since(since)).total_tokens

    async def summary_since(self, since: datetime) -> UsageSummary:
        """Calls, tokens and cost of calls made at or after ``since`` (aware datetime)."""
        async with self._store.read() as db:
            rows = list(
                await db.execute_fetchall(
                    "SELECT COUNT(*), COALESCE(SUM(prompt_tokens), 0),"
                    " COALESCE(SUM(completion_tokens), 0), COALESCE(SUM(cached_tokens), 0),"
                    " COALESCE(SUM(total_tokens), 0), COALESCE(SUM(cost_usd), 0.0)"
                    " FROM llm_usage WHERE created_at >= ?",
                    (to_db_time(since),),
                )
            )
        calls, prompt, completion, cached, total, cost = rows[0]
        return UsageSummary(
            calls=calls,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cached_tokens=cached,
            total_tokens=total,
            cost_usd=float(cost),
        )

    async def for_run(self, run_id: int) -> list[UsageRecord]:
        """A run's model calls in order."""
        async with self._store.read() as db:
            rows = await db.execute_fetchall(
                f"SELECT {_COLUMNS} FROM llm_usage WHERE run_id = ? ORDER BY id", (run_id,)
            )
        return [_record(row) for row in rows]

    async def cache_by_conversation(self, since: datetime, limit: int = 5) -> list[CacheUse]:
        """Prompt-cache use per conversation since ``since``, the most input tokens first."""
        async with self._store.read() as db:
            rows = await db.execute_fetchall(
                "SELECT r.conversation_id, COUNT(*), SUM(u.prompt_tokens), SUM(u.cached_tokens)"
                " FROM llm_usage u JOIN agent_runs r ON r.id = u.run_id"
                " WHERE u.created_at >= ? AND r.conversation_id IS NOT NULL"
                " GROUP BY r.conversation_id ORDER BY SUM(u.prompt_tokens) DESC LIMIT ?",
                (to_db_time(since), limit),
            )
        return [
            CacheUse(conversation_id=cid, calls=calls, prompt_tokens=prompt, cached_tokens=cached)
            for cid, calls, prompt, cached in rows
        ]
