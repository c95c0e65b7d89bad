"""Where an incident's messages go: its routes, threaded after the first notice, queued in the
outbox with a timeline note. Used by the incident manager for notices and by the response for
follow-ups (findings, remediation, postmortem), so neither needs the other to post."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import aiosqlite

from daemon.core.clock import Clock
from daemon.incidents.routing import Router
from integrations.outbox import THREAD_REF
from memory.incidents import Incident, IncidentRepo
from memory.outbox import OutboxRepo
from memory.store import SqliteStore

FOLLOW_UPS = ("findings", "remediation", "postmortem")  # not tied to a notification sequence
# Channels where every message after an incident's first notification replies in its thread.
THREADED_CHANNELS = ("slack", "matrix")


class IncidentPoster:
    """Queues an incident's messages for every route of the incident."""

    def __init__(
        self,
        *,
        store: SqliteStore,
        incidents: IncidentRepo,
        outbox: OutboxRepo,
        router: Router,
        clock: Clock,
        wake_outbox: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.repo = incidents
        self.outbox = outbox
        self.router = router
        self.clock = clock
        self.wake_outbox = wake_outbox
        self.sent = 0

    async def post(self, incident_id: int, text: str, kind: str) -> None:
        """Send a follow-up (findings, remediation, postmortem) where the incident's notices go."""
        incident = await self.repo.get(incident_id)
        async with self.store.write() as db:
            await self.send(db, incident, text, kind)
        self.wake_outbox()

    def origin(self, incident: Incident) -> str | None:
        """Where approval prompts for this incident go ("channel|target|"), if anywhere."""
        destinations = self.router.destinations({**incident.labels, "severity": incident.severity})
        if not destinations:
            return None
        first = destinations[0]
        return f"{first.channel}|{first.target}|"

    async def send(
        self,
        db: aiosqlite.Connection,
        incident: Incident,
        text: str,
        kind: str,
        at: datetime | None = None,
    ) -> None:
        """Queue ``text`` for every route of the incident in the transaction ``db``; ``at`` is
        when the notice counts as sent (the moment its flush decided it)."""
        labels = {**incident.labels, "severity": incident.severity}
        destinations = self.router.destinations(labels)
        sequence = incident.notifications + 1
        for dest in destinations:
            key = f"incident:{incident.id}:{kind}:{sequence}:{dest.channel}:{dest.target}"
            first = f"incident:{incident.id}:notified:1:{dest.channel}:{dest.target}"
            threaded = dest.channel in THREADED_CHANNELS and key != first
            await self.outbox.enqueue(
                dest.channel,
                dest.target,
                text,
                thread=THREAD_REF + first if threaded else None,
                dedupe_key=None if kind in FOLLOW_UPS else key,
                proactive=incident.severity != "critical",  # waits out quiet hours
            )
        self.sent += 1
        where = ", ".join(f"{d.channel}{':' + d.target if d.target else ''}" for d in destinations)
        await IncidentRepo.add_event(
            db, incident.id, at or self.clock.now(), kind, f"to {where or 'nobody (no route)'}"
        )
