"""Tools that remember and recall durable facts about the host and its people."""

from __future__ import annotations

from typing import Any

from daemon.agent.tools.base import Tier, Tool, ToolContext, tool
from daemon.core.errors import ToolError
from daemon.core.redact import redact


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
async def recall_facts(ctx: ToolContext, query: str, limit: int = 5) -> list[dict[str, Any]]:
    """Search remembered facts by keywords; the best matches come first.

    Args:
        query: Keywords to look for, e.g. "nginx logs".
        limit: How many facts to return, 1 to 20.
    """
    facts = await ctx.services.facts.recall(query, limit=max(1, min(limit, 20)))
    return [
        {"id": f.id, "text": f.text, "tags": f.tags, "created_at": str(f.created_at)} for f in facts
    ]


TOOLS: list[Tool] = [remember_fact, recall_facts]
