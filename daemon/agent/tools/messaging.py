"""The tool that sends a message to people, always through the durable outbox."""

from __future__ import annotations

from typing import Any

from daemon.agent.tools.base import Tier, Tool, ToolContext, tool
from daemon.core.errors import ToolError
from daemon.core.redact import redact

MAX_MESSAGE_CHARS = 20_000


@tool(tier=Tier.WRITE)
async def send_message(
    ctx: ToolContext, text: str, channel: str = "console", target: str = ""
) -> dict[str, Any]:
    """Send a message to people on a chat channel (queued durably, delivered with retries).

    Args:
        text: The message to send.
        channel: Which channel, e.g. "console".
        target: Room, chat or user on that channel; empty means the channel's default.
    """
    services = ctx.services
    if channel not in services.channels:
        known = ", ".join(services.channels) or "none"
        raise ToolError(f"unknown channel {channel!r}; configured channels: {known}")
    body = redact(text, ctx.settings.policy.redact_patterns)
    if not body.strip():
        raise ToolError("text is empty")
    if len(body) > MAX_MESSAGE_CHARS:
        raise ToolError(f"message too long ({len(body)} characters, at most {MAX_MESSAGE_CHARS})")
    message_id = await services.outbox.enqueue(channel, target, body)
    services.wake_outbox()
    return {"queued": message_id, "channel": channel, "target": target or "(default)"}


TOOLS: list[Tool] = [send_message]
