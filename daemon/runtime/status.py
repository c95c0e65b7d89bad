"""What the running daemon reports: `nightshift status`, the chat `status` line, /metrics."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from daemon import __version__
from daemon.core import metrics
from memory.swarm_views import live_swarm

if TYPE_CHECKING:
    from daemon.runtime.process import Runtime


async def status(runtime: Runtime) -> dict[str, Any]:
    """Everything `nightshift status` shows."""
    used, limit = await runtime.budget()
    events = await runtime.events.recent(limit=5)
    return {
        "version": __version__,
        "pid": os.getpid(),
        "started_at": runtime.started_at.isoformat(),
        "uptime_seconds": round((runtime.clock.now() - runtime.started_at).total_seconds()),
        "state_dir": str(runtime.settings.state_dir),
        "config": str(runtime.config_path) if runtime.config_path else "(embedded defaults)",
        "health": runtime.health()["status"],
        "agent": {
            "enabled": runtime.llm is not None,
            "reason": runtime.agent_reason or "ready",
            "model": runtime.settings.llm.model,
            "in_flight": runtime.chat.in_flight,
        },
        "budget": {"used_today": used, "daily_limit": limit},
        "prompt_cache": await _prompt_cache(runtime),
        "components": runtime.supervisor.snapshot(),
        "outbox": await runtime.outbox.depth_by_channel(),
        "channels": runtime.channel_set.health(),
        "approvals_pending": len(runtime.approvals.pending()),
        "sandbox": runtime.sandbox.describe(),
        "last_errors": [
            {
                "component": e.component,
                "event": e.event,
                "detail": e.detail,
                "at": str(e.created_at),
            }
            for e in events
        ],
        "host": runtime.host_watcher.summary() if runtime.host_watcher else None,
        "alerting": runtime.alerting.summary(),
        "incidents_open": len(await runtime.incidents.listing(state="open", limit=1000)),
        "webhook": _webhook_state(runtime),
        "investigations": _investigations(runtime),
        "api_connections_refused": runtime.api.gate.refused,
        "tasks": await _tasks_summary(runtime),
        "database": await _database(runtime),
        "facts": await _facts(runtime),
        "swarm": await _swarm(runtime),
    }


async def _facts(runtime: Runtime) -> dict[str, Any]:
    """Live facts per kind against the caps; the kinds at 80 % of their cap or more."""
    usage = await runtime.facts.usage()
    return {
        "kinds": {u.kind: {"count": u.count, "cap": u.cap or None} for u in usage},
        "near_cap": [u.kind for u in usage if u.near],
    }


async def _swarm(runtime: Runtime) -> dict[str, int]:
    """Swarm runs live now: their sub-agents running and queued, steps and tokens so far."""
    async with runtime.store.read() as db:
        live = await live_swarm(db)
    return {
        "runs_running": live.runs,
        "sub_agents_running": live.running,
        "sub_agents_queued": live.queued,
        "steps": live.steps,
        "tokens": live.tokens,
    }


async def _database(runtime: Runtime) -> dict[str, Any]:
    """Size, growth per day and the last prune (for bounded growth)."""
    size = await runtime.housekeeping.repo.size()
    cap = runtime.settings.memory.max_db_mb
    return {
        "file_bytes": size.file_bytes,
        "wal_bytes": size.wal_bytes,
        "free_bytes": size.free_bytes,
        "growth_bytes_per_day": size.growth_bytes_per_day,
        "growth_window_days": size.growth_window_days,
        "auto_vacuum": size.auto_vacuum,
        "max_db_mb": cap or None,
        "last_prune_at": runtime.housekeeping.last_prune_at,
        "last_prune": runtime.housekeeping.last_prune,
    }


async def _prompt_cache(runtime: Runtime) -> dict[str, Any]:
    """How much model input the provider's prefix cache served over the last 24 hours."""
    since = runtime.clock.now() - timedelta(days=1)
    day = await runtime.usage.summary_since(since)
    return {
        "prompt_tokens": day.prompt_tokens,
        "cached_tokens": day.cached_tokens,
        "ratio": round(day.cached_tokens / day.prompt_tokens, 4) if day.prompt_tokens else None,
        "conversations": [
            {
                "id": use.conversation_id,
                "calls": use.calls,
                "prompt_tokens": use.prompt_tokens,
                "cached_tokens": use.cached_tokens,
                "ratio": round(use.ratio, 4),
            }
            for use in await runtime.usage.cache_by_conversation(since)
        ],
    }


