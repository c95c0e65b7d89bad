"""Why an alert should not be notified right now: a silence, a maintenance window, inhibition."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from daemon.alerting.matchers import Matcher, match_all, parse_matchers
from daemon.incidents.settings import InhibitSettings, MaintenanceSettings
from memory.incidents import Silence

log = logging.getLogger(__name__)

_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class MaintenanceWindow:
    """A recurring weekly window in a local time zone (DST-aware via zoneinfo)."""

    def __init__(self, settings: MaintenanceSettings) -> None:
        self.name = settings.name
        self.matchers = parse_matchers(settings.matchers)
        self._days = {_WEEKDAYS.index(day) for day in settings.days}
        hours, minutes = (int(part) for part in settings.start.split(":"))
        self._start = timedelta(hours=hours, minutes=minutes)
        self._length = timedelta(minutes=settings.duration_minutes)
        self._zone = ZoneInfo(settings.timezone)

    def active(self, now: datetime) -> bool:
        local = now.astimezone(self._zone)
        # A window may have started on one of the previous days and still be running.
        for back in range(0, 8):
            day = (local - timedelta(days=back)).date()
            if day.weekday() not in self._days:
                continue
            start = datetime.combine(day, datetime.min.time(), self._zone) + self._start
            if start <= local < start + self._length:
                return True
        return False


class Inhibition:
    """While an alert matching ``source`` fires, ``target`` alerts with equal labels are muted."""

    def __init__(self, settings: InhibitSettings) -> None:
        self.source = parse_matchers(settings.source)
        self.target = parse_matchers(settings.target, narrow=False)
        self.equal = list(settings.equal)

    def inhibits(self, labels: Mapping[str, str], firing: Sequence[Mapping[str, str]]) -> bool:
        if not match_all(self.target, labels):
            return False
        for other in firing:
            if other == labels or not match_all(self.source, other):
                continue
            if match_all(self.target, other) and match_all(self.source, labels):
                continue  # an alert never inhibits itself or its peers
            if all(other.get(key, "") == labels.get(key, "") for key in self.equal):
                return True
        return False


class Muter:
    """Decides, for one alert, the reason it is muted (or None)."""

    def __init__(
        self, inhibit: Sequence[InhibitSettings], maintenance: Sequence[MaintenanceSettings]
    ) -> None:
        self.inhibitions = [Inhibition(item) for item in inhibit]
        self.windows = [MaintenanceWindow(item) for item in maintenance]

    def reason(
        self,
        labels: Mapping[str, str],
        *,
        now: datetime,
        silences: Sequence[Silence],
        firing: Sequence[Mapping[str, str]],
    ) -> str | None:
        for silence in silences:
            matchers = _parsed(silence) if silence.active(now) else None
            if matchers is not None and match_all(matchers, labels):
                return f"silenced by #{silence.id} until {silence.ends_at:%Y-%m-%d %H:%M} UTC"
        for window in self.windows:
            if window.active(now) and match_all(window.matchers, labels):
                return f"maintenance window {window.name!r}"
        for inhibition in self.inhibitions:
            if inhibition.inhibits(labels, firing):
                return "inhibited by " + ", ".join(str(m) for m in inhibition.source)
        return None


def silenced_until(
    labels: Mapping[str, str], now: datetime, silences: Sequence[Silence]
) -> datetime | None:
    """When the last silence muting ``labels`` ends (None: no silence mutes them)."""
    ends = [
        s.ends_at
        for s in silences
        if s.active(now) and (matchers := _parsed(s)) is not None and match_all(matchers, labels)
    ]
    return max(ends, default=None)


_PARSED: dict[tuple[str, ...], list[Matcher] | None] = {}


def _parsed(silence: Silence) -> list[Matcher] | None:
    """The silence's matchers; None (it mutes nothing) for one stored before a regex was refused."""
    key = tuple(silence.matchers)
    if key in _PARSED:
        return _PARSED[key]
    if len(_PARSED) > 1000:
        _PARSED.clear()
    try:
        found: list[Matcher] | None = [Matcher.parse(text) for text in key]
    except ValueError as exc:
        log.warning("silence #%s mutes nothing: %s; add a new one", silence.id, exc)
        found = None
    _PARSED[key] = found
    return found
