"""Tools that remember and recall durable facts about the host and its people."""

from __future__ import annotations

from typing import Any

from daemon.agent.tools.base import Tier, Tool, ToolContext, tool
from daemon.core.durations import DurationError, parse_duration
from daemon.core.errors import InputError, RecordNotFound, ToolError
from daemon.core.redact import redact
from memory.facts import DEFAULT_KIND, KINDS
from memory.recall import SOURCES

_AGENT_KINDS = [k for k in KINDS if k != "postmortem"]


def provenance(ctx: ToolContext) -> tuple[str, bool]:
    """Who said a fact the model stores, from the caller's context (never from the model):
    a person on the console or an allow-listed chat user in an attended run is trusted
    (``chat:slack:U123``); anything else (incident, task, unknown user) is the agent's own
    reading of tool output or logs, untrusted (``agent:incident #4``)."""
    channel, _, user = ctx.actor.partition(":")
    if user and not ctx.unattended:
        lookup = getattr(ctx.services, "role_of", None)
        role = lookup(ctx.actor) if lookup is not None else None
        if channel == "console" or role is not None:
            return f"chat:{ctx.actor}", True
    return f"agent:{ctx.actor}", False


@tool(tier=Tier.WRITE)
async def remember_fact(
    ctx: ToolContext, text: str, kind: str = DEFAULT_KIND, tags: str = ""
) -> dict[str, Any]:
    """Store a durable fact for later conversations (e.g. "nginx logs live in /srv/logs").
    To correct a fact you were given, use edit_fact instead of storing a second one.

    Args:
        text: The fact, one or two sentences. Never include passwords or tokens.
        kind: One of: host (about a machine or service), preference (how people want things
            done), procedure (how to do something), contact (who to reach), note (other).
        tags: Optional comma-separated tags, e.g. "nginx,logs".
    """
    clean = _clean(ctx, text)
    if kind not in KINDS or kind == "postmortem":
        raise ToolError(f"unknown kind {kind!r}; choose from: {', '.join(_AGENT_KINDS)}")
    source, trusted = provenance(ctx)
    try:
        fact_id = await ctx.services.facts.remember(
            clean, tags=tags, source=source, kind=kind, trusted=trusted
        )
    except InputError as exc:  # at the kind's cap: refused, tell the model and the person
        raise ToolError(str(exc)) from exc
    return {"remembered": fact_id, "kind": kind, "trusted": trusted, "text": clean}


@tool(tier=Tier.WRITE)
async def edit_fact(ctx: ToolContext, fact_id: int, text: str) -> dict[str, Any]:
    """Replace a remembered fact that is wrong or out of date by a corrected text. The old
    one is kept in history but no longer recalled.

    Args:
        fact_id: The fact's id, from recall (cite "fact#12" is id 12).
        text: The corrected fact, complete (it replaces the old text).
    """
    clean = _clean(ctx, text)
    source, trusted = provenance(ctx)
    repo = ctx.services.facts
    try:
        old = await repo.get(fact_id)
        if old.trusted and not trusted:
            raise ToolError(
                f"fact #{fact_id} was said by {old.source}, a trusted source; this run "
                f"({ctx.actor}) may not change it. Tell a person what looks wrong instead."
            )
        new_id = await repo.edit(fact_id, clean, source=source, trusted=trusted)
    except (InputError, RecordNotFound) as exc:
        raise ToolError(str(exc)) from exc
    return {"replaced": fact_id, "remembered": new_id, "kind": old.kind, "text": clean}


def _clean(ctx: ToolContext, text: str) -> str:
    clean = redact(text.strip(), ctx.settings.policy.redact_patterns)
    if not clean:
        raise ToolError("text is empty: give the fact to remember")
    return clean


@tool(tier=Tier.READ_ONLY)
async def recall(
    ctx: ToolContext,
    query: str,
    sources: str = "",
    since: str = "",
    host: str = "",
    service: str = "",
    limit: int = 5,
) -> list[dict[str, Any]]:
    """Search everything remembered: facts, past incidents (alerts, timeline, postmortem),
    conversations, task outputs, runbooks and the audit log. Best matches first, each citing
    its source.

    Args:
        query: Keywords, paths or identifiers, e.g. "disk full db-7" or "/var/lib/postgresql".
        sources: Optional comma-separated subset of: fact, incident, record (a past
            incident's cause and fix), timeline, message, task_run, audit, runbook.
        since: Optional age limit, e.g. "7d" or "12h".
        host: Only results labelled with this host.
        service: Only results labelled with this service.
        limit: How many results to return, 1 to 20.
    """
    limit = max(1, min(limit, 20))
    repo = ctx.services.recall
    if repo is None:  # no recall index wired: facts only
        facts = await ctx.services.facts.recall(query, limit=limit)
        return [
            {
                "cite": f"fact#{f.id}",
                "at": str(f.created_at),
                "labels": f"kind={f.kind} trusted={int(f.trusted)}",
                "text": f.text,
            }
            for f in facts
        ]
    wanted = [s.strip() for s in sources.split(",") if s.strip()] or None
    if wanted and not set(wanted) <= set(SOURCES):
        raise ToolError(f"unknown source in {sources!r}; choose from: {', '.join(SOURCES)}")
    try:
        age = parse_duration(since, "since") if since.strip() else None
    except DurationError as exc:
        raise ToolError(str(exc)) from exc
    labels = {k: v for k, v in (("host", host), ("service", service)) if v.strip()}
    hits = await repo.search(query, sources=wanted, since=age, labels=labels, limit=limit)
    return [{"cite": h.cite, "at": str(h.at), "labels": h.labels, "text": h.snippet} for h in hits]


TOOLS: list[Tool] = [remember_fact, edit_fact, recall]
