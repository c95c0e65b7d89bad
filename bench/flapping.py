"""Flapping: the notices a flapping alert gets from Alertmanager and from nightshift.

Each scenario is one alert (its own alertname, hence its own group) that fires and resolves in
scripted phases; the scenarios run side by side. At each phase change the same step goes, at
the same moment, to

* the real Prometheus Alertmanager (``prometheus-alertmanager`` on loopback, API v2: a firing
  alert without ``endsAt``, a resolved one with ``endsAt`` now). Its receiver has two webhooks:
  a counter in this process (column "Alertmanager") and a real ``nightshift run`` through
  ``POST /v1/webhooks/alertmanager`` (column "AM → nightshift");
* nightshift's own path in this process: an Observation to the rule engine (``AlertPipeline``,
  a ``port_latency_ms > 100`` rule with no ``for``) → SQLite → ``IncidentManager`` on the real
  clock (column "nightshift"); a counting Responder stands in for investigation/postmortem.

All use the same group_wait / group_interval / repeat_interval. Scenarios (gw = group_wait,
gi = group_interval): ``short`` 5 phases of 0.45·gw firing, 0.45·gw resolved (each shorter
than group_wait); ``long`` 3 phases of 2·gw firing, 2·gw resolved; ``fast`` 8 phases of
0.055·gi firing, 0.055·gi resolved (all within one group_interval); ``sustained`` phases of
0.15·gw firing, 0.15·gw resolved for 3·gi; ``blip`` fires once for gw/4 (a single blip:
Alertmanager sends nothing). With the default timings no phase change falls on one of
Alertmanager's group ticks. After the last phase everything runs on for 2·gw + 3·gi (the
daemon hears of a change up to gw + gi late, then waits its own timings).

Printed per scenario and system: the notices (F firing, R resolved, P [FLAPPING], r reminder),
incidents opened, postmortems (Responder.closed calls; the daemon's "Postmortem —" outbox
rows), and the seconds from the first fire to the first notice.

Usage: python -m bench.flapping [--group-wait 2] [--group-interval 4] [--scenarios short,long]
                                [--keep DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from daemon.alerting.pipeline import AlertPipeline
from daemon.alerting.settings import RuleSettings
from daemon.core.alerts import Observation
from daemon.core.clock import SystemClock
from daemon.incidents.manager import IncidentManager
from daemon.incidents.poster import IncidentPoster
from daemon.incidents.routing import Router
from daemon.incidents.runbooks import RunbookLibrary
from daemon.incidents.settings import IncidentSettings
from memory._codec import from_db_time
from memory.alerts import AlertRepo
from memory.incidents import IncidentRepo, SilenceRepo
from memory.outbox import OutboxRepo
from memory.store import SqliteStore
from tests.peers.alertmanager import Alertmanager, alertmanager_binary, free_port, rfc3339
from tests.support import DaemonProcess

TOKEN = "bench-flapping-token-5d1c9e"
KINDS = (("[FLAPPING]", "P"), ("[FIRING", "F"), ("[RESOLVED]", "R"), ("[Reminder", "r"))


@dataclass(frozen=True)
class Scenario:
    name: str
    alertname: str
    phases: int
    on: float  # seconds firing per phase
    off: float  # seconds resolved per phase
    about: str

    @property
    def length(self) -> float:
        return self.phases * (self.on + self.off)


def scenarios(gw: float, gi: float) -> list[Scenario]:
    return [
        Scenario("short", "FlapShort", 5, 0.45 * gw, 0.45 * gw, "phases shorter than group_wait"),
        Scenario("long", "FlapLong", 3, 2 * gw, 2 * gw, "phases longer than group_wait"),
        Scenario("fast", "FlapFast", 8, 0.055 * gi, 0.055 * gi, "all within one group_interval"),
        Scenario(
            "sustained",
            "FlapOn",
            max(round(3 * gi / (0.3 * gw)), 1),
            0.15 * gw,
            0.15 * gw,
            "short phases for 3 group_intervals",
        ),
        Scenario("blip", "Blip", 1, gw / 4, 0.0, "one blip shorter than group_wait"),
    ]


@dataclass
class Tally:
    """What one system did for one scenario."""

    notices: list[tuple[float, str]] = field(default_factory=list)  # (wall time, kind letter)
    incidents: int | None = None
    postmortems: int | None = None

    def first_after(self, start: float) -> str:
        return f"{min(t for t, _ in self.notices) - start:5.2f} s" if self.notices else "never"


class WebhookCounter:
    """An Alertmanager webhook receiver on loopback: every notification, by alertname."""

    def __init__(self) -> None:
        self.seen: dict[str, Tally] = defaultdict(Tally)
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}/hook"

    async def _hook(self, request: web.Request) -> web.Response:
        body: dict[str, Any] = await request.json()
        name = body.get("groupLabels", {}).get("alertname", "?")
        self.seen[name].notices.append((time.time(), "F" if body["status"] == "firing" else "R"))
        return web.Response(text="ok")

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


class CountingResponder:
    """Stands in for investigation (first notice) and postmortem (closed after a notice)."""

    def __init__(self) -> None:
        self.investigations: list[int] = []
        self.postmortems: list[int] = []

    def first_notified(self, incident_id: int) -> None:
        self.investigations.append(incident_id)

    def resolved(self, incident_id: int) -> None:
        pass

    def closed(self, incident_id: int) -> None:
        self.postmortems.append(incident_id)


class InProcess:
    """nightshift's own path: rule engine → SQLite → incident manager, real clock."""

    def __init__(self, work: Path, settings: IncidentSettings, plan: list[Scenario]) -> None:
        self.work, self.settings, self.plan = work, settings, plan
        self.clock = SystemClock()
        self.responder = CountingResponder()
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self.store = await SqliteStore.open(self.work / "inprocess.db")
        alerts = AlertRepo(self.store)
        self.manager = IncidentManager(
            self.settings,
            store=self.store, alerts=alerts, incidents=IncidentRepo(self.store, self.clock),
            silences=SilenceRepo(self.store, self.clock),
            poster=IncidentPoster(
                store=self.store, incidents=IncidentRepo(self.store, self.clock),
                outbox=OutboxRepo(self.store, self.clock), router=Router([], ["console"]),
                clock=self.clock,
            ),
            runbooks=RunbookLibrary(self.work / "runbooks"), clock=self.clock,
            responder=self.responder,
        )  # fmt: skip
        rules = [
            RuleSettings(
                name=s.alertname,
                metric="port_latency_ms",
                where={"target": s.name},
                op=">",
                threshold=100,
                summary="{target} is slow",
            )  # fmt: skip
            for s in self.plan
        ]
        self.pipeline = AlertPipeline(rules, alerts, self.clock, on_events=self.manager.wake)
        self.tasks = [
            asyncio.create_task(self.pipeline.run()),
            asyncio.create_task(self.manager.run()),
        ]

    def step(self, scenario: Scenario, firing: bool) -> None:
        self.pipeline.emit(
            Observation(
                source="port",
                metric="port_latency_ms",
                at=self.clock.now(),
                value=250.0 if firing else 5.0,
                labels={"target": scenario.name},
            )
        )

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.store.close()

    def tallies(self) -> dict[str, Tally]:
        found = read_outbox(self.work / "inprocess.db")
        titles = incident_titles(self.work / "inprocess.db")
        for tally in found.values():
            tally.postmortems = 0
        for incident_id in self.responder.postmortems:
            found[titles[incident_id]].postmortems = (
                found[titles[incident_id]].postmortems or 0
            ) + 1
        return found


