"""Configuration: pydantic-settings models for every section and the loader.

Precedence, highest first: CLI flags (passed in as overrides) > environment ``NIGHTSHIFT_*``
(nested with ``__``) > secret files in ``$CREDENTIALS_DIRECTORY`` (systemd LoadCredential) or
``[state] secrets_dir`` > the TOML file > defaults.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NestedSecretsSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from daemon.agent.settings import AgentSettings, LlmSettings, PolicySettings
from daemon.alerting.settings import RuleSettings
from daemon.config.env import from_environment
from daemon.core.errors import ConfigError
from daemon.core.section import Section, check_file_name, check_sane
from daemon.incidents.settings import CHANNEL_NAMES, IncidentSettings, RouteSettings
from daemon.tasks.settings import SchedulerSettings
from daemon.watchers.settings import WatchersSettings
from integrations.console import ConsoleChannelSettings
from integrations.matrix.settings import MatrixChannelSettings
from integrations.slack.settings import SlackChannelSettings
from integrations.telegram.settings import TelegramChannelSettings
from memory.settings import MemorySettings

__all__ = ["Settings", "default_config_path", "default_state_dir", "load_settings"]

MAX_SOCKET_PATH = 107  # sizeof(sun_path) on Linux, less the terminating NUL


class StateSettings(Section):
    """Where durable state lives."""

    dir: Path | None = None
    database: str = "nightshift.db"
    busy_timeout_ms: int = Field(default=5000, ge=0)
    secrets_dir: Path | None = None

    _database = field_validator("database")(lambda cls, value: check_file_name(value))


class ApiSettings(Section):
    """The local API: a unix socket always, TCP optionally (for /healthz, /metrics)."""

    socket: str = "nightshift.sock"
    tcp_host: str = "127.0.0.1"
    tcp_port: int | None = Field(default=None, ge=1, le=65535)
    webhook_token: SecretStr | None = None
    # Hostile or broken senders: a request's headers must arrive within header_timeout_seconds
    # (also the idle keep-alive limit), the webhook's body within body_timeout_seconds; at most
    # max_connections at once (lowered to stay under the open-file limit), the rest get a 503.
    header_timeout_seconds: float = Field(default=10.0, gt=0, le=3600)
    body_timeout_seconds: float = Field(default=10.0, gt=0, le=3600)
    max_connections: int = Field(default=256, ge=1, le=65536)
    # The largest Alertmanager payload taken (one group's full snapshot: ~400 bytes an alert).
    # Alertmanager never retries a 413, so this errs large; a refused payload raises an alert.
    webhook_max_bytes: int = Field(default=64 * 1024 * 1024, ge=65_536, le=1024**3)

    _socket = field_validator("socket")(lambda cls, value: check_file_name(value))

    @field_validator("tcp_host")
    @classmethod
    def _explicit_host(cls, value: str) -> str:
        if not value.strip() or any(ch.isspace() for ch in value):
            raise ValueError(
                f"{value!r} is not a host; give an address such as 127.0.0.1 (this host only), "
                'or "0.0.0.0" / "::" to listen on every interface on purpose'
            )
        return value


class ChannelsSettings(Section):
    console: ConsoleChannelSettings = Field(default_factory=ConsoleChannelSettings)
    slack: SlackChannelSettings = Field(default_factory=SlackChannelSettings)
    telegram: TelegramChannelSettings = Field(default_factory=TelegramChannelSettings)
    matrix: MatrixChannelSettings = Field(default_factory=MatrixChannelSettings)


class RuntimeSettings(Section):
    """Process lifecycle."""

    drain_timeout_seconds: float = Field(default=20.0, ge=0, le=600)
    restart_initial_seconds: float = Field(default=1.0, gt=0)
    restart_max_seconds: float = Field(default=300.0, gt=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class Settings(BaseSettings):
    """The whole effective configuration."""

    model_config = SettingsConfigDict(
        env_prefix="NIGHTSHIFT_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    llm: LlmSettings = Field(default_factory=LlmSettings)
    state: StateSettings = Field(default_factory=StateSettings)
    agent: AgentSettings = Field(default_factory=AgentSettings)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    channels: ChannelsSettings = Field(default_factory=ChannelsSettings)
    watchers: WatchersSettings = Field(default_factory=WatchersSettings)
    rules: list[RuleSettings] = Field(default_factory=list)
    incidents: IncidentSettings = Field(default_factory=IncidentSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    memory: MemorySettings = Field(default_factory=MemorySettings)
    routes: list[RouteSettings] = Field(default_factory=list)
    default_route: list[str] = Field(default_factory=lambda: ["console"])

    @field_validator("default_route")
    @classmethod
    def _sane_route(cls, targets: list[str]) -> list[str]:
        check_sane(targets)
        return targets

    @model_validator(mode="after")
    def _routes_use_enabled_channels(self) -> Settings:
        enabled = self.enabled_channels
        scheduler = self.scheduler
        targets = [(f"scheduler.tasks.{i} ({t.name}).deliver_to", t.deliver_to)
                   for i, t in enumerate(scheduler.tasks)]  # fmt: skip
        targets.append(("scheduler.digest.deliver_to", scheduler.digest.deliver_to))
        for where, target in targets:
            channel = target.split(":", 1)[0]
            if channel not in enabled:
                raise ValueError(
                    f"{where}: channel {channel!r} is not enabled "
                    f"(set [channels.{channel}] enabled = true, or deliver elsewhere)"
                )
        for index, route in enumerate(self.routes):
            for target in route.to:
                channel = target.split(":", 1)[0]
                if channel not in enabled:
                    raise ValueError(
                        f"routes.{index}.to: channel {channel!r} is not enabled "
                        f"(set [channels.{channel}] enabled = true, or remove {target!r})"
                    )
        for target in self.default_route:
            channel = target.split(":", 1)[0]
            if channel not in enabled:
                known = "is not enabled" if channel in CHANNEL_NAMES else "is not a channel"
                raise ValueError(
                    f"default_route: channel {channel!r} {known} (use one of "
                    f"{', '.join(sorted(enabled)) or 'no channel: enable one'}, or set "
                    f"[channels.{channel}] enabled = true)"
                )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        secrets_dir = settings_cls.model_config.get("secrets_dir")
        if secrets_dir:
            sources.append(
                NestedSecretsSettingsSource(
                    file_secret_settings,
                    secrets_dir=secrets_dir,
                    secrets_nested_delimiter="__",
                    secrets_dir_missing="ok",
                    env_prefix="",
                )
            )
        if settings_cls.model_config.get("toml_file"):
            sources.append(TomlConfigSettingsSource(settings_cls))
        return tuple(sources)

    # -- derived paths -------------------------------------------------------------------------

    @property
    def state_dir(self) -> Path:
        return self.state.dir or default_state_dir()

    @property
    def database_path(self) -> Path:
        return self.state_dir / self.state.database

    @property
    def socket_path(self) -> Path:
        return self.state_dir / self.api.socket

    @property
    def enabled_channels(self) -> frozenset[str]:
        """The channels notifications and task results may go to."""
        return frozenset(name for name in CHANNEL_NAMES if getattr(self.channels, name).enabled)

    @property
    def agent_available(self) -> tuple[bool, str]:
        """Whether the agent can run, and why not when it cannot."""
        if not self.agent.enabled:
            return False, "the agent is disabled in config ([agent] enabled = false)"
        if self.llm.api_key is None or not self.llm.api_key.get_secret_value():
            return False, (
                "no LLM API key: set NIGHTSHIFT_LLM__API_KEY, [llm] api_key, or a credential "
                "file llm__api_key; the daemon keeps running with the agent off"
            )
        return True, "ready"


def default_state_dir() -> Path:
    """$STATE_DIRECTORY under systemd, else the XDG state directory."""
    systemd_dir = os.environ.get("STATE_DIRECTORY")
    if systemd_dir:
        return Path(systemd_dir.split(":")[0])
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "nightshift"


def default_config_path() -> Path | None:
    """$CONFIGURATION_DIRECTORY/config.toml under systemd, else /etc/nightshift/config.toml."""
    candidates = []
    systemd_dir = os.environ.get("CONFIGURATION_DIRECTORY")
    if systemd_dir:
        candidates.append(Path(systemd_dir.split(":")[0]) / "config.toml")
    candidates.append(Path("/etc/nightshift/config.toml"))
    return next((path for path in candidates if path.is_file()), None)


def load_settings(
    config_path: Path | None = None,
    *,
    state_dir: Path | None = None,
    overrides: dict[str, Any] | None = None,
    environ_secrets: bool = True,
) -> Settings:
    """Build the effective settings or raise ConfigError naming the key and the problem."""
    if config_path is not None:
        _check_toml(config_path)
    secrets_dir = _secrets_dir(config_path) if environ_secrets else None
    config = SettingsConfigDict(**Settings.model_config)
    config["toml_file"] = config_path
    config["secrets_dir"] = secrets_dir
    loader: type[Settings] = type("Settings", (Settings,), {"model_config": config})
    init: dict[str, Any] = dict(overrides or {})
    if state_dir is not None:
        init.setdefault("state", {})["dir"] = state_dir
    _check_secrets_dir(secrets_dir, config_path)
    try:
        settings = loader(**init)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, config_path)) from None
    except (SettingsError, OSError) as exc:  # the credentials directory, read by the loader
        raise ConfigError(f"{_secrets_key(config_path)}: {secrets_dir}: {exc}") from None
    except RecursionError:  # JSON in an environment variable or a credential file
        raise ConfigError(_too_deep_outside(secrets_dir)) from None
    settings = Settings.model_validate(settings.model_dump())
    _check_socket_path(settings, config_path)
    from daemon.config.secrets import register_secrets

    register_secrets(settings)  # masked verbatim in logs, SQLite, prompts and output from now on
    return settings


MAX_TOML_DEPTH = 32  # tables and arrays nested deeper than any real config


def _secrets_key(config_path: Path | None) -> str:
    """Which setting chose the credentials directory, as the operator would name it."""
    if os.environ.get("CREDENTIALS_DIRECTORY"):
        return "$CREDENTIALS_DIRECTORY"
    if os.environ.get("NIGHTSHIFT_STATE__SECRETS_DIR"):
        return "$NIGHTSHIFT_STATE__SECRETS_DIR"
    return f"{config_path}: state.secrets_dir" if config_path else "state.secrets_dir"


def _check_secrets_dir(path: Path | None, config_path: Path | None) -> None:
    """A credentials directory that exists must be a readable directory."""
    if path is None:
        return
    key = _secrets_key(config_path)
    try:
        exists = path.exists()
        is_dir = path.is_dir()
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{key}: unusable path {str(path)!r}: {exc}") from None
    if exists and not is_dir:
        raise ConfigError(
            f"{key}: {path} is not a directory; point it at the directory holding one file "
            "per secret (e.g. llm__api_key), or remove the setting"
        )
    if exists and not os.access(path, os.R_OK | os.X_OK):
        raise ConfigError(
            f"{key}: {path} is not readable by this user (uid {os.getuid()}); fix its "
            "owner/permissions, or point it elsewhere"
        )


def _check_socket_path(settings: Settings, config_path: Path | None) -> None:
    """The API socket's full path must fit in AF_UNIX's sun_path (107 bytes and a NUL)."""
    where = f"{config_path}: " if config_path else ""
    try:
        size = len(os.fsencode(settings.socket_path))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{where}api.socket: unusable path: {exc}") from None
    if size > MAX_SOCKET_PATH:
        raise ConfigError(
            f"{where}api.socket: the socket path {settings.socket_path} is {size} bytes, more "
            f"than the {MAX_SOCKET_PATH} a unix socket allows; choose a shorter state.dir "
            "(--state-dir) or an absolute, shorter api.socket"
        )


def _secrets_dir(config_path: Path | None) -> Path | None:
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    if credentials:
        return Path(credentials)
    env_dir = os.environ.get("NIGHTSHIFT_STATE__SECRETS_DIR")
    if env_dir:
        return Path(env_dir)
    if config_path is not None:
        try:
            data = tomllib.loads(config_path.read_text())
        except (OSError, tomllib.TOMLDecodeError):
            return None
        state = data.get("state")
        configured = state.get("secrets_dir") if isinstance(state, dict) else None
        if isinstance(configured, str):
            return Path(configured)
    return None


def _check_toml(path: Path) -> None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: config file not found; pass an existing file with --config, or leave "
            "--config out to run on the embedded defaults"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: {_too_deep(text)}") from None
    except ValueError:  # an integer of more digits than Python converts (4300)
        raise ConfigError(f"{path}: {_too_long_number(text)}") from None
    _check_depth(data, path)


_HUGE = "<nightshift: a huge number was here>"


def _too_long_number(text: str) -> str:
    """Where the integer too long to convert is: its setting's dotted name and line."""
    if (key := _huge_number_key(text)) is not None:
        return f"{key}: number out of range (thousands of digits)"
    for number, line in enumerate(text.splitlines(), 1):
        if re.search(r"\d{1000}", line.replace("_", "")):
            key = line.split("=", 1)[0].strip()[:60]
            return f"line {number} ({key}): number out of range (thousands of digits)"
    return "a number out of range (thousands of digits)"


