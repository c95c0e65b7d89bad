"""End to end: a configured log rule with a catastrophic regex does not freeze `nightshift run`.

``(a+)+$`` against ``aaaa…a!`` backtracks for hours in Python's ``re`` and, before RE2, froze the
whole event loop: no status, no /healthz, a watchdog restart per line.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.support import DaemonProcess, write_config

HOSTILE_LINE = "a" * 40 + "!"  # 2**40 steps for a backtracking engine


async def test_a_catastrophic_rule_regex_on_a_hostile_log_line_keeps_the_daemon_serving(
    tmp_path: Path,
) -> None:
    log = tmp_path / "app.log"
    log.write_text(f"started\n{HOSTILE_LINE}\nbaaaa\n")
    config = write_config(tmp_path / "config.toml", None)
    config.write_text(
        config.read_text()
        + f"""
[[watchers.logs]]
name = "app"
path = "{log}"
from_end = false

[[rules]]
name = "AllAs"
metric = "log_line"
match = '(a+)+$'
severity = "warning"
summary = "a line of a's"

[incidents]
group_wait_seconds = 0.2
"""
    )
    daemon = DaemonProcess(config, tmp_path / "state")
    await daemon.start()
    try:
        # The last line matches; its incident proves the hostile one was judged and let go.
        listed = ""
        for _ in range(60):
            code, listed, err = await daemon.cli("incidents", timeout=30)
            assert code == 0, err
            if "AllAs" in listed:
                break
            await asyncio.sleep(0.2)
        assert "AllAs" in listed, await daemon.output()
        code, out, err = await daemon.cli("status", timeout=30)
        assert code == 0, err
        code, out, err = await daemon.cli(
            "silence", "add", "alertname=~Disk(?=Full)", "--for", "1h"
        )
        assert "lookahead `(?=…)` is not supported by the linear-time engine" in out + err
        assert "Traceback" not in await daemon.output()
    finally:
        await daemon.stop()
