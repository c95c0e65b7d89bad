"""Host metrics from psutil: the agent's ``host_metrics`` tool and the watcher's ``sample_host``."""

from __future__ import annotations

import asyncio
import logging

from daemon.agent.tools.base import Tier, Tool, ToolContext, tool
from daemon.watchers.host_sample import (
    HostSample,
    sample_host,
)

__all__ = ["TOOLS", "host_metrics"]

log = logging.getLogger(__name__)


@tool(tier=Tier.READ_ONLY)
async def host_metrics(ctx: ToolContext) -> HostSample:
    """Current host health: CPU, load, memory, swap, disks, uptime, network errors, temperatures."""
    sample = await asyncio.to_thread(sample_host)
    log.debug("host_metrics for %s: cpu %.1f%%", ctx.actor, sample.cpu_percent)
    return sample


TOOLS: list[Tool] = [host_metrics]
