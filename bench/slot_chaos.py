"""Slot outcome accounting under random SIGKILLs: the real daemon (`nightshift run`) with tasks
covering every catch-up policy, killed ``--kills`` times, then audited from its SQLite file.

Tasks: intervals of 1-3 s and a cron ``* * * * *``; catch-up ``skip``, ``once`` (the latest) and
``each`` (the latest ``catch_up_max``); ``on_interrupt`` report and retry; commands that sleep
0-3 s, so kills land mid-run and a slow run makes the next wake-up find the task busy. Each
command appends ``start <task> <slot>`` (and ``done …`` when it ends) to a ticks file: the
executions as the programs saw them.

Chaos: ``--kills`` times, the daemon runs a random 0.5-``--max-up`` s after it is ready, gets
SIGKILL, and may stay down a random 0-``--max-down`` s (slots are missed); then a last start,
``--settle`` s for catch-up to finish, and a clean stop (SIGTERM).

Audit (a read-only connection): for every task, every slot of its own schedule from its first
arm (``created_at``, exclusive) to the final stop is classified as

- run: claimed by the wake-up and finished (ok / nothing_to_do / failed / timeout);
- caught up: finished, claimed by a later process than the one the slot fell in (the slot is
  older than the claiming process's start);
- skipped: a ``skipped`` row (its reason says how many slots it covers: "N slot(s) missed while
  down" covers the N slots ending at its own; "the previous run is still going" covers its own);
- interrupted: cut by a kill (told to the owner, or retried once: ``on_interrupt``), or by the
  final stop (told at the next start);
- pending: unclaimed in the last ``--margin`` s before the final stop (not due yet, or the
  wake-up raced the SIGTERM) — not a defect;
- UNACCOUNTED: none of these (target 0).

Also counted: slots executed twice (from the ticks file; target 0), interrupted runs nobody was
told of, runs the ticks file saw but the database does not record as run, claims off the
schedule, and ``PRAGMA integrity_check``.

Usage: python -m bench.slot_chaos [--kills 50] [--seed 1] [--keep DIR]
"""

from __future__ import annotations

import argparse
import bisect
import json
import random
import re
import signal
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._daemon import start_daemon, stop
from daemon.core.schedule import parse_schedule, slots_between
from memory._codec import from_db_time, to_db_time

# name, schedule, catch-up, catch_up_max, on_interrupt, seconds the command sleeps
TASKS: list[tuple[str, str, str, int, str, float]] = [
    ("skip-1s", "interval_seconds = 1", "skip", 3, "report", 0.4),
    ("once-1s", "interval_seconds = 1", "once", 3, "report", 0.0),
    ("once-2s", "interval_seconds = 2", "once", 3, "report", 1.0),
    ("each-1s", "interval_seconds = 1", "each", 5, "report", 0.3),
    ("each-3s", "interval_seconds = 3", "each", 3, "report", 2.0),
    ("retry-2s", "interval_seconds = 2", "once", 3, "retry", 1.5),
    ("busy-1s", "interval_seconds = 1", "once", 3, "report", 2.5),
    ("cron-once", 'cron = "* * * * *"', "once", 3, "report", 3.0),
    ("cron-each", 'cron = "* * * * *"', "each", 2, "retry", 1.0),
    ("cron-skip", 'cron = "* * * * *"', "skip", 3, "report", 0.0),
]
OUTCOMES = ["run", "caught up", "skipped", "interrupted", "pending", "UNACCOUNTED"]
MISSED = re.compile(r"^(\d+) slot\(s\) ")
FINISHED = {"ok", "nothing_to_do", "failed", "timeout"}