def _investigations(runtime: Runtime) -> dict[str, Any]:
    limiter, settings = runtime.responder.limiter, runtime.settings.incidents
    return {
        "running": limiter.running,
        "skipped_over_limits": limiter.skipped,
        "max_concurrent": settings.max_concurrent_investigations,
        "max_per_hour": settings.max_investigations_per_hour,
        "max_tokens_per_hour": settings.max_investigation_tokens_per_hour,
    }


async def _tasks_summary(runtime: Runtime) -> dict[str, Any]:
    tasks = await runtime.task_repo.all()
    upcoming = [t for t in (runtime.scheduler.next_run(task.name) for task in tasks) if t]
    return {
        "total": len(tasks),
        "active": sum(1 for task in tasks if task.active),
        "paused": sum(1 for task in tasks if task.paused_reason),
        "next_run": min(upcoming).isoformat() if upcoming else None,
        "scheduler": "on" if runtime.settings.scheduler.enabled else "off",
        "missed_skipped": runtime.scheduler.skipped,  # slots skipped by catch-up since start
    }


def _webhook_state(runtime: Runtime) -> str:
    api = runtime.settings.api
    if not api.tcp_port:
        return "off (set [api] tcp_port and webhook_token)"
    if api.webhook_token is None:
        return "disabled (set [api] webhook_token)"
    stats = runtime.webhook_stats
    return (
        f"on :{api.tcp_port}/v1/webhooks/alertmanager — {stats.accepted_events} events, "
        f"{stats.auth_failures} auth failures, {stats.rejected} rejected"
    )


async def status_text(runtime: Runtime) -> str:
    """A short status for the `status` chat command."""
    report = await status(runtime)
    channels = ", ".join(f"{n} {c['state']}" for n, c in report["channels"].items())
    agent = "on" if report["agent"]["enabled"] else f"off ({report['agent']['reason']})"
    budget = report["budget"]
    return (
        f"nightshift {report['version']}: {report['health']}, up {report['uptime_seconds']}s; "
        f"agent {agent}; {budget['used_today']:,}/{budget['daily_limit']:,} tokens today; "
        f"channels: {channels}; approvals pending: {report['approvals_pending']}; "
        f"open incidents: {report['incidents_open']}, alerts firing: "
        f"{report['alerting']['firing']}" + _swarm_text(report["swarm"])
    )


def _swarm_text(swarm: dict[str, int]) -> str:
    """``; swarm: 1 run live, 4 sub-agents running, 12 queued`` (or nothing when idle)."""
    if not swarm["runs_running"]:
        return ""
    return (
        f"; swarm: {swarm['runs_running']} run(s) live, {swarm['sub_agents_running']} "
        f"sub-agent(s) running, {swarm['sub_agents_queued']} queued"
    )


async def refresh_metrics(runtime: Runtime) -> None:
    """Bring the /metrics gauges up to date (called on each scrape)."""
    used, limit = await runtime.budget()
    metrics.LLM_TOKENS_TODAY.set(used)
    metrics.LLM_BUDGET.set(limit)
    for health in runtime.supervisor.health.values():
        metrics.COMPONENT_UP.labels(component=health.name).set(health.state == "running")
        metrics.COMPONENT_RESTARTS.labels(component=health.name).set(health.restarts)
    for channel, depth in (await runtime.outbox.depth_by_channel()).items():
        metrics.OUTBOX_PENDING.labels(channel=channel).set(depth)
    alerting = runtime.alerting.summary()
    metrics.ALERTS.labels(state="firing").set(alerting["firing"])
    metrics.ALERTS.labels(state="pending").set(alerting["pending"])
    metrics.ALERT_OBSERVATIONS.set(alerting["observations"])
    metrics.INCIDENTS_OPEN.set(len(await runtime.incidents.listing(state="open", limit=10_000)))
    stats = runtime.webhook_stats
    for kind in ("accepted_events", "auth_failures", "rejected", "intake_failures"):
        metrics.WEBHOOK_EVENTS.labels(kind=kind).set(getattr(stats, kind))
