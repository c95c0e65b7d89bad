"""What the CLI prints: `status` as text, `check-config` as TOML (tomli-w)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def render_toml(data: dict[str, Any]) -> str:
    """The effective config as TOML that check-config and run accept again (tomli-w); unset
    keys (TOML has no null) are listed in a closing comment."""
    import tomli_w

    unset: list[str] = []
    text = tomli_w.dumps(_toml_ready(data, "", unset), multiline_strings=False)
    if unset:
        text += "\n# unset (no value): " + ", ".join(unset) + "\n"
    return text.rstrip("\n")


def _toml_ready(value: Any, key: str, unset: list[str]) -> Any:
    """Drop None (noting its key), paths as strings, tuples as lists."""
    if isinstance(value, dict):
        out = {}
        for name, item in value.items():
            where = f"{key}.{name}" if key else str(name)
            if item is None:
                unset.append(where)
            else:
                out[str(name)] = _toml_ready(item, where, unset)
        return out
    if isinstance(value, list | tuple):
        return [_toml_ready(item, key, unset) for item in value if item is not None]
    if isinstance(value, Path):
        return str(value)
    return value


def render_status(report: dict[str, Any]) -> str:
    agent = report["agent"]
    budget = report["budget"]
    agent_line = f"on, {agent['model']}" if agent["enabled"] else f"off: {agent['reason']}"
    lines = [
        f"nightshift {report['version']} (pid {report['pid']}) — {report['health']}, "
        f"up {report['uptime_seconds']}s",
        f"  config:    {report['config']}",
        f"  state:     {report['state_dir']}",
        f"  agent:     {agent_line}",
        f"  budget:    {budget['used_today']:,} of {budget['daily_limit']:,} tokens today",
        f"  cache:     {_cache_line(report.get('prompt_cache'))}",
        f"  approvals: {report['approvals_pending']} pending",
        f"  sandbox:   {report.get('sandbox', 'unknown')}",
        f"  alerting:  {report['alerting']['rules']} rules, {report['alerting']['firing']} firing, "
        f"{report['alerting']['pending']} pending; {report['incidents_open']} open incident(s)"
        f"; webhook {report['webhook']}",
        f"  tasks:     {report['tasks']['active']} active, {report['tasks']['paused']} paused"
        f" of {report['tasks']['total']}; next run {report['tasks']['next_run'] or '-'}"
        f" (scheduler {report['tasks']['scheduler']})"
        + _missed(report["tasks"].get("missed_skipped", 0)),
        f"  outbox:    {_outbox_line(report['outbox'])}",
        *([f"  database:  {_database_line(report['database'])}"] if "database" in report else []),
        *([f"  facts:     {_facts_line(report['facts'])}"] if "facts" in report else []),
        *([f"  swarm:     {_swarm_line(report['swarm'])}"] if "swarm" in report else []),
        "  channels:  "
        + ", ".join(
            f"{name} {info['state']}" + (f" ({info['detail']})" if info["detail"] else "")
            for name, info in report.get("channels", {}).items()
        ),
        "  components:",
    ]
    for component in report["components"]:
        extra = f" — {component['detail']}" if component["detail"] else ""
        restarts = f", {component['restarts']} restarts" if component["restarts"] else ""
        error = f"\n      last error: {component['last_error']}" if component["last_error"] else ""
        lines.append(f"    {component['name']:<20} {component['state']}{restarts}{extra}{error}")
    if report["last_errors"]:
        lines.append("  recent events:")
        for event in report["last_errors"]:
            lines.append(
                f"    {event['at']} {event['component']} {event['event']}: {event['detail']}"
            )
    return "\n".join(lines)


def _cache_line(cache: dict[str, Any] | None) -> str:
    """``93.5% of 2,230,630 input tokens from the prompt cache (24 h); by conversation: …``."""
    if not cache or not cache["prompt_tokens"]:
        return "no model input in the last 24 h"
    line = (
        f"{cache['ratio']:.1%} of {cache['prompt_tokens']:,} input tokens served from the "
        "prompt cache (24 h)"
    )
    top = [f"#{c['id']} {c['ratio']:.0%} of {c['calls']} calls" for c in cache["conversations"]]
    return line + ("; by conversation: " + ", ".join(top) if top else "")


def _missed(count: int) -> str:
    """``; 9 missed slot(s) skipped (see `tasks show NAME`)`` when catch-up skipped any."""
    if not count:
        return ""
    return f"; {count} missed slot(s) skipped since start (see `nightshift tasks show NAME`)"


def _database_line(db: dict[str, Any]) -> str:
    """``41.2 MB (+1.3 MB/day over 1 day; cap 500 MB), pruned 2026-01-02T…``."""
    size = (db["file_bytes"] + db["wal_bytes"]) / 1e6
    rate = db["growth_bytes_per_day"]
    growth = (
        f"{rate / 1e6:+.1f} MB/day over {db['growth_window_days']:g} day(s)"
        if rate is not None
        else "growth not known yet (needs an hour of samples)"
    )
    cap = f"; cap {db['max_db_mb']:g} MB" if db.get("max_db_mb") else ""
    pruned = f", last pruned {db['last_prune_at']}" if db.get("last_prune_at") else ""
    vacuum = "" if db.get("auto_vacuum") == "incremental" else " (file never shrinks: see README)"
    return f"{size:.1f} MB ({growth}{cap}){pruned}{vacuum}"


def _facts_line(facts: dict[str, Any]) -> str:
    """``host 412/500 (near the cap: new ones are refused at it), note 12`` (or ``none``)."""
    parts = []
    for kind, use in facts["kinds"].items():
        if not use["count"]:
            continue
        part = f"{kind} {use['count']}" + (f"/{use['cap']}" if use["cap"] else "")
        if kind in facts["near_cap"]:
            part += " (WARNING: near the cap; at it new facts are refused: forget or edit some)"
        parts.append(part)
    return ", ".join(parts) or "none"


def _swarm_line(swarm: dict[str, int]) -> str:
    """``2 runs live: 4 sub-agents running, 12 queued; 340 steps, 120,000 tokens so far``."""
    runs = swarm["runs_running"]
    if not runs:
        return "no runs live (see `nightshift runs`)"
    running = swarm["sub_agents_running"]
    return (
        f"{runs} run{'s' if runs != 1 else ''} live: {running} sub-agent"
        f"{'s' if running != 1 else ''} running, {swarm['sub_agents_queued']} queued; "
        f"{swarm['steps']:,} steps, {swarm['tokens']:,} tokens so far (see `nightshift runs`)"
    )


def _outbox_line(depths: dict[str, int]) -> str:
    """``slack 3 pending, console 1 pending`` (or ``empty``)."""
    return ", ".join(f"{channel} {n} pending" for channel, n in depths.items()) or "empty"