def config_text(ticks: Path) -> str:
    lines = ["[watchers.host]", "enabled = false", ""]
    for name, schedule, catch_up, most, interrupt, seconds in TASKS:
        script = (
            f'echo "start $NIGHTSHIFT_TASK $NIGHTSHIFT_SLOT" >> {ticks}; sleep {seconds}; '
            f'echo "done $NIGHTSHIFT_TASK $NIGHTSHIFT_SLOT" >> {ticks}; echo "$NIGHTSHIFT_SLOT"'
        )
        lines += [
            "[[scheduler.tasks]]",
            f'name = "{name}"',
            schedule,
            f"command = {json.dumps(['sh', '-c', script])}",
            f'catch_up = "{catch_up}"',
            f"catch_up_max = {most}",
            f'on_interrupt = "{interrupt}"',
            "",
        ]
    return "\n".join(lines)


@dataclass
class Life:
    """One daemon process: spawned (wall clock), then killed or stopped."""

    spawned: datetime
    ready_s: float = 0.0
    ended: datetime | None = None


@dataclass
class Audit:
    """One task's slots by outcome, and what did not add up."""

    outcomes: Counter[str] = field(default_factory=Counter)
    detail: Counter[str] = field(default_factory=Counter)
    twice: int = 0
    unaccounted: list[str] = field(default_factory=list)


def chaos(work: Path, kills: int, rng: random.Random, args: argparse.Namespace) -> list[Life]:
    config = work / "config.toml"
    lives: list[Life] = []
    for number in range(kills + 1):
        (work / "notify.sock").unlink(missing_ok=True)
        life = Life(datetime.now(UTC))
        proc, life.ready_s = start_daemon(work, config)
        lives.append(life)
        if number == kills:  # the last start: catch-up finishes, then a clean stop
            time.sleep(args.settle)
            life.ended = datetime.now(UTC)
            code = stop(proc)
            print(f"  clean stop: exit {code}", flush=True)
            return lives
        time.sleep(rng.uniform(0.5, args.max_up))
        proc.send_signal(signal.SIGKILL)
        life.ended = datetime.now(UTC)
        proc.wait(30)
        down = rng.choice([0.0, rng.uniform(0, args.max_down)])
        if (number + 1) % 10 == 0:
            print(f"  {number + 1} kills", flush=True)
        time.sleep(down)
    raise AssertionError("unreachable")


def audit(db: Path, ticks: Path, lives: list[Life], margin: float) -> dict[str, Audit]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    end = lives[-1].ended
    assert end is not None
    starts = [life.spawned for life in lives]
    executed = Counter(
        (line.split()[1], line.split()[2])
        for line in ticks.read_text().splitlines()
        if line.startswith("start ")
    )
    result: dict[str, Audit] = {}
    for task in conn.execute("SELECT id, name, spec, created_at FROM tasks ORDER BY id"):
        spec, created = json.loads(task["spec"]), from_db_time(task["created_at"])
        schedule = parse_schedule(
            cron=spec["cron"], interval_seconds=spec["interval_seconds"],
            timezone=spec["timezone"] or "UTC", anchor=created,
        )  # fmt: skip
        expected = [to_db_time(slot) for slot in slots_between(schedule, created, end, 10**6)]
        rows = {
            row["slot"]: row
            for row in conn.execute("SELECT * FROM task_runs WHERE task_id = ?", (task["id"],))
        }
        out = result[task["name"]] = Audit()
        skipped: set[str] = set()  # slots a skipped row covers
        for slot, row in rows.items():
            status = row["status"]
            if slot.startswith(("manual:", "retry:")):
                how = f" ({told(row)})" if status == "interrupted" else ""
                out.detail[f"{slot.split(':')[0]} runs: {status}{how}"] += 1
            elif slot not in expected:
                out.detail["claims off the schedule"] += 1
            elif status == "skipped":
                found = MISSED.match(row["error"] or "")
                count = int(found.group(1)) if found else 1
                out.detail[f"skipped: {MISSED.sub('N slot(s) ', row['error'] or '')}"] += count
                i = expected.index(slot)
                for earlier in expected[max(0, i - count + 1) : i]:
                    if earlier in rows:
                        out.detail["skip rows counting a claimed slot"] += 1
                    skipped.add(earlier)
                skipped.add(slot)
            elif status in FINISHED:
                started = from_db_time(row["started_at"])
                life = starts[max(0, bisect.bisect_right(starts, started) - 1)]
                outcome = "caught up" if from_db_time(slot) < life else "run"
                out.outcomes[outcome] += 1
                if status != "ok":
                    out.detail[f"{outcome}: {status}"] += 1
            elif status == "interrupted":
                out.outcomes["interrupted"] += 1
                out.detail[f"interrupted: {told(row)}"] += 1
            else:
                out.detail[f"left {status}"] += 1
        out.outcomes["skipped"] = len(skipped)
        pending_from = to_db_time(end - timedelta(seconds=margin))
        for slot in expected:
            if slot in rows or slot in skipped:
                continue
            if slot > pending_from:
                out.outcomes["pending"] += 1
            else:
                out.outcomes["UNACCOUNTED"] += 1
                out.unaccounted.append(slot[11:19])
        for (name, slot), times in executed.items():
            if name != task["name"]:
                continue
            out.twice += times - 1
            if slot not in rows or rows[slot]["status"] == "skipped":
                out.detail["executed but not recorded as run"] += 1
    integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    conn.close()
    print(f"  PRAGMA integrity_check: {integrity}")
    return result


