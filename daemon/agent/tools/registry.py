"""The default tool set offered to the agent."""

from __future__ import annotations

from daemon.agent.tools import commands, facts, files, host, messaging, processes
from daemon.agent.tools.base import ToolRegistry


def default_registry() -> ToolRegistry:
    """Every built-in tool, in a fixed order so the prompt prefix stays cacheable."""
    return ToolRegistry(
        [
            *host.TOOLS,
            *processes.TOOLS,
            *files.TOOLS,
            *commands.TOOLS,
            *facts.TOOLS,
            *messaging.TOOLS,
        ]
    )