def _huge_number_key(text: str) -> str | None:
    """The dotted name of the first such number (``agent.history_messages``), found by parsing
    the text with every such number replaced by a marker string; None if that does not parse."""
    marked = re.sub(r"[+-]?\d[\d_]{999,}", f"'{_HUGE}'", text)
    try:
        return _path_of(tomllib.loads(marked), "")
    except (tomllib.TOMLDecodeError, ValueError, RecursionError):
        return None


def _path_of(value: object, prefix: str) -> str | None:
    if value == _HUGE:
        return prefix
    children: list[tuple[str, object]] = []
    if isinstance(value, dict):
        children = [
            (f"{prefix}.{key}" if prefix else str(key), item) for key, item in value.items()
        ]
    elif isinstance(value, list):
        children = [(f"{prefix}.{index}", item) for index, item in enumerate(value)]
    for path, item in children:
        if (found := _path_of(item, path)) is not None:
            return found
    return None


def _too_deep(text: str) -> str:
    """Where the parser gave up on nesting: the first line opening too many brackets."""
    for number, line in enumerate(text.splitlines(), 1):
        if line.count("[") + line.count("{") > MAX_TOML_DEPTH:
            key = line.split("=", 1)[0].strip()[:60] if "=" in line else line[:60]
            return (
                f"line {number} ({key}): arrays or tables nested more than {MAX_TOML_DEPTH} "
                "levels deep; no setting nests like that (check against config.example.toml)"
            )
    return f"arrays or tables nested more than {MAX_TOML_DEPTH} levels deep; no setting does"


