"""Runbook files in the recall index: indexed once, re-read when they change, gone when deleted."""

from __future__ import annotations

import os
from pathlib import Path

from daemon.core.clock import ManualClock
from daemon.incidents.runbooks import RunbookLibrary
from memory.recall import RecallRepo
from memory.store import SqliteStore


async def test_the_index_follows_the_runbook_directory(tmp_path: Path) -> None:
    books = tmp_path / "runbooks"
    books.mkdir()
    (books / "disk-full.md").write_text("# Disk full\nFind the culprit with ncdu /var.\n")
    (books / "notes.txt").write_text("not a runbook: ncdu")
    store = await SqliteStore.open(tmp_path / "state.db")
    try:
        recall = RecallRepo(store, ManualClock())
        library = RunbookLibrary(books)
        assert await library.index(recall) == 1
        assert await library.index(recall) == 0  # unchanged: nothing re-read
        hits = await recall.search("ncdu")
        assert [(h.source, h.labels) for h in hits] == [("runbook", "runbook=disk-full.md")]

        path = books / "disk-full.md"
        path.write_text("# Disk full\nFind the culprit with du -xh /srv.\n")
        os.utime(path, ns=(1, 10**18))  # a new mtime even on a coarse-grained file system
        (books / "cert-expiry.md").write_text("# Certificate expiry\nRun certbot renew.\n")
        assert await library.index(recall) == 2
        assert await recall.search("ncdu") == []
        assert [h.source for h in await recall.search("du -xh /srv")] == ["runbook"]
        assert [h.labels for h in await recall.search("certbot")] == ["runbook=cert-expiry.md"]

        path.unlink()
        assert await library.index(recall) == 1
        assert await recall.search("culprit") == []
        assert await RunbookLibrary(tmp_path / "missing").index(recall) == 1  # none left
        assert await recall.runbook_digests() == {}
    finally:
        await store.close()
