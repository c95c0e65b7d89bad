"""Incident commands that need no LLM, shared by every chat channel and the CLI.

incidents                     open incidents (and the latest resolved ones)
incidents show ID             one incident: alerts, timeline, findings, postmortem
silence ID DURATION [why]     silence an incident's alerts (e.g. `silence 12 2h deploy`)
silence MATCHER… DURATION [why]   e.g. `silence alertname=DiskFull mount=~/var.* 30m`
silences                      active and recent silences
unsilence ID                  expire a silence now
"""

from __future__ import annotations

from datetime import timedelta

from daemon.alerting.matchers import Matcher, parse_matchers
from daemon.core.access import Action
from daemon.core.clock import Clock
from daemon.core.durations import DurationError, looks_like_duration, parse_duration
from daemon.core.errors import CommandError, RecordNotFound
from daemon.incidents import text as incident_text
from memory.incident_records import IncidentRecordRepo
from memory.incidents import IncidentRepo, SilenceRepo

MAX_SILENCE = timedelta(days=30)
REQUIRED: dict[str, Action] = {
    "incidents": "ask",
    "incident": "ask",
    "silences": "ask",
    "silence": "silence",
    "unsilence": "silence",
}
USAGE = (
    "Usage: incidents · incidents show ID · silence ID|MATCHERS DURATION [reason] · silences · "
    "unsilence ID (durations like 30m, 1.5h, 1d)"
)


def silence_length(text: str) -> timedelta:
    """How long a silence lasts: a duration (``30m``, ``1.5h``, ``1h30m``) of at most 30 days."""
    try:
        length = parse_duration(text)
    except DurationError as exc:
        raise CommandError(str(exc)) from None
    if length > MAX_SILENCE:
        raise CommandError("a silence can last at most 30 days")
    return length


class IncidentCommands:
    """Answers the commands above with plain text."""

    def __init__(
        self,
        incidents: IncidentRepo,
        silences: SilenceRepo,
        clock: Clock,
        on_silence_change: object = None,
        records: IncidentRecordRepo | None = None,
    ) -> None:
        self._incidents = incidents
        self._records = records
        self._silences = silences
        self._clock = clock
        self._on_change = on_silence_change

    @staticmethod
    def required(word: str) -> Action | None:
        """The permission a command word needs, or None when it is not one of ours."""
        return REQUIRED.get(word)

    async def run(self, word: str, rest: str, actor: str) -> str:
        """Run one command; bad input comes back as a CommandError's helpful text."""
        try:
            return await self._dispatch(word, rest.split(), actor)
        except CommandError as exc:
            return f"{exc}\n{USAGE}"
        except RecordNotFound as exc:
            return str(exc)

    async def _dispatch(self, word: str, args: list[str], actor: str) -> str:
        now = self._clock.now()
        if word in ("incidents", "incident"):
            if args and args[0] == "show":
                args = args[1:]
            if args:
                return await self._show(args[0])
            open_ones = await self._incidents.listing(state="open", limit=50)
            recent = await self._incidents.listing(state="resolved", limit=5)
            text = incident_text.listing(open_ones, now) if open_ones else "No open incidents."
            if recent:
                text += "\nRecently resolved:\n" + incident_text.listing(recent, now)
            return text
        if word == "silences":
            return incident_text.silences(await self._silences.listing(limit=20), now)
        if word == "unsilence":
            if len(args) != 1 or not args[0].lstrip("#").isdigit():
                raise CommandError("say which silence: unsilence ID")
            ident = int(args[0].lstrip("#"))
            if await self._silences.expire(ident):
                self._changed()
                return f"Silence #{ident} expired."
            return f"Silence #{ident} is not active (see `silences`)."
        return await self._silence(args, actor)

    async def _show(self, ident: str) -> str:
        if not ident.lstrip("#").isdigit():
            raise CommandError(f"{ident!r} is not an incident number")
        incident = await self._incidents.get(int(ident.lstrip("#")))
        alerts = await self._incidents.alerts(incident.id)
        timeline = await self._incidents.timeline(incident.id)
        record = await self._records.for_incident(incident.id) if self._records else None
        return incident_text.details(incident, alerts, timeline, record)

    async def _silence(self, args: list[str], actor: str) -> str:
        if len(args) < 2:
            raise CommandError("say what to silence and for how long")
        duration_at = next((i for i, arg in enumerate(args) if looks_like_duration(arg)), None)
        if duration_at is None or duration_at == 0:
            raise CommandError("give a duration after what to silence")
        targets, duration = args[:duration_at], silence_length(args[duration_at])
        comment = " ".join(args[duration_at + 1 :])
        incident_id = None
        if len(targets) == 1 and targets[0].lstrip("#").isdigit():
            incident_id = int(targets[0].lstrip("#"))
            incident = await self._incidents.get(incident_id)
            if not incident.labels:
                raise CommandError(
                    f"incident {incident_id} has no grouping labels; silence by matchers instead"
                )
            texts = [str(Matcher(name, "=", value)) for name, value in incident.labels.items()]
        else:
            texts = targets
        try:
            matchers = parse_matchers(texts)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        ends = self._clock.now() + duration
        silence = await self._silences.add([str(m) for m in matchers], ends, actor, comment)
        if incident_id is not None:
            await self._incidents.note(
                incident_id, "silenced", f"#{silence.id} until {ends:%H:%M} UTC", actor
            )
        self._changed()
        return (
            f"Silence #{silence.id}: {', '.join(silence.matchers)} until "
            f"{ends:%Y-%m-%d %H:%M} UTC. Undo with `unsilence {silence.id}`."
        )

    def _changed(self) -> None:
        if callable(self._on_change):
            self._on_change()