def _too_deep_outside(secrets_dir: Path | None) -> str:
    """Name the environment variable (or else the credentials) whose JSON nests too deeply."""
    for name, value in sorted(os.environ.items()):
        if name.startswith("NIGHTSHIFT_") and value.count("[") + value.count("{") > MAX_TOML_DEPTH:
            return f"${name}: JSON nested more than {MAX_TOML_DEPTH} levels deep; no setting does"
    where = f"a credential file in {secrets_dir}" if secrets_dir else "a setting"
    return f"{where}: JSON nested more than {MAX_TOML_DEPTH} levels deep; no setting does"


def _check_depth(data: dict[str, Any], path: Path) -> None:
    """Refuse values nested deeper than MAX_TOML_DEPTH, naming the key, without recursion."""
    stack: list[tuple[str, Any, int]] = [(key, value, 1) for key, value in data.items()]
    while stack:
        key, value, depth = stack.pop()
        if depth > MAX_TOML_DEPTH:
            shown = key if len(key) < 120 else key[:117] + "..."
            raise ConfigError(
                f"{path}: {shown}: nested more than {MAX_TOML_DEPTH} levels deep; no setting "
                "nests like that (check against config.example.toml)"
            )
        if isinstance(value, dict):
            stack.extend((f"{key}.{k}", v, depth + 1) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((f"{key}.{i}", v, depth + 1) for i, v in enumerate(value))


def _describe(exc: ValidationError, config_path: Path | None) -> str:
    where = f"{config_path}" if config_path else "configuration"
    found: dict[str, tuple[bool, str]] = {}  # key -> (only a type mismatch?, line)
    raw: Any = None
    if config_path is not None:
        try:
            raw = tomllib.loads(config_path.read_text())
        except (OSError, tomllib.TOMLDecodeError):
            raw = None
    for error in exc.errors():
        key = _key_path(error["loc"], raw)
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key (check the spelling against config.example.toml)"
        message += _HINTS.get(error["type"], "")
        given = error.get("input")
        shown = (
            "" if error["type"] == "extra_forbidden" or _looks_secret(key) else f" (got {given!r})"
        )
        if isinstance(given, dict | list):
            shown = ""
        if len(shown) > 90:  # a huge number or a long text: the key and the rule say enough
            shown = shown[:80] + "…)"
        line = f"  {key}: {message}{shown}{from_environment(error['loc'])}"
        if not error["loc"] and message.startswith("Value error, "):
            line = f"  {message.removeprefix('Value error, ')}"  # names its own keys
        # one line per key: of a union's alternatives, the most telling one
        vague = error["type"].endswith("_type")
        if key not in found or (found[key][0] and not vague) or not error["loc"]:
            found[key if error["loc"] else line] = (vague, line)
    for key, (vague, _) in list(found.items()):  # `int | list[int]`: the list's item says more
        if vague and any(other.startswith(f"{key}.") for other in found):
            del found[key]
    lines = [f"{where}: {len(found)} problem(s):", *(line for _, line in found.values())]
    return "\n".join(lines)


_HINTS = {
    "finite_number": " (inf and nan are not allowed; give a number)",
    "int_parsing_size": " (number out of range)",
}


_UNION_TAG = re.compile(r"str|int|float|bool|none|[\w-]+\[.*\]", re.DOTALL)


def _key_path(loc: tuple[Any, ...], raw: Any) -> str:
    """``rules.1.metric`` → ``rules.1 (DiskFull).metric``: list items named by their name."""
    parts: list[str] = []
    node = raw
    for part in loc:
        tag = isinstance(part, str) and _UNION_TAG.fullmatch(part)
        if tag and not (isinstance(node, dict) and part in node):
            continue  # which alternative of `str | int | …` pydantic tried: not a key
        text = str(part)
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
            if isinstance(node, dict) and isinstance(node.get("name"), str):
                text += f" ({node['name']})"
        else:
            node = None
        parts.append(text)
    return ".".join(parts) or "(top level)"


def _looks_secret(key: str) -> bool:
    return bool(re.search(r"(key|token|secret|password)", key, re.IGNORECASE))


def masked_dump(settings: Settings) -> dict[str, Any]:
    """The effective config as plain data with every secret-shaped value masked."""
    from daemon.config.secrets import masked_config

    return masked_config(settings)
