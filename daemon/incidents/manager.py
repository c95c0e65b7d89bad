"""Alert events → incidents and notifications, with Alertmanager's discipline.

Events are committed to ``alert_events`` before anything else (``accept``), then handled in
order: each firing alert joins the open incident of its group (``group_by`` labels) or opens
one. Notifications are decided per incident at its ``flush_at``:

* a new incident waits ``group_wait`` to collect its alerts, then notifies once;
* a change (an alert added or resolved) notifies at most once per ``group_interval``;
* an unchanged, still-firing incident is repeated every ``repeat_interval``;
* when every alert has resolved, a resolved notice is sent (if the incident was ever notified);
  the incident closes (and its postmortem is written) once nothing has fired again for
  ``group_interval`` — a re-fire before that joins it, as Alertmanager's group would.

Flapping (an alert that fires and resolves faster than ``group_wait``) is never lost: an
incident whose alerts all resolved before its first notice stays open for ``group_interval``
after its ``group_wait``, so a re-fire joins it and is announced at once; one that fired more
than once is announced as flapping even if it is resolved at that moment. An alert that goes on
flapping after its resolved (or flapping) notice stays in the same incident: one incident, one
postmortem, updates at most once per ``group_interval``. A single blip that
never comes back closes silently (as Alertmanager does), with the reason in its timeline, and
starts no investigation or postmortem. A notice says how often its most restless alert fired.

Silenced, in-maintenance and inhibited alerts are recorded but not notified. A muted incident
is looked at again when its silence ends (or at once when a silence is expired or added by a
person); the notice that follows waits only for group_interval, and the end of the mute is in
its timeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Protocol

import aiosqlite

from daemon.core.alerts import AlertEvent
from daemon.core.clock import Clock
from daemon.incidents import text as incident_text
from daemon.incidents.muting import Muter, silenced_until
from daemon.incidents.poster import IncidentPoster
from daemon.incidents.runbooks import Runbook, RunbookLibrary
from daemon.incidents.settings import IncidentSettings
from memory.alerts import AlertRepo, StoredAlertEvent
from memory.incidents import Incident, IncidentAlert, IncidentRepo, SilenceRepo
from memory.store import SqliteStore

log = logging.getLogger(__name__)

BATCH = 500
MUTED_RECHECK_SECONDS = 60.0
BACKLOG_PATIENCE_SECONDS = 10.0  # a group waits this long at least for its backlogged events
# notified_digest prefix: the resolution was announced; the incident closes if nothing re-fires
SETTLING = "resolved:"


class Responder(Protocol):
    """What happens beside notifications: investigation on the first one, postmortem at the end."""

    def first_notified(self, incident_id: int) -> None: ...

    def resolved(self, incident_id: int) -> None:
        """Every alert resolved and that was announced (it may still fire again)."""

    def closed(self, incident_id: int) -> None:
        """An announced incident stayed resolved for group_interval and is closed."""


class IncidentManager:
    """Owns incidents; the only writer of the incidents tables besides timeline notes."""

    def __init__(
        self,
        settings: IncidentSettings,
        *,
        store: SqliteStore,
        alerts: AlertRepo,
        incidents: IncidentRepo,
        silences: SilenceRepo,
        poster: IncidentPoster,
        runbooks: RunbookLibrary,
        clock: Clock,
        responder: Responder | None = None,
    ) -> None:
        """``poster`` queues the notices; ``responder`` (investigation, postmortem) hears of
        first notices, resolutions and closes; None: notices only."""
        self.settings = settings
        self.store = store
        self.alert_repo = alerts
        self.repo = incidents
        self.silences = silences
        self.poster = poster
        self.runbooks = runbooks
        self.clock = clock
        self.muter = Muter(settings.inhibit, settings.maintenance)
        self.responder = responder
        self._wake = asyncio.Event()
        self._silences_changed = False

    def configure(self, settings: IncidentSettings) -> None:
        """Apply reloaded settings (timings, inhibition, maintenance, remediation)."""
        self.settings = settings
        self.muter = Muter(settings.inhibit, settings.maintenance)
        self.wake()

    # -- intake ---------------------------------------------------------------------------------

    async def accept(self, events: Sequence[AlertEvent]) -> None:
        """Commit events from outside the rule engine (Alertmanager); handled soon after."""
        await self.alert_repo.accept(events)
        self.wake()

    def wake(self) -> None:
        self._wake.set()

    def silences_changed(self) -> None:
        """A person added or expired a silence: look at every muted incident again now."""
        self._silences_changed = True
        self.wake()

    # -- the loop -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Handle events and due notifications forever; sleeps until there is something to do."""
        while True:
            self._wake.clear()
            await self.step()
            deadline = await self.repo.next_flush()
            timeout = None
            if deadline is not None:
                timeout = max((deadline - self.clock.now()).total_seconds(), 0.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def step(self) -> None:
        """One pass: take every unhandled event, then send what is due. Tests call this."""
        if self._silences_changed:
            self._silences_changed = False
            await self.repo.flush_muted_now(self.clock.now())
        batch = await self.alert_repo.unhandled(BATCH)
        while batch:
            await self._handle(batch)
            following = await self.alert_repo.unhandled(BATCH) if len(batch) == BATCH else []
            # A storm's backlog must not hold up what is due — but a group with events still
            # in the backlog (one big snapshot) waits for them: one state, one notice.
            await self._flush_due(skip={self._group(s.event)[0] for s in following})
            batch = following
        await self._flush_due()

    async def _flush_due(self, skip: set[str] | frozenset[str] = frozenset()) -> None:
        """Flush what is due; a group in ``skip`` (events still in the backlog) waits for them,
        but never longer than group_interval (at least BACKLOG_PATIENCE) past its due time: a
        big snapshot is announced whole, a storm that goes on is still announced."""
        now = self.clock.now()
        patience = timedelta(
            seconds=max(self.settings.group_interval_seconds, BACKLOG_PATIENCE_SECONDS)
        )
        for incident in await self.repo.due(now):
            waited = now - (incident.flush_at or now)
            if incident.group_key not in skip or waited >= patience:
                await self._flush(incident)

    # -- events ---------------------------------------------------------------------------------

    async def _handle(self, batch: Sequence[StoredAlertEvent]) -> None:
        now = self.clock.now()
        async with self.store.write() as db:  # one transaction per batch
            for stored in batch:
                await self._apply(db, stored.event, now)
            await AlertRepo.mark_handled(db, [s.id for s in batch])

    async def _apply(self, db: aiosqlite.Connection, event: AlertEvent, now: datetime) -> None:
        incident_id, previous = await IncidentRepo.open_alert(db, event.fingerprint)
        if event.status == "resolved":
            if incident_id is None or previous != "firing":
                return  # unknown or already resolved: a snapshot repeat, nothing new
            await IncidentRepo.put_alert(db, incident_id, event)
            await IncidentRepo.add_event(db, incident_id, now, "alert resolved", _label(event))
            await self._schedule_update(db, incident_id, now)
            return
        if incident_id is None:
            key, group_labels = self._group(event)
            incident_id = await IncidentRepo.open_for_group(db, key)
            if incident_id is None:
                # A group that just had a notice (e.g. resolved) waits out its group_interval.
                flush_at = now + timedelta(seconds=self.settings.group_wait_seconds)
                last = await IncidentRepo.last_notified(db, key)
                if last is not None:
                    interval = timedelta(seconds=self.settings.group_interval_seconds)
                    flush_at = max(flush_at, last + interval)
                incident_id = await IncidentRepo.create(
                    db,
                    group_key=key,
                    title=_title(event, group_labels),
                    severity=event.severity,
                    labels=group_labels,
                    opened_at=now,
                    flush_at=flush_at,
                )
                await IncidentRepo.add_event(
                    db, incident_id, now, "opened", _title(event, group_labels)
                )
        await IncidentRepo.put_alert(db, incident_id, event)
        if previous == "firing":
            return  # a repeat of a firing alert (Alertmanager resends snapshots)
        await IncidentRepo.raise_severity(db, incident_id, event.severity)
        await IncidentRepo.add_event(db, incident_id, now, "alert firing", _label(event))
        await self._schedule_update(db, incident_id, now, refire=previous == "resolved")

    async def _schedule_update(
        self, db: aiosqlite.Connection, incident_id: int, now: datetime, *, refire: bool = False
    ) -> None:
        """A change is announced at the next group_interval tick; before the first notice, the
        flush set at creation stands — but a re-fire of a blip held open past its group_wait
        is announced at once (no sooner than group_interval after the group's last notice)."""
        state = await IncidentRepo.flush_state(db, incident_id)
        if state.notified_at is None:
            if refire and state.flush_at is not None:
                wait = timedelta(seconds=self.settings.group_wait_seconds)
                soonest = max(now, state.opened_at + wait)
                last = await IncidentRepo.last_notified(db, state.group_key)
                if last is not None:
                    interval = timedelta(seconds=self.settings.group_interval_seconds)
                    soonest = max(soonest, last + interval)
                if state.flush_at > soonest:
                    await IncidentRepo.set_flush(db, incident_id, soonest)
            return
        interval = timedelta(seconds=self.settings.group_interval_seconds)
        await IncidentRepo.set_flush(db, incident_id, max(now, state.notified_at + interval))

    def _group(self, event: AlertEvent) -> tuple[str, dict[str, str]]:
        labels = {name: event.labels.get(name, "") for name in self.settings.group_by}
        key = "\x1f".join(f"{name}={value}" for name, value in labels.items())
        return key, {k: v for k, v in labels.items() if v}

    # -- notifications --------------------------------------------------------------------------

    async def _flush(self, incident: Incident) -> None:
        now = self.clock.now()
        alerts = await self.repo.alerts(incident.id)
        muted = await self._muted(alerts, now)
        visible = [a for a in alerts if a.fingerprint not in muted]
        firing = [a for a in visible if a.status == "firing"]
        digest = _digest(visible)
        resolved = all(a.status == "resolved" for a in alerts)
        announced = incident.notifications > 0
        first = told_resolved = closed = False
        settle = timedelta(seconds=self.settings.group_interval_seconds)
        async with self.store.write() as db:
            fired = await IncidentRepo.most_fired(db, incident.id)
            if resolved and not announced:
                outcome = await self._resolved_unannounced(db, incident, alerts, fired, now)
                if outcome is None:
                    return  # held open: a re-fire joins it
                told_resolved = outcome
            elif resolved and incident.notified_digest == SETTLING + digest:
                closed = await self._close_if_settled(db, incident, now)
            elif resolved:
                if self.settings.send_resolved:
                    await self.poster.send(
                        db,
                        incident,
                        incident_text.resolved_notice(incident, alerts, now),
                        "resolved",
                        now,
                    )
                    await IncidentRepo.mark_notified(db, incident.id, now, SETTLING + digest)
                else:
                    await IncidentRepo.set_digest(db, incident.id, SETTLING + digest)
                await IncidentRepo.add_event(
                    db, incident.id, now, "resolved", "every alert resolved"
                )
                await IncidentRepo.replace_flush(db, incident.id, now + settle)
                told_resolved = True
            elif not firing:
                if incident.notified_digest != "muted:" + digest:
                    reasons = sorted(set(muted.values()))
                    await IncidentRepo.add_event(
                        db, incident.id, now, "not notified", "; ".join(reasons)
                    )
                    await IncidentRepo.set_digest(db, incident.id, "muted:" + digest)
                recheck = now + timedelta(seconds=MUTED_RECHECK_SECONDS)
                silences = await self.silences.active()
                ends = [
                    silenced_until(a.labels, now, silences) for a in alerts if a.status == "firing"
                ]
                if ends and all(ends):  # every alert silenced: look again when the first ends
                    recheck = min(e for e in ends if e is not None)
                await IncidentRepo.replace_flush(db, incident.id, recheck)
            else:
                repeat = timedelta(seconds=self.settings.repeat_interval_seconds)
                changed = digest != incident.notified_digest
                due_repeat = (
                    incident.notified_at is not None and incident.notified_at + repeat <= now
                )
                if (incident.notified_digest or "").startswith("muted:"):
                    await IncidentRepo.add_event(
                        db, incident.id, now, "unmuted", "no longer silenced, in maintenance or "
                        "inhibited"
                    )  # fmt: skip
                if changed or due_repeat:
                    first = incident.notifications == 0
                    runbook = self._runbook(firing)
                    text = incident_text.notification(
                        incident, alerts, muted=muted, runbook=runbook, reminder=not changed,
                        fired=fired,
                    )  # fmt: skip
                    kind = "reminder" if not changed else "notified"
                    await self.poster.send(db, incident, text, kind, now)
                    await IncidentRepo.mark_notified(db, incident.id, now, digest)
                    await IncidentRepo.replace_flush(db, incident.id, now + repeat)
                else:
                    assert incident.notified_at is not None
                    await IncidentRepo.replace_flush(db, incident.id, incident.notified_at + repeat)
        self.poster.wake_outbox()
        if self.responder is not None:  # nobody heard of a blip: no postmortem for it
            if told_resolved:
                self.responder.resolved(incident.id)
            if closed:
                self.responder.closed(incident.id)
            elif first:
                self.responder.first_notified(incident.id)

    async def _close_if_settled(
        self, db: aiosqlite.Connection, incident: Incident, now: datetime
    ) -> bool:
        """The resolution was announced: close the incident once no alert has fired or
        resolved for group_interval (a flap since then only pushes the close back)."""
        last = await IncidentRepo.last_alert_change(db, incident.id) or incident.opened_at
        quiet_from = max(last, incident.notified_at or last)
        settle = timedelta(seconds=self.settings.group_interval_seconds)
        if now < quiet_from + settle:
            await IncidentRepo.replace_flush(db, incident.id, quiet_from + settle)
            return False
        await IncidentRepo.resolve(db, incident.id, last)
        fired = await IncidentRepo.most_fired(db, incident.id)
        why = "nothing fired again within group_interval"
        await IncidentRepo.add_event(
            db, incident.id, now, "closed", why + (f"; fired {fired} times" if fired > 1 else "")
        )
        return True

    async def _resolved_unannounced(
        self,
        db: aiosqlite.Connection,
        incident: Incident,
        alerts: Sequence[IncidentAlert],
        fired: int,
        now: datetime,
    ) -> bool | None:
        """Every alert resolved before the first notice. Flapping is announced (True) and the
        incident settles like a resolved one; a blip is held open for group_interval after
        group_wait (None), then closed silently (False)."""
        if fired >= 2:
            text = incident_text.flapping_notice(incident, alerts, fired)
            await self.poster.send(db, incident, text, "notified", now)
            await IncidentRepo.mark_notified(db, incident.id, now, SETTLING + _digest(alerts))
            await IncidentRepo.add_event(
                db, incident.id, now, "resolved", f"flapped: fired {fired} times, now resolved"
            )
            settle = timedelta(seconds=self.settings.group_interval_seconds)
            await IncidentRepo.replace_flush(db, incident.id, now + settle)
            return True
        hold = timedelta(
            seconds=self.settings.group_wait_seconds + self.settings.group_interval_seconds
        )
        if now < incident.opened_at + hold:
            await IncidentRepo.replace_flush(db, incident.id, incident.opened_at + hold)
            return None
        await IncidentRepo.resolve(db, incident.id, now)
        await IncidentRepo.add_event(
            db, incident.id, now, "resolved", "resolved within group_wait; not announced"
        )
        return False

    async def _muted(self, alerts: Sequence[IncidentAlert], now: datetime) -> dict[str, str]:
        firing = [a for a in alerts if a.status == "firing"]
        if not firing:
            return {}
        silences = await self.silences.active()
        if not silences and not self.muter.windows and not self.muter.inhibitions:
            return {}
        others = (
            [a.labels for a in await self.repo.firing_alerts()] if self.muter.inhibitions else []
        )
        found = {}
        for alert in firing:
            reason = self.muter.reason(alert.labels, now=now, silences=silences, firing=others)
            if reason is not None:
                found[alert.fingerprint] = reason
        return found

    def _runbook(self, firing: Sequence[IncidentAlert]) -> Runbook | None:
        for alert in firing:
            found = self.runbooks.find(alert.labels, alert.annotations)
            if found is not None:
                return found
        return None


def _label(event: AlertEvent) -> str:
    summary = event.annotations.get("summary") or event.name
    return f"{event.name}: {summary}" if summary != event.name else summary


def _title(event: AlertEvent, group_labels: dict[str, str]) -> str:
    extra = [f"{k}={v}" for k, v in group_labels.items() if k != "alertname"]
    name = group_labels.get("alertname") or event.name
    return name + (f" ({', '.join(extra)})" if extra else "")


def _digest(alerts: Sequence[IncidentAlert]) -> str:
    text = ",".join(sorted(f"{a.fingerprint}:{a.status}" for a in alerts))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