def told(row: sqlite3.Row) -> str:
    """How an interrupted run was settled."""
    if row["settled"]:
        return "told" if row["outbox_id"] is not None else "retried"
    if row["error"] == "cancelled at shutdown":
        return "at the final stop (told at the next start)"
    return "NOBODY TOLD"


def report(result: dict[str, Audit], lives: list[Life]) -> None:
    first = max(len(name) for name in result) + 2

    def line(cells: list[str]) -> None:
        print(cells[0].ljust(first) + "".join(cell.rjust(13) for cell in cells[1:]))

    line(["task", *OUTCOMES, "run twice"])
    totals: Counter[str] = Counter()
    twice = 0
    for name, out in result.items():
        line([name, *(str(out.outcomes[o]) for o in OUTCOMES), str(out.twice)])
        totals.update(out.outcomes)
        twice += out.twice
    line(["total", *(str(totals[o]) for o in OUTCOMES), str(twice)])
    details: Counter[str] = Counter()
    for out in result.values():
        details.update(out.detail)
    print("details:")
    for what, count in sorted(details.items()):
        print(f"  {what}: {count}")
    for name, out in result.items():
        if out.unaccounted:
            print(f"  {name} unaccounted at {', '.join(out.unaccounted[:20])}")
    ready = sorted(life.ready_s for life in lives)
    print(f"daemon starts: {len(lives)}, ready in {ready[0]:.2f}-{ready[-1]:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-up", type=float, default=4.0, help="seconds up before a kill")
    parser.add_argument("--max-down", type=float, default=5.0, help="seconds down after one")
    parser.add_argument("--settle", type=float, default=15.0, help="last run before the stop")
    parser.add_argument("--margin", type=float, default=1.5, help="pending window at the stop")
    parser.add_argument("--keep", type=Path, help="work here (kept) instead of a temp dir")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="slot-chaos-") as temp:
        work = args.keep or Path(temp)
        work.mkdir(parents=True, exist_ok=True)
        ticks = work / "ticks.txt"
        (work / "config.toml").write_text(config_text(ticks))
        print(f"slot chaos: {args.kills} SIGKILLs, seed {args.seed}, {len(TASKS)} tasks in {work}")
        began = time.perf_counter()
        lives = chaos(work, args.kills, rng, args)
        print(f"  {time.perf_counter() - began:.0f} s of chaos")
        result = audit(work / "state" / "nightshift.db", ticks, lives, args.margin)
        report(result, lives)


if __name__ == "__main__":
    main()
