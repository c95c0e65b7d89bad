"""APScheduler 3.11 triggers that fire at exactly a schedule's slots (the grammar and the slot
arithmetic are in :mod:`daemon.core.schedule`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from daemon.core.schedule import (
    EPOCH,
    WEEKDAYS,
    Schedule,
    as_utc,
    describe,
    next_slot,
    parse_cron,
    zone_info,
)


class SlotCronTrigger(CronTrigger):  # type: ignore[misc]  # untyped in APScheduler 3
    """A CronTrigger (weekdays translated to APScheduler's 0 = Monday) firing at exactly the
    schedule's slots: ``get_next_fire_time`` uses ``next_slot``, so wake-ups and catch-up agree
    also on DST days and for crontab's day-of-month OR day-of-week rule."""

    __slots__ = ("schedule",)

    def __init__(self, schedule: Schedule) -> None:
        assert schedule.cron is not None
        cron = parse_cron(schedule.cron)
        fields = ((cron.minutes, 60), (cron.hours, 24), (cron.days, 31), (cron.months, 12))
        texts = ("*" if len(v) == n else ",".join(map(str, sorted(v))) for v, n in fields)
        days = sorted(cron.weekdays, key=lambda d: (d - 1) % 7)  # APScheduler: 0 = Monday
        dow = "*" if len(days) == 7 else ",".join(WEEKDAYS[d] for d in days)
        kwargs = dict(zip(("minute", "hour", "day", "month"), texts, strict=True))
        super().__init__(**kwargs, day_of_week=dow, timezone=zone_info(schedule.timezone))
        self.schedule = schedule

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        # as CronTrigger: the first slot after the previous one, or at/after now if that is earlier
        after = now - timedelta(microseconds=1)
        if previous_fire_time is not None and now >= previous_fire_time:
            after = previous_fire_time
        return next_slot(self.schedule, after)  # UTC: local times in a DST fold compare unequal

    def __reduce__(self) -> tuple[Any, ...]:
        return (SlotCronTrigger, (self.schedule,))

    def __str__(self) -> str:
        return describe(self.schedule)


def to_trigger(schedule: Schedule) -> BaseTrigger:
    """The APScheduler 3.11 trigger firing at exactly the schedule's slots (UTC fire times)."""
    if schedule.kind == "cron":
        return SlotCronTrigger(schedule)
    if schedule.kind == "interval":  # absolute time: UTC fire times, like our slots
        anchor = as_utc(schedule.anchor) if schedule.anchor is not None else EPOCH
        seconds = int(schedule.interval_seconds or 0)
        return IntervalTrigger(seconds=seconds, start_date=anchor, timezone=UTC)
    assert schedule.at is not None
    return DateTrigger(run_date=as_utc(schedule.at), timezone=UTC)
