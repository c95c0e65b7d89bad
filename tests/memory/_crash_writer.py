"""Helper for test_crash: commit rows one by one, printing each committed id, until killed."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from daemon.core.clock import SystemClock
from memory.components import ComponentEventRepo
from memory.store import SqliteStore

MAX_ROWS = 200_000  # a safety stop should the test die without killing us


async def main(path: Path) -> None:
    async with await SqliteStore.open(path) as store:
        events = ComponentEventRepo(store, SystemClock())
        for i in range(MAX_ROWS):
            event_id = await events.record("crash-writer", "tick", f"row {i} " + "x" * 200)
            sys.stdout.write(f"{event_id}\n")
            sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
