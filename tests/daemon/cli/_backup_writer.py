"""Helper for test_backup: commit batches of rows through the real store, printing each batch
number once committed, until killed (or, with ``--vanish-after N``, exit after N batches
without closing the database, leaving its -wal behind as a crash would)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from memory.store import SqliteStore

BATCH = 5  # rows per transaction: a backup must hold all of a batch or none of it
MAX_BATCHES = 200_000  # a safety stop should the test die without killing us


async def main(path: Path, vanish_after: int | None) -> None:
    store = await SqliteStore.open(path)
    for batch in range(1, MAX_BATCHES):
        async with store.write() as db:
            for row in range(BATCH):
                await db.execute(
                    "INSERT INTO component_events (component, event, detail, created_at)"
                    " VALUES ('backup-writer', ?, ?, '2026-12-06T00:00:00.000000Z')",
                    (str(batch), f"row {row} " + "x" * 300),
                )
        sys.stdout.write(f"{batch}\n")
        sys.stdout.flush()
        if batch == vanish_after:
            os._exit(0)  # no close: the -wal and -shm stay, with these rows only in the -wal


if __name__ == "__main__":
    vanish = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[2] == "--vanish-after" else None
    asyncio.run(main(Path(sys.argv[1]), vanish))
