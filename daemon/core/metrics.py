"""Prometheus metrics exported on /metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

AGENT_RUNS = Counter("nightshift_agent_runs_total", "Agent runs by final status", ["status"])
TOOL_CALLS = Counter(
    "nightshift_tool_calls_total", "Tool calls by tool and outcome", ["tool", "ok"]
)
LLM_TOKENS_TODAY = Gauge("nightshift_llm_tokens_today", "LLM tokens used today")
LLM_BUDGET = Gauge("nightshift_llm_daily_token_budget", "Hard daily LLM token budget")
COMPONENT_UP = Gauge("nightshift_component_up", "1 when a component is running", ["component"])
COMPONENT_RESTARTS = Gauge(
    "nightshift_component_restarts", "Restarts of a component since start", ["component"]
)
OUTBOX_PENDING = Gauge("nightshift_outbox_pending", "Messages waiting for delivery", ["channel"])
HOST_CPU = Gauge("nightshift_host_cpu_percent", "Host CPU use, percent")
HOST_MEMORY = Gauge("nightshift_host_memory_percent", "Host memory use, percent")
HOST_LOAD1 = Gauge("nightshift_host_load1", "Host 1-minute load average")
ALERTS = Gauge("nightshift_alerts", "Rule alerts by state", ["state"])
INCIDENTS_OPEN = Gauge("nightshift_incidents_open", "Open incidents")
ALERT_OBSERVATIONS = Gauge("nightshift_observations", "Watcher observations judged since start")
WEBHOOK_EVENTS = Gauge(
    "nightshift_webhook_events", "Alertmanager webhook counters since start", ["kind"]
)