def incident_titles(db: Path) -> dict[int, str]:
    conn = sqlite3.connect(db)
    try:
        return {
            row[0]: row[1].split(" ")[0] for row in conn.execute("SELECT id, title FROM incidents")
        }
    finally:
        conn.close()


def read_outbox(db: Path) -> dict[str, Tally]:
    """Notices, incidents and postmortems by alertname, from a nightshift database."""
    found: dict[str, Tally] = defaultdict(Tally)
    conn = sqlite3.connect(db)
    try:
        for name, count in conn.execute("SELECT title, count(*) FROM incidents GROUP BY title"):
            found[name.split(" ")[0]].incidents = count
        for text, created in conn.execute("SELECT text, created_at FROM outbox ORDER BY id"):
            if text.startswith("Postmortem — incident #"):
                title = text.split(": ", 1)[1].split(" ")[0]
                found[title].postmortems = (found[title].postmortems or 0) + 1
                continue
            for prefix, letter in KINDS:
                if text.startswith(prefix):
                    title = text.split("] ", 1)[1].split(" ")[0]
                    found[title].notices.append((from_db_time(created).timestamp(), letter))
    finally:
        conn.close()
    return found


async def play(scenario: Scenario, am: Alertmanager, local: InProcess) -> float:
    """Run one scenario's phases against both; return its start (wall clock)."""
    labels = {"alertname": scenario.alertname, "severity": "warning", "target": scenario.name}
    loop = asyncio.get_running_loop()
    began = loop.time()
    start = time.time()
    at = began
    for _ in range(scenario.phases):
        since = datetime.now(UTC)
        local.step(scenario, True)
        await am.post_alerts([{"labels": labels, "startsAt": rfc3339(since)}])
        at += scenario.on
        await asyncio.sleep(max(at - loop.time(), 0))
        local.step(scenario, False)
        ended = datetime.now(UTC)
        await am.post_alerts(
            [{"labels": labels, "startsAt": rfc3339(since), "endsAt": rfc3339(ended)}]
        )
        at += scenario.off
        await asyncio.sleep(max(at - loop.time(), 0))
    return start


