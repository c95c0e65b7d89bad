"""Settings of the watchers ([watchers] and its lists); each watcher's own model lives beside it."""

from __future__ import annotations

from pydantic import Field, model_validator

from daemon.core.section import Section
from daemon.watchers.command import CommandCheckSettings
from daemon.watchers.files import FileWatchSettings
from daemon.watchers.http import HttpCheckSettings
from daemon.watchers.logs import LogWatchSettings
from daemon.watchers.port import PortCheckSettings
from daemon.watchers.process import ProcessWatchSettings


class HostWatcherSettings(Section):
    """psutil host metrics sampled on an interval."""

    enabled: bool = True
    interval_seconds: float = Field(default=30.0, ge=1.0)
    history: int = Field(default=120, ge=1)
    mounts: list[str] = Field(default_factory=list)  # watch these even if tmpfs; [] = all disks


class WatchersSettings(Section):
    host: HostWatcherSettings = Field(default_factory=HostWatcherSettings)
    processes: list[ProcessWatchSettings] = Field(default_factory=list)
    ports: list[PortCheckSettings] = Field(default_factory=list)
    http: list[HttpCheckSettings] = Field(default_factory=list)
    commands: list[CommandCheckSettings] = Field(default_factory=list)
    files: list[FileWatchSettings] = Field(default_factory=list)
    logs: list[LogWatchSettings] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> WatchersSettings:
        for kind in ("processes", "ports", "http", "commands", "files", "logs"):
            names = [item.name for item in getattr(self, kind)]
            repeated = sorted({name for name in names if names.count(name) > 1})
            if repeated:
                raise ValueError(
                    f"[[watchers.{kind}]] names must be unique; repeated: {', '.join(repeated)}"
                )
        return self
