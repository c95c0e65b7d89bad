"""Config models for the daily digest and quiet hours (a task's own spec is
:class:`daemon.core.tasks.TaskSpec`)."""

from __future__ import annotations

from pydantic import field_validator

from daemon.core.section import Section, check_hhmm
from daemon.core.tasks import check_target


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
