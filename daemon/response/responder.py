"""What nightshift does about an incident beyond notifying: investigate, remediate, postmortem.

Everything here is optional to the incident's life: with no LLM, an exhausted budget or a
failing API the incident is still opened, notified (with the alert facts and runbook) and
resolved by the incident manager; this module then records why it could not help.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime, timedelta
from typing import Any

from daemon.agent.loop import AgentLoop
from daemon.core.background import BackgroundTasks
from daemon.core.clock import Clock
from daemon.core.errors import (
    AgentDisabledError,
    BudgetExhaustedError,
    InputError,
    LlmUnavailableError,
)
from daemon.incidents.poster import IncidentPoster
from daemon.incidents.runbooks import RunbookLibrary
from daemon.incidents.settings import IncidentSettings
from daemon.response.incident_memory import build_record
from daemon.response.investigation import InvestigationServices, investigate
from daemon.response.limits import InvestigationLimiter
from daemon.response.postmortem import Postmortem, write_postmortem
from daemon.response.remediation import Remediator
from memory.conversations import ConversationRepo
from memory.facts import Fact, FactRepo
from memory.incident_records import IncidentRecord, IncidentRecordRepo, signature
from memory.incidents import Incident, IncidentAlert, IncidentRepo

log = logging.getLogger(__name__)

UNAVAILABLE_NOTICE_EVERY = timedelta(hours=1)


class IncidentResponder:
    """Implements the incident manager's Responder; work runs in background tasks."""

    def __init__(
        self,
        settings: Callable[[], IncidentSettings],
        *,
        poster: IncidentPoster,
        runbooks: RunbookLibrary,
        incidents: IncidentRepo,
        conversations: ConversationRepo,
        facts: FactRepo,
        agent: AgentLoop | None,
        services: InvestigationServices,
        remediator: Remediator,
        clock: Clock,
        records: IncidentRecordRepo | None = None,
    ) -> None:
        self._settings = settings
        self._poster = poster
        self._runbooks = runbooks
        self._incidents = incidents
        self._conversations = conversations
        self._facts = facts
        self._agent = agent
        self._services = services
        self._remediator = remediator
        self._clock = clock
        self._records = records
        self._tasks = BackgroundTasks("incident response")
        self._investigating: dict[int, asyncio.Task[None]] = {}  # incident id → its investigation
        self._last_unavailable: datetime | None = None
        self._last_skipped: datetime | None = None
        self.limiter = InvestigationLimiter(settings, clock)
        self.investigations = 0
        self.tokens = 0

    # -- Responder ------------------------------------------------------------------------------

    def first_notified(self, incident_id: int) -> None:
        task = self._spawn(self._investigate(incident_id), f"investigate #{incident_id}")
        self._investigating[incident_id] = task
        task.add_done_callback(lambda _: self._investigating.pop(incident_id, None))

    def resolved(self, incident_id: int) -> None:
        self._remediator.incident_resolved(incident_id)

    def closed(self, incident_id: int) -> None:
        if self._settings().postmortems:
            self._spawn(self._postmortem(incident_id), f"postmortem #{incident_id}")

    async def drain(self, timeout: float) -> None:
        await self._tasks.drain(timeout)

    @property
    def busy(self) -> int:
        return len(self._tasks)

    # -- work ----------------------------------------------------------------------------------

    async def _investigate(self, incident_id: int) -> None:
        incident = await self._incidents.get(incident_id)
        if incident.severity not in self._settings().investigate:
            return
        if self._agent is None or not self._agent.enabled:  # rule-only by configuration
            await self._incidents.note(incident_id, "not investigated", "the agent is off")
            return
        why = self.limiter.try_start()
        if why is not None:
            await self._skipped(incident_id, why)
            return
        try:
            await self._run_investigation(incident_id, incident)
        finally:
            self.limiter.finished()

    async def _run_investigation(self, incident_id: int, incident: Incident) -> None:
        assert self._agent is not None
        alerts = await self._incidents.alerts(incident_id)
        runbook = next(
            (rb for a in alerts if (rb := self._runbooks.find(a.labels, a.annotations))),
            None,
        )
        prior = await self._prior_records(alerts, incident_id)
        known = {f"incident:{record.incident_id}" for record in prior}
        past = [
            fact
            for fact in await self._past_postmortems(incident.title, incident_id)
            if fact.source not in known  # its record is shown already, shorter
        ]
        conversation = await self._conversations.get_or_create(
            "incident", f"incident:{incident_id}", incident.title
        )
        await self._incidents.note(incident_id, "investigation started", "agent, read-only tools")
        try:
            findings = await investigate(
                self._agent,
                self._services,
                conversation_id=conversation.id,
                incident=incident,
                alerts=alerts,
                runbook=runbook,
                past=past,
                prior=prior,
            )
        except (AgentDisabledError, BudgetExhaustedError, LlmUnavailableError) as exc:
            await self._unavailable(incident_id, str(exc))
            return
        self.investigations += 1
        self.tokens += findings.tokens
        self.limiter.spent(findings.tokens)
        if findings.status in ("budget", "error", "timeout") or not findings.text.strip():
            await self._unavailable(incident_id, findings.text or f"status {findings.status}")
            return
        await self._incidents.set_text(incident_id, "investigation", findings.text)
        await self._incidents.note(
            incident_id,
            "findings",
            f"{len(findings.proposals)} proposal(s), {findings.tokens} tokens",
        )
        await self._poster.post(
            incident_id, f"Findings for incident #{incident_id}:\n{findings.text}", "findings"
        )
        if findings.proposals:
            await self._remediator.handle(incident_id, findings.proposals)

    async def _unavailable(self, incident_id: int, why: str) -> None:
        """Rule-only mode: record why; tell people at most hourly (the notice had the facts)."""
        await self._incidents.note(incident_id, "not investigated", why)
        now = self._clock.now()
        last = self._last_unavailable
        if last is not None and now - last < UNAVAILABLE_NOTICE_EVERY:
            return
        self._last_unavailable = now
        await self._poster.post(
            incident_id,
            f"Incident #{incident_id}: no AI investigation ({why}). The notification above has "
            "the alert facts and runbook; I will keep notifying and resolving by rule.",
            "findings",
        )

    async def _skipped(self, incident_id: int, why: str) -> None:
        """Over an investigation limit: note it on the incident; tell people (and the log) at
        most hourly, so a flood of incidents is not a flood of messages."""
        await self._incidents.note(incident_id, "not investigated", f"investigation skipped: {why}")
        now = self._clock.now()
        last = self._last_skipped
        if last is not None and now - last < UNAVAILABLE_NOTICE_EVERY:
            log.debug("incident #%d: investigation skipped: %s", incident_id, why)
            return
        self._last_skipped = now
        log.warning(
            "incident #%d: investigation skipped: %s (later ones this hour: on their timelines)",
            incident_id,
            why,
        )
        await self._poster.post(
            incident_id,
            f"Incident #{incident_id}: investigation skipped ({why}). The notification above "
            "has the alert facts and runbook; further incidents over the limit are noted on "
            "their timelines (`incidents show N`) and handled by rule.",
            "findings",
        )

    async def _postmortem(self, incident_id: int) -> None:
        investigation = self._investigating.get(incident_id)
        if investigation is not None:  # its findings belong in the postmortem
            await asyncio.wait([investigation])
        await self._remediator.settled(incident_id)
        postmortem = await write_postmortem(
            incident_id,
            incidents=self._incidents,
            agent=self._agent,
            conversations=self._conversations,
            clock=self._clock,
        )
        text = postmortem.text
        incident = await self._incidents.get(incident_id)
        await self._incidents.set_text(incident_id, "postmortem", text)
        names = " ".join(sorted({a.name for a in await self._incidents.alerts(incident_id)}))
        try:
            await self._facts.remember(
                text,
                tags=f"postmortem incident {names}",
                source=f"incident:{incident_id}",
                kind="postmortem",
            )
            stored = "stored in memory"
        except InputError as exc:  # at the postmortem cap: refused, said, still posted
            log.warning("incident #%d: postmortem not stored in memory: %s", incident_id, exc)
            stored = f"not stored in memory: {exc}"
        await self._store_record(incident, postmortem)
        await self._incidents.note(incident_id, "postmortem", stored)
        await self._poster.post(incident_id, text, "postmortem")
        log.info("incident #%d (%s): postmortem stored", incident_id, incident.title)

    async def _prior_records(
        self, alerts: Sequence[IncidentAlert], incident_id: int
    ) -> list[IncidentRecord]:
        """Records of past incidents with the same or a near signature; a failed read only
        costs the head start."""
        if self._records is None:
            return []
        try:
            prior = await self._records.similar(
                signature(a.labels for a in alerts), exclude_incident=incident_id
            )
        except Exception as exc:  # noqa: BLE001 - the investigation goes on without them
            log.warning("incident #%d: prior records unavailable: %s", incident_id, exc)
            return []
        if prior:
            cited = ", ".join(f"#{record.incident_id}" for record in prior)
            await self._incidents.note(incident_id, "prior incidents", f"records of {cited}")
        return prior

    async def _store_record(self, incident: Incident, postmortem: Postmortem) -> None:
        """The incident's structured record; a failure is logged, the postmortem stands."""
        if self._records is None:
            return
        try:
            alerts = await self._incidents.alerts(incident.id)
            record = build_record(
                incident,
                signature(a.labels for a in alerts),
                await self._incidents.timeline(incident.id),
                await self._records.investigation_calls(incident.id),
                postmortem.answer,
            )
            await self._records.save(record)
        except Exception:  # noqa: BLE001 - memory is a bonus; the postmortem is what people see
            log.exception("incident #%d: its record was not stored", incident.id)

    async def _past_postmortems(self, title: str, incident_id: int) -> list[Fact]:
        found = await self._facts.recall(title.split(" (")[0], limit=10)
        return [
            fact
            for fact in found
            if "postmortem" in fact.tags and fact.source != f"incident:{incident_id}"
        ][:3]

    def _spawn(self, work: Coroutine[Any, Any, None], what: str) -> asyncio.Task[None]:
        return self._tasks.spawn(work, what)  # a failure is logged; the other incidents go on
