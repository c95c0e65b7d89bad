"""`nightshift memory search`: read-only from the database file, even while the daemon writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.cli.main import main
from daemon.core.clock import SystemClock
from memory.conversations import ConversationRepo
from memory.facts import FactRepo
from memory.incidents import IncidentRepo
from memory.store import SqliteStore
from tests.support import run_cli


async def test_search_cites_sources_while_a_write_is_in_progress(tmp_path: Path) -> None:
    clock = SystemClock()
    store = await SqliteStore.open(tmp_path / "nightshift.db")
    try:
        fact = await FactRepo(store, clock).remember("pg backups go to /srv/backup/pg-nightly")
        conversations = ConversationRepo(store, clock)
        conv = await conversations.get_or_create("slack", "C1:1")
        said = await conversations.append(conv.id, "user", "is the pg-nightly backup done?")
        async with store.write() as db:  # the daemon mid-transaction: never waited for
            await db.execute(
                "INSERT INTO facts (text, created_at) VALUES ('pg-nightly uncommitted', 'x')"
            )
            location = ["--state-dir", str(tmp_path)]
            code, out, err = await run_cli("memory", "search", "pg-nightly", *location)
            assert code == 0, err
            assert f"fact#{fact}" in out and f"message#{said}" in out
            assert "/srv/backup/pg-nightly" in out and "uncommitted" not in out

            code, out, _ = await run_cli(
                "memory", "search", "pg-nightly", "--source", "message", "--since", "1h", *location
            )
            assert code == 0 and f"message#{said}" in out and "fact#" not in out
            code, out, _ = await run_cli("memory", "search", "zzzz", *location)
            assert (code, out.strip()) == (0, "nothing found")
    finally:
        await store.close()


def test_search_explains_a_missing_database_and_a_bad_age(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["memory", "search", "disk", "--state-dir", str(tmp_path)]) == 1
    assert "no database at" in capsys.readouterr().err
    assert main(["memory", "search", "disk", "--since", "soon", "--state-dir", str(tmp_path)]) == 2
    assert "--since" in capsys.readouterr().err


async def test_search_filters_by_host_and_service(tmp_path: Path) -> None:
    clock = SystemClock()
    store = await SqliteStore.open(tmp_path / "nightshift.db")
    try:
        ids = {}
        for host, service in (("web-3", "nginx"), ("web3", "nginx"), ("web-3", "redis")):
            async with store.write() as db:
                ids[host, service] = await IncidentRepo.create(
                    db,
                    group_key=f"{host}/{service}",
                    title=f"DiskFull on {host}",
                    severity="warning",
                    labels={"host": host, "service": service},
                    opened_at=clock.now(),
                    flush_at=clock.now(),
                )
    finally:
        await store.close()
    location = ["--state-dir", str(tmp_path)]
    code, out, err = await run_cli("memory", "search", "DiskFull", "--host", "web-3", *location)
    assert code == 0, err
    cited = {line.split()[0] for line in out.splitlines() if line.startswith("incident#")}
    assert cited == {f"incident#{ids['web-3', 'nginx']}", f"incident#{ids['web-3', 'redis']}"}
    code, out, err = await run_cli(
        "memory", "search", "DiskFull", "--host", "web-3", "--service", "redis", *location
    )
    cited = {line.split()[0] for line in out.splitlines() if line.startswith("incident#")}
    assert cited == {f"incident#{ids['web-3', 'redis']}"}
