"""UsageRepo: per-call usage, sums since a time (budgets), per-run listing."""

from __future__ import annotations

from datetime import timedelta

import pytest

from daemon.core.clock import ManualClock
from memory.runs import RunRepo
from memory.store import SqliteStore
from memory.usage import LlmUsage, UsageRepo, UsageSummary


def _usage(run_id: int | None, total: int, *, ok: bool = True) -> LlmUsage:
    return LlmUsage(
        run_id=run_id,
        model="kimi-k2.6",
        purpose="investigate",
        prompt_tokens=total - 10,
        completion_tokens=10,
        cached_tokens=5,
        total_tokens=total,
        cost_usd=total / 1_000_000,
        latency_ms=850.0,
        ok=ok,
        error=None if ok else "HTTP 429",
    )


@pytest.fixture
def repo(store: SqliteStore, clock: ManualClock) -> UsageRepo:
    return UsageRepo(store, clock)


async def test_tokens_since_counts_only_calls_at_or_after_the_time(
    repo: UsageRepo, clock: ManualClock
) -> None:
    assert await repo.tokens_since(clock.now()) == 0
    await repo.record(_usage(None, 1000))
    clock.advance(3600)
    midnight = clock.now()
    await repo.record(_usage(None, 200))
    clock.advance(60)
    await repo.record(_usage(None, 30, ok=False))

    assert await repo.tokens_since(midnight) == 230
    assert await repo.tokens_since(midnight + timedelta(seconds=1)) == 30
    assert await repo.tokens_since(midnight - timedelta(days=1)) == 1230


async def test_summary_since_sums_calls_tokens_and_cost(
    repo: UsageRepo, clock: ManualClock
) -> None:
    start = clock.now()
    await repo.record(_usage(None, 100))
    await repo.record(_usage(None, 300))

    summary = await repo.summary_since(start)

    assert summary == UsageSummary(
        calls=2,
        prompt_tokens=380,
        completion_tokens=20,
        cached_tokens=10,
        total_tokens=400,
        cost_usd=summary.cost_usd,
    )
    assert summary.cost_usd == pytest.approx(0.0004)


async def test_for_run_lists_a_runs_calls_in_order(
    repo: UsageRepo, store: SqliteStore, clock: ManualClock
) -> None:
    run_id = await RunRepo(store, clock).start("incident", "alert:x")
    first = await repo.record(_usage(run_id, 100))
    await repo.record(_usage(None, 5))
    second = await repo.record(_usage(run_id, 50, ok=False))

    records = await repo.for_run(run_id)

    assert [r.id for r in records] == [first, second]
    assert records[1].ok is False and records[1].error == "HTTP 429"
    assert records[0].model == "kimi-k2.6" and records[0].created_at == clock.now()


async def test_cache_use_is_summed_per_conversation(
    repo: UsageRepo, store: SqliteStore, clock: ManualClock
) -> None:
    from memory.conversations import ConversationRepo

    conversations = ConversationRepo(store, clock)
    runs = RunRepo(store, clock)
    busy = await conversations.get_or_create("test", "busy")
    quiet = await conversations.get_or_create("test", "quiet")
    start = clock.now()
    for conversation, prompt, cached in ((busy, 1000, 900), (busy, 1000, 700), (quiet, 100, 0)):
        run_id = await runs.start("chat", "test", conversation.id)
        await repo.record(
            LlmUsage(
                run_id=run_id,
                model="kimi-k2.6",
                purpose="agent",
                prompt_tokens=prompt,
                completion_tokens=10,
                cached_tokens=cached,
                total_tokens=prompt + 10,
                cost_usd=0.0,
                latency_ms=1.0,
                ok=True,
            )
        )
    await repo.record(_usage(None, 500))  # no run: counted in the day's total only

    uses = await repo.cache_by_conversation(start)

    assert [(u.conversation_id, u.calls, u.prompt_tokens, u.cached_tokens) for u in uses] == [
        (busy.id, 2, 2000, 1600),
        (quiet.id, 1, 100, 0),
    ]
    assert uses[0].ratio == 0.8 and uses[1].ratio == 0.0
    assert await repo.cache_by_conversation(start, limit=1) == uses[:1]