def daemon_config(path: Path, port: int, gw: float, gi: float, repeat: float) -> None:
    path.write_text(
        f'default_route = ["console"]\n[api]\ntcp_port = {port}\nwebhook_token = "{TOKEN}"\n'
        f"[incidents]\ngroup_wait_seconds = {gw}\ngroup_interval_seconds = {gi}\n"
        f"repeat_interval_seconds = {repeat}\n[watchers.host]\nenabled = false\n"
    )


def describe(tally: Tally | None, start: float) -> str:
    if tally is None:
        tally = Tally()
    letters = "".join(letter for _, letter in sorted(tally.notices)) or "-"
    incidents = "-" if tally.incidents is None else str(tally.incidents)
    postmortems = "-" if tally.postmortems is None else str(tally.postmortems)
    return (
        f"{len(tally.notices):>7}  {letters:<12} {incidents:>9}  {postmortems:>11}  "
        f"{tally.first_after(start):>12}"
    )


async def main(args: argparse.Namespace) -> None:
    if alertmanager_binary() is None:
        sys.exit(
            "prometheus-alertmanager is not installed (apt-get install prometheus-alertmanager)"
        )
    gw, gi, repeat = args.group_wait, args.group_interval, args.repeat_interval
    plan = [s for s in scenarios(gw, gi) if s.name in args.scenarios.split(",")]
    settings = IncidentSettings(
        group_wait_seconds=gw, group_interval_seconds=gi, repeat_interval_seconds=repeat
    )
    tail = 2 * gw + 3 * gi
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep or tmp)
        await asyncio.to_thread(work.mkdir, parents=True, exist_ok=True)
        counter = WebhookCounter()
        await counter.start()
        port = free_port()
        daemon_config(work / "config.toml", port, gw, gi, repeat)
        daemon = DaemonProcess(work / "config.toml", work / "state")
        await daemon.start()
        local = InProcess(work, settings, plan)
        await local.start()
        am = Alertmanager(
            work / "am", counter.url, TOKEN, group_wait=f"{gw:g}s", group_interval=f"{gi:g}s",
            repeat_interval=f"{repeat:g}s",
            also_to=[f"http://127.0.0.1:{port}/v1/webhooks/alertmanager"],
        )  # fmt: skip
        await am.start()
        try:
            starts = await asyncio.gather(*(play(s, am, local) for s in plan))
            await asyncio.sleep(tail)
        finally:
            await am.stop()
            await local.stop()
            await daemon.stop()
            await counter.stop()
        mine = local.tallies()
        theirs = read_outbox(work / "state" / "nightshift.db")

    print(
        f"flapping: group_wait {gw:g} s, group_interval {gi:g} s, repeat_interval {repeat:g} s "
        f"(all three systems); ran on {tail:g} s after the last phase"
    )
    print(
        f"{'scenario':<40} {'system':<16} {'notices':>7}  {'kinds':<12} {'incidents':>9}  "
        f"{'postmortems':>11}  {'first notice':>12}"
    )
    for scenario, start in zip(plan, starts, strict=True):
        head = f"{scenario.name}: {scenario.phases}× {scenario.on:g} s on / {scenario.off:g} s off"
        rows = [
            ("Alertmanager", counter.seen.get(scenario.alertname)),
            ("nightshift", mine.get(scenario.alertname)),
            ("AM → nightshift", theirs.get(scenario.alertname)),
        ]
        for index, (system, tally) in enumerate(rows):
            label = head if index == 0 else (f"  ({scenario.about})" if index == 1 else "")
            print(f"{label:<40} {system:<16} {describe(tally, start)}")
    print("kinds: F firing, R resolved, P [FLAPPING], r reminder")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group-wait", type=float, default=2.0)
    parser.add_argument("--group-interval", type=float, default=4.0)
    parser.add_argument("--repeat-interval", type=float, default=3600.0)
    parser.add_argument("--scenarios", default="short,long,fast,sustained,blip")
    parser.add_argument("--keep", type=Path, help="work in this directory and keep its databases")
    asyncio.run(main(parser.parse_args()))
