"""Config models for the daily digest and quiet hours (a task's own spec is
:class:`daemon.core.tasks.TaskSpec`)."""

from __future__ import annotations

from pydantic import Field, field_validator

from daemon.core.section import Section, check_hhmm, check_zone
from daemon.core.tasks import TaskSpec, check_target


class DigestSettings(Section):
    """A daily summary: incidents, task outcomes, budget. Skipped when nothing happened."""

    enabled: bool = False
    time: str = "09:00"  # local time, HH:MM
    deliver_to: str = "console"

    _target = field_validator("deliver_to")(lambda cls, v: check_target(v))

    _time = field_validator("time")(lambda cls, value: check_hhmm(value))


class QuietHoursSettings(Section):
    """During these hours only critical messages are delivered; the rest wait until the end."""

    enabled: bool = False
    start: str = "22:00"
    end: str = "07:00"

    _times = field_validator("start", "end")(lambda cls, value: check_hhmm(value))


class SchedulerSettings(Section):
    enabled: bool = True
    timezone: str = "UTC"
    misfire_grace_seconds: float = Field(default=300.0, ge=1)
    keep_runs_days: float = Field(default=30.0, gt=0)  # task run history kept this long
    tasks: list[TaskSpec] = Field(default_factory=list)
    digest: DigestSettings = Field(default_factory=DigestSettings)
    quiet_hours: QuietHoursSettings = Field(default_factory=QuietHoursSettings)

    @field_validator("tasks")
    @classmethod
    def _unique(cls, tasks: list[TaskSpec]) -> list[TaskSpec]:
        names = [task.name for task in tasks]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"task names must be unique; repeated: {', '.join(repeated)}")
        return tasks

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return check_zone(value)
