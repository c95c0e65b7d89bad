"""FactRepo: remember once, recall by relevance, survive hostile query text."""

from __future__ import annotations

import pytest

import memory.facts
from daemon.core.clock import ManualClock
from daemon.core.errors import InputError, RecordNotFound
from memory.facts import FactRepo, fts_query
from memory.store import SqliteStore


@pytest.fixture
def repo(store: SqliteStore, clock: ManualClock) -> FactRepo:
    return FactRepo(store, clock)


@pytest.fixture
async def seeded(repo: FactRepo, clock: ManualClock) -> dict[str, int]:
    ids = {}
    for key, text, tags in [
        ("nginx", "nginx on web-1 is reloaded with systemctl reload nginx", "web"),
        (
            "disk",
            "sda on db-1 fills up when the nightly backup runs; disk full means backups",
            "disk",
        ),
        ("oncall", "Alice is on call on weekends", "people"),
        ("backup", "the backup job runs at 02:00 UTC", "backup"),
    ]:
        ids[key] = await repo.remember(text, tags=tags, source="test")
        clock.advance(1)
    return ids


async def test_identical_text_is_remembered_once(repo: FactRepo) -> None:
    first = await repo.remember("the VPN gateway is 10.0.0.1", tags="net")
    again = await repo.remember("  the VPN gateway is 10.0.0.1\n", source="chat")

    assert again == first
    assert await repo.count() == 1
    assert await repo.remember("the VPN gateway is 10.0.0.2") != first
    with pytest.raises(ValueError):
        await repo.remember("   ")


async def test_recall_ranks_the_matching_fact_first(repo: FactRepo, seeded: dict[str, int]) -> None:
    facts = await repo.recall("who is on call this weekend?")
    assert facts[0].id == seeded["oncall"]
    assert facts[0].source == "test" and facts[0].tags == "people"

    assert (await repo.recall("disk full"))[0].id == seeded["disk"]
    assert (await repo.recall("reloading nginx"))[0].id == seeded["nginx"]  # stemmed


async def test_recall_handles_punctuation_and_query_syntax(
    repo: FactRepo, seeded: dict[str, int]
) -> None:
    assert (await repo.recall('disk "full" (sda)'))[0].id == seeded["disk"]
    for hostile in ['"', "((", "sda*", "NEAR(disk", "text:disk", "AND OR NOT", "-disk ^full"]:
        await repo.recall(hostile)  # must not raise


def test_fts_query_quotes_every_term() -> None:
    assert fts_query('disk "full" (sda)') == '"disk" OR "full" OR "sda"'
    assert fts_query("AND or") == '"and" OR "or"'
    assert fts_query("!!!") == ""


async def test_empty_query_returns_the_most_recent_facts(
    repo: FactRepo, seeded: dict[str, int]
) -> None:
    facts = await repo.recall("", limit=2)
    assert [f.id for f in facts] == [seeded["backup"], seeded["oncall"]]


async def test_query_without_words_falls_back_to_substring_search(repo: FactRepo) -> None:
    fact_id = await repo.remember("the prompt on db-1 ends with ((>")
    assert [f.id for f in await repo.recall("((>")] == [fact_id]


async def test_full_text_errors_fall_back_to_like(
    repo: FactRepo,
    seeded: dict[str, int],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(memory.facts, "fts_query", lambda query: '"unterminated')
    facts = await repo.recall("alice weekends")
    assert facts[0].id == seeded["oncall"]
    assert "falling back to LIKE" in caplog.text


async def test_forget_removes_the_fact_from_recall(repo: FactRepo, seeded: dict[str, int]) -> None:
    forgotten = await repo.forget(seeded["oncall"], by="cli")
    assert forgotten.text == "Alice is on call on weekends"
    with pytest.raises(InputError, match="already forgotten"):
        await repo.forget(seeded["oncall"])
    with pytest.raises(RecordNotFound, match="no fact with id 999"):
        await repo.forget(999)
    assert seeded["oncall"] not in [f.id for f in await repo.recall("alice on call")]
    assert await repo.count() == 3
