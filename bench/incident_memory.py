"""Model calls and tokens, first vs second occurrence of the same incident (incident memory).

`nightshift run` takes the PostgresArchiverStuck alert on its Alertmanager webhook; the fake
Kimi (tests/fakes/chat_completions.py, in this process, counting prompt tokens as about four
characters each and reporting prefix-cache hits) plays the investigation through the real
agent loop and tools; the allowlisted restart runs; the alert resolves; the postmortem (JSON)
leaves the incident's record. Then the same alert fires again from another exporter port.

SCRIPTED, read the figures as such: the fake's script (tests/test_e2e_incident_memory.py,
ScriptedModel) explores six steps when the prompt holds no prior record and goes straight to
the known cause (two steps) when it does — it branches on the record's marker. What the bench
measures for real is the daemon's side: that the second prompt carries the record, what the
record costs in prompt size, and the tokens the real loop spends and accounts in llm_usage.
Whether a real model takes the shortcut is not measured here.

Usage: python -m bench.incident_memory [--runs 1]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fakes.chat_completions import FakeChatServer
from tests.test_e2e_incident_memory import (
    INCIDENTS,
    LOG_LINE,
    PRIOR_MARKER,
    ScriptedModel,
    one_incident,
)
from tests.test_e2e_investigation_limits import webhook_daemon


def usage(db: Path, incident: int) -> dict[str, tuple[int, int, int, int]]:
    """Per run kind: (model calls, prompt, cached, completion tokens) from llm_usage."""
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT r.kind, count(*), sum(u.prompt_tokens), sum(u.cached_tokens),"
            " sum(u.completion_tokens) FROM llm_usage u JOIN agent_runs r ON r.id = u.run_id"
            " JOIN conversations c ON c.id = r.conversation_id WHERE c.key = ?"
            " GROUP BY r.kind",
            (f"incident:{incident}",),
        ).fetchall()
    finally:
        conn.close()
    return {str(kind): (int(n), int(p), int(c), int(o)) for kind, n, p, c, o in rows}


async def run_once() -> tuple[list[dict[str, tuple[int, int, int, int]]], list[int], float]:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        log = work / "logs" / "postgres.log"
        log.parent.mkdir()
        log.write_text(f"2026-11-22 11:58:00 {LOG_LINE}\n")
        model = ScriptedModel(log)
        async with FakeChatServer(prefix_cache=True) as fake:
            fake.responder = model
            daemon, port = await webhook_daemon(work, llm_url=fake.base_url, incidents=INCIDENTS)
            db = daemon.state_dir / "nightshift.db"
            try:
                await one_incident(port, db, 1, exporter=9187)
                await one_incident(port, db, 2, exporter=9188)
            finally:
                await daemon.stop()
            figures = [usage(db, 1), usage(db, 2)]
        if PRIOR_MARKER in model.prompts[0] or PRIOR_MARKER not in model.prompts[1]:
            raise SystemExit("bench: the prior record was not where expected")
        sizes = [len(prompt) for prompt in model.prompts]
    return figures, sizes, time.perf_counter() - started


def _row(label: str, kinds: dict[str, tuple[int, int, int, int]]) -> str:
    cells = []
    for kind in ("investigation", "postmortem"):
        n, prompt, cached, out = kinds.get(kind, (0, 0, 0, 0))
        cells.append(f"{n:>3} calls {prompt:>7,} in ({cached:>6,} cached) {out:>5,} out")
    n = sum(v[0] for v in kinds.values())
    total_in = sum(v[1] for v in kinds.values())
    total_out = sum(v[3] for v in kinds.values())
    return (
        f"{label:<8}{cells[0]}  |{cells[1]}  | {n:>3} calls {total_in:>7,} in {total_out:>5,} out"
    )


async def main(runs: int) -> None:
    print(__doc__.split("\n\n")[2].replace("\n", " "))
    print("tokens: the fake's count (4 characters per token of the rendered prompt); cached:")
    print("longest shared prefix with an earlier request, in 16-token blocks\n")
    print(f"{'':<8}{'investigation':<44}|{'postmortem':<44}| all")
    for run in range(1, runs + 1):
        figures, sizes, elapsed = await run_once()
        print(f"run {run} ({elapsed:.0f} s); first investigation prompt {sizes[0]:,} characters,")
        print(f"  second {sizes[1]:,} (the prior record adds {sizes[1] - sizes[0]:+,})")
        print(_row("first", figures[0]))
        print(_row("second", figures[1]))
        first = sum(v[1] + v[3] for v in figures[0].values())
        second = sum(v[1] + v[3] for v in figures[1].values())
        calls = [sum(v[0] for v in f.values()) for f in figures]
        print(
            f"  second vs first: {calls[1]} vs {calls[0]} model calls, {second:,} vs {first:,}"
            f" tokens ({(second - first) / first:+.0%})\n"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    asyncio.run(main(parser.parse_args().runs))
