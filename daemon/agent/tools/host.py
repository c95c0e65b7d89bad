"""Host metrics from psutil: the agent's ``host_metrics`` tool and the watcher's ``sample_host``."""

from __future__ import annotations

import logging

from daemon.agent.tools._shared import SharedSample
from daemon.agent.tools.base import Tier, Tool, ToolContext, tool
from daemon.watchers.host_sample import (
    HostSample,
    sample_host,
)

__all__ = ["HOST_SAMPLES", "TOOLS", "host_metrics"]

log = logging.getLogger(__name__)

# Callers within this many seconds of a reading share it (30 sub-agents asking at once take
# one reading, not 30 queued ones).
FRESH_SECONDS = 1.0

# ``sample_host`` looked up at call time, so tests can count the readings.
HOST_SAMPLES: SharedSample[HostSample] = SharedSample(
    lambda: sample_host(), fresh_seconds=FRESH_SECONDS
)


@tool(tier=Tier.READ_ONLY)
async def host_metrics(ctx: ToolContext) -> HostSample:
    """Current host health: CPU, load, memory, swap, disks, uptime, network errors, temperatures."""
    sample = await HOST_SAMPLES.get(ctx.clock)
    log.debug("host_metrics for %s: cpu %.1f%%", ctx.actor, sample.cpu_percent)
    return sample


TOOLS: list[Tool] = [host_metrics]
