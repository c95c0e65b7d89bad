"""The default tool set offered to the agent."""

from __future__ import annotations

from collections.abc import Sequence

from daemon.agent.tools import commands, facts, files, host, messaging, processes
from daemon.agent.tools.base import Tool, ToolRegistry


def default_registry(extra: Sequence[Tool] = ()) -> ToolRegistry:
    """Every built-in tool, then ``extra`` (the tools packages above the agent provide, such as
    the task tools), in a fixed order so the prompt prefix stays cacheable."""
    return ToolRegistry(
        [
            *host.TOOLS,
            *processes.TOOLS,
            *files.TOOLS,
            *commands.TOOLS,
            *facts.TOOLS,
            *messaging.TOOLS,
            *extra,
        ]
    )


def evidence_tools() -> list[Tool]:
    """Read-only tools for incident investigations (commands run unattended: reads only)."""
    from daemon.agent.tools import evidence

    return [
        *host.TOOLS,
        *processes.TOOLS,
        *files.TOOLS,
        *evidence.TOOLS,
        *commands.TOOLS,
        facts.recall,
    ]


def remediation_registry() -> ToolRegistry:
    """The tools a remediation may run once a person (or the allowlist) approved the call."""
    from daemon.agent.tools import remediation

    return ToolRegistry([*remediation.TOOLS, *commands.TOOLS])
