"""Quiet hours: a daily local-time window in which only critical messages go out."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from daemon.tasks.settings import QuietHoursSettings


class QuietHours:
    """``hold_until(now)``: when a non-critical message may be sent (None: now)."""

    def __init__(self, settings: QuietHoursSettings, timezone: str) -> None:
        self.enabled = settings.enabled
        self._start = _clock_time(settings.start)
        self._end = _clock_time(settings.end)
        self._zone = ZoneInfo(timezone)

    def hold_until(self, now: datetime) -> datetime | None:
        if not self.enabled or self._start == self._end:
            return None
        local = now.astimezone(self._zone)
        today = local.date()
        for day in (today - timedelta(days=1), today):
            start = datetime.combine(day, self._start, self._zone)
            end_day = day if self._end > self._start else day + timedelta(days=1)
            end = datetime.combine(end_day, self._end, self._zone)
            if start <= local < end:
                return end
        return None


def _clock_time(text: str) -> time:
    hours, minutes = (int(part) for part in text.split(":"))
    return time(hours, minutes)
