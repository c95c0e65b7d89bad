"""Settings of the agent: the model endpoint, the loop, the token budget and the tool policy."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol

from pydantic import Field, SecretStr, field_validator

from daemon.core.section import Section, check_http_url, check_regex, check_zone

Mode = Literal["thinking", "instant"]


class LlmSettings(Section):
    """The model endpoint (Kimi K2.6 or any OpenAI-compatible server)."""

    base_url: str = "https://api.moonshot.ai/v1"
    api_key: SecretStr | None = None
    model: str = "kimi-k2.6"
    fallback_models: list[str] = Field(default_factory=list)
    # How thinking is switched: "moonshot" sends {"thinking": {...}}, "vllm" sends
    # chat_template_kwargs, "none" sends nothing (plain OpenAI-compatible servers).
    thinking_style: Literal["moonshot", "vllm", "none"] = "moonshot"
    keep_thinking: bool = False
    stream: bool = False
    timeout_seconds: float = Field(default=180.0, gt=0)
    connect_timeout_seconds: float = Field(default=10.0, gt=0)
    max_retries: int = Field(default=4, ge=0, le=20)
    retry_initial_seconds: float = Field(default=1.0, ge=0)
    retry_max_seconds: float = Field(default=60.0, gt=0)
    concurrency: int = Field(default=4, ge=1, le=1000)
    max_tokens_thinking: int = Field(default=32768, ge=1024, le=1_048_576)
    max_tokens_instant: int = Field(default=8192, ge=256, le=1_048_576)
    price_input_per_mtok: float = Field(default=0.60, ge=0)
    price_cached_input_per_mtok: float = Field(default=0.15, ge=0)
    price_output_per_mtok: float = Field(default=2.50, ge=0)

    _base_url = field_validator("base_url")(lambda cls, value: check_http_url(value))


class BudgetSettings(Section):
    """The hard daily token cap; once spent the agent is refused until the next day."""

    daily_tokens: int = Field(default=2_000_000, ge=0)
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return check_zone(value)


class SwarmSettings(Section):
    """Sub-agents the agent may delegate to (the ``delegate`` tool)."""

    enabled: bool = True
    mode: Mode = "instant"  # sub-agents' model mode: instant is cheaper for small subtasks
    # Sub-agents running at once in this process, over all runs (the API tier's concurrency;
    # their model calls still pass [llm] concurrency).
    concurrency: int = Field(default=8, ge=1, le=1000)
    max_depth: int = Field(default=1, ge=1, le=5)  # 1: sub-agents cannot delegate further
    max_spawns_per_run: int = Field(default=400, ge=1, le=100_000)
    run_max_tokens: int = Field(default=2_000_000, ge=1_000)
    run_max_steps: int = Field(default=6_000, ge=1)
    child_max_steps: int = Field(default=12, ge=1, le=200)  # the default and the ceiling
    child_max_tokens: int = Field(default=100_000, ge=500)  # the default and the ceiling
    child_deadline_seconds: float = Field(default=600.0, gt=0, allow_inf_nan=False)
    # A sub-agent with no model token and no tool result for this long is stalled: cancelled,
    # fenced and reassigned while attempts remain.
    stall_seconds: float = Field(default=90.0, gt=0, allow_inf_nan=False)
    max_attempts: int = Field(default=2, ge=1, le=10)
    delegate_timeout_seconds: float = Field(default=3_600.0, gt=0, allow_inf_nan=False)
    # A chat run's one progress message is edited at most this often (the last state always
    # lands); runs without a conversation log their progress this often, at least every 30 s.
    progress_edit_seconds: float = Field(default=3.0, ge=0.05, le=600, allow_inf_nan=False)


class AgentSettings(Section):
    """The agent loop."""

    enabled: bool = True
    chat_mode: Mode = "thinking"
    max_steps: int = Field(default=12, ge=1, le=200)
    repeated_call_limit: int = Field(default=2, ge=1)
    context_tokens: int = Field(default=120_000, ge=4_000)
    keep_recent_messages: int = Field(default=12, ge=2)
    tool_output_chars: int = Field(default=12_000, ge=500, le=1_000_000)
    tool_timeout_seconds: float = Field(default=60.0, gt=0)
    turn_timeout_seconds: float = Field(default=900.0, gt=0, allow_inf_nan=False)
    max_tool_calls_per_step: int = Field(default=8, ge=1, le=1000)
    max_tool_calls_per_turn: int = Field(default=40, ge=1, le=10_000)
    # Calls of one host-heavy tool (disk walks, process listings, log scans, read-only
    # commands) that run at once; more wait their turn.
    heavy_tool_concurrency: int = Field(default=2, ge=1, le=64)
    progress_after_seconds: float = Field(default=30.0, ge=0, allow_inf_nan=False)  # 0: never
    history_messages: int = Field(default=40, ge=2)  # compact when history passes this
    summary_timeout_seconds: float = Field(default=120.0, gt=0, allow_inf_nan=False)
    instructions: str = ""
    facts_in_prompt: int = Field(default=40, ge=0, le=500)  # newest live facts; 0: none
    # Recall hits added to the end of a chat turn's or an investigation's prompt (0: none).
    recall_hits: int = Field(default=3, ge=0, le=10)
    budget: BudgetSettings = Field(default_factory=BudgetSettings)
    swarm: SwarmSettings = Field(default_factory=SwarmSettings)


class PolicySettings(Section):
    """What tools may touch and which commands need a person's approval."""

    read_paths: list[str] = Field(
        default_factory=lambda: ["/var/log", "/proc", "/etc", "/tmp", "/srv", "/opt", "/home"]
    )
    deny_paths: list[str] = Field(
        default_factory=lambda: ["/etc/shadow", "/etc/gshadow", "/etc/sudoers", "/etc/ssh", "/root"]
    )
    max_read_bytes: int = Field(default=262_144, ge=1024, le=64 * 2**20)
    read_only_commands: list[str] = Field(
        default_factory=lambda: [
            "uptime",
            "df",
            "free",
            "ps",
            "top -b -n 1",
            "uname",
            "hostname",
            "whoami",
            "id",
            "ss",
            "ip addr",
            "ip route",
            "systemctl status",
            "systemctl is-active",
            "systemctl list-units",
            "journalctl",
            "du",
            "ls",
            "cat",
            "tail",
            "head",
            "wc",
            "date",
            "lsblk",
            "mount",
            "dmesg",
        ]
    )
    write_commands: list[str] = Field(default_factory=list)
    auto_approve: list[str] = Field(default_factory=list)
    approval_timeout_seconds: float = Field(default=300.0, gt=0)
    command_timeout_seconds: float = Field(default=30.0, gt=0)
    max_output_bytes: int = Field(default=65_536, ge=1024, le=64 * 2**20)
    redact_patterns: list[str] = Field(default_factory=list)
    # "auto": read-only tools run in a bubblewrap sandbox, or need approval when none can be set
    # up; "off": no sandbox, so every read-only tool needs approval.
    sandbox: Literal["auto", "off"] = "auto"

    @field_validator("redact_patterns")
    @classmethod
    def _valid_regexes(cls, patterns: list[str]) -> list[str]:
        from daemon.core.redact import check_pattern

        for pattern in patterns:
            check_regex(pattern)
            check_pattern(pattern)  # redaction runs on RE2: linear time on any text
        return patterns


class RemediationView(Protocol):
    """What the remediation tools read of ``[incidents.remediation]``."""

    @property
    def restart_command(self) -> list[str]: ...

    @property
    def clean_dirs(self) -> list[Path]: ...


class IncidentsView(Protocol):
    @property
    def remediation(self) -> RemediationView: ...


class StateView(Protocol):
    @property
    def secrets_dir(self) -> Path | None: ...


class AgentConfig(Protocol):
    """The part of the whole configuration the agent and its tools read.

    ``daemon.config.Settings`` satisfies it; the agent never imports the settings root (which
    assembles the sections of every package above the agent).
    """

    @property
    def agent(self) -> AgentSettings: ...

    @property
    def llm(self) -> LlmSettings: ...

    @property
    def policy(self) -> PolicySettings: ...

    @property
    def state(self) -> StateView: ...

    @property
    def state_dir(self) -> Path: ...

    @property
    def incidents(self) -> IncidentsView: ...
