"""Tools that remember and recall durable facts about the host and its people."""

from __future__ import annotations

from typing import Any

from daemon.agent.tools.base import Tier, Tool, ToolContext, tool
from daemon.core.durations import DurationError, parse_duration
from daemon.core.errors import ToolError
from daemon.core.redact import redact
from memory.recall import SOURCES


@tool(tier=Tier.WRITE)
async def remember_fact(ctx: ToolContext, text: str, tags: str = "") -> dict[str, Any]:
    """Store a durable fact for later conversations (e.g. "nginx logs live in /srv/logs").

    Args:
        text: The fact, one or two sentences. Never include passwords or tokens.
        tags: Optional comma-separated tags, e.g. "nginx,logs".
    """
    clean = redact(text.strip(), ctx.settings.policy.redact_patterns)
    if not clean:
        raise ToolError("text is empty: give the fact to remember")
    fact_id = await ctx.services.facts.remember(clean, tags=tags, source=ctx.actor)
    return {"remembered": fact_id, "text": clean}


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
        sources: Optional comma-separated subset of: fact, incident, timeline, message,
            task_run, audit, runbook.
        since: Optional age limit, e.g. "7d" or "12h".
        host: Only results labelled with this host.
        service: Only results labelled with this service.
        limit: How many results to return, 1 to 20.
    """
    limit = max(1, min(limit, 20))
    repo = ctx.services.recall
    if repo is None:  # no recall index wired: facts only
        facts = await ctx.services.facts.recall(query, limit=limit)
        return [{"cite": f"fact#{f.id}", "at": str(f.created_at), "text": f.text} for f in facts]
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


TOOLS: list[Tool] = [remember_fact, recall]
