"""host_metrics: the numbers an operator would check first, read from the real host."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from daemon.agent.tools.base import Tier, ToolContext, render_result
from daemon.agent.tools.host import TOOLS, host_metrics
from daemon.config import Settings
from daemon.core.alerts import METRIC_CATALOGUE
from daemon.core.clock import SystemClock
from daemon.watchers.host_sample import PSEUDO_FILESYSTEMS, HostSample, sample_host


def make_ctx() -> ToolContext:
    return ToolContext(actor="test", reason="test", settings=Settings(), clock=SystemClock())


async def test_host_metrics_reports_plausible_readings() -> None:
    sample = await host_metrics.invoke(make_ctx(), {})
    assert isinstance(sample, HostSample)
    assert 0.0 <= sample.cpu_percent <= 100.0
    assert sample.cpu_count >= 1
    assert min(sample.load1, sample.load5, sample.load15) >= 0.0
    assert sample.memory_total_bytes > 0
    assert 0.0 <= sample.memory_percent <= 100.0
    assert sample.boot_time < datetime.now(UTC)
    assert sample.uptime_seconds > 0
    assert sample.net is None or sample.net.errin >= 0


async def test_disks_are_real_filesystems_only() -> None:
    sample = await host_metrics.invoke(make_ctx(), {})
    for disk in sample.disks:
        assert disk.fstype not in PSEUDO_FILESYSTEMS or disk.mountpoint == "/"
        assert disk.total_bytes > 0
        assert 0.0 <= disk.percent <= 100.0
    assert len({disk.device for disk in sample.disks}) == len(sample.disks)


async def test_the_model_sees_json_with_the_readings() -> None:
    text = render_result(await host_metrics.invoke(make_ctx(), {}))
    data = json.loads(text)
    assert {"cpu_percent", "memory_percent", "disks", "uptime_seconds"} <= data.keys()


def test_sample_host_gives_every_rule_metric() -> None:
    first, second = sample_host(), sample_host()  # back to back: no meaningless 0.0 baseline
    assert set(second.metrics()) <= set(METRIC_CATALOGUE["host"])
    assert second.disk_percent == max((d.percent for d in second.disks), default=0.0)
    assert first.boot_time == second.boot_time


def test_host_metrics_is_read_only_and_takes_no_arguments() -> None:
    assert [host_metrics] == TOOLS
    assert host_metrics.tier is Tier.READ_ONLY
    assert host_metrics.schema()["function"]["parameters"]["properties"] == {}
