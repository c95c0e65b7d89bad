"""Pure schedule logic for recurring tasks: slots, catch-up, APScheduler triggers.

No clock reads, no I/O. A *slot* is a scheduled time (not a run time): deterministic, UTC-aware,
whole seconds, so ``UNIQUE(task, slot)`` claims give the same answer across restarts.

Cron follows crontab (weekday 0 and 7 = Sunday; if day-of-month and day-of-week are both
restricted, either may match) on the wall clock of an IANA time zone. Daylight saving time:

- a wall time that does not exist (02:30 on 2026-03-29 in Europe/Berlin) fires once, shifted
  forward by the gap (03:30 CEST), as APScheduler 3.11 does;
- a wall time that happens twice (02:30 on 2026-10-25 in Europe/Berlin) fires once, at its first
  occurrence (stock APScheduler 3.11 fires it twice); jobs whose hour field covers every hour
  (``*/15 * * * *``) fire in both, keeping their pace in real time (as cronie does).

Intervals are absolute time (``anchor + k * interval``, k >= 0), unaffected by DST.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from difflib import get_close_matches
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from daemon.core.durations import DurationError, parse_duration
from daemon.core.errors import ScheduleError

MIN_INTERVAL_SECONDS = 1
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # interval anchor when none is given
_JUMP = timedelta(hours=3)  # more than any current UTC offset change (Antarctica/Troll: 2 h)
_MAX_DAYS = 366 * 8 + 2  # Feb 29 can be 8 years away (2096 -> 2104)
_MACROS = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@weekly": "0 0 * * 0"}
_MACROS |= {"@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *"}
_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
WEEKDAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]  # crontab numbering: 0 = Sunday
_Field = tuple[str, int, int, list[str], str]  # name, low, high, names, allowed (for messages)
_FIELDS: list[_Field] = [("minute", 0, 59, [], "0-59"), ("hour", 0, 23, [], "0-23")]
_FIELDS += [("day-of-month", 1, 31, [], "1-31"), ("month", 1, 12, _MONTHS, "1-12 or jan-dec")]
_FIELDS += [("day-of-week", 0, 7, WEEKDAYS, "0-7 (0 and 7 = Sunday) or sun-sat")]
_ITEM = re.compile(r"^(?:(\*)|([0-9a-z]+)(?:-([0-9a-z]+))?)(?:/([0-9]+))?$")
_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_WHAT = {"cron": "cron", "interval": "interval_seconds", "once": "at"}


@dataclass(frozen=True, slots=True, kw_only=True)
class Schedule:
    """When a task is due: a crontab line, a fixed interval or a single time (validated)."""

    kind: Literal["cron", "interval", "once"]
    cron: str | None = None  # 5-field crontab or @hourly/@daily/@weekly/@monthly/@yearly
    interval_seconds: float | None = None  # whole seconds, at least 1
    at: datetime | None = None  # one-shot time, aware
    timezone: str = "UTC"  # IANA name: cron fields and describe() use its wall clock
    anchor: datetime | None = None  # interval slots are anchor + k*interval (None: the epoch)

    def __post_init__(self) -> None:
        zone_info(self.timezone)
        if (want := _WHAT.get(self.kind)) is None:
            raise ScheduleError(f"unknown schedule kind {self.kind!r}: use cron, interval or once")
        given = [name for name in _WHAT.values() if getattr(self, name) is not None]
        if given != [want]:
            got = ", ".join(given) or "none"
            raise ScheduleError(f"a schedule of kind {self.kind!r} takes {want} (got {got})")
        if self.cron is not None:
            parse_cron(self.cron)
        if self.interval_seconds is not None:
            _check_interval(self.interval_seconds)
        for name, value in (("at", self.at), ("anchor", self.anchor)):
            if value is not None and value.utcoffset() is None:
                raise ScheduleError(f"{name} {value.isoformat()} has no time zone: make it aware")


@dataclass(frozen=True, slots=True)
class _Cron:
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: set[int]
    months: set[int]
    weekdays: set[int]  # crontab numbering, 0 = Sunday
    either: bool  # neither day field starts with '*': a day matching either one fires

    def day_matches(self, day: date) -> bool:
        dom, dow = day.day in self.days, (day.isoweekday() % 7) in self.weekdays
        return (dom or dow) if self.either else (dom and dow)


def zone_info(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        close = get_close_matches(str(name), sorted(available_timezones()), n=1, cutoff=0.8)
        tip = f" (did you mean {close[0]!r}?)" if close else ""
        hint = "use an IANA name such as 'Europe/Berlin' or 'UTC'"
        raise ScheduleError(f"unknown time zone {name!r}{tip}: {hint}") from None


def _check_interval(seconds: float) -> None:
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not math.isfinite(seconds)
    ):
        raise ScheduleError(f"interval {seconds!r} is not a finite number of seconds")
    if seconds < MIN_INTERVAL_SECONDS:
        raise ScheduleError(f"interval {seconds} s is too short: the minimum is 1 s")
    if seconds != int(seconds):
        raise ScheduleError(f"interval {seconds} s is not a whole number of seconds: round it")


@lru_cache(maxsize=512)
def parse_cron(text: str) -> _Cron:
    expr = _MACROS.get(text.strip().lower(), text.strip().lower())
    if expr.startswith("@"):
        raise ScheduleError(f"unknown cron macro {text.strip()!r}: use {', '.join(_MACROS)}")
    parts = expr.split()
    if len(parts) != 5:
        raise ScheduleError(
            f"cron {text!r} has {len(parts)} fields, expected 5: minute hour day-of-month month "
            "day-of-week (e.g. '0 9 * * mon-fri')"
        )
    mins, hours, days, months, dows = (
        _parse_field(text, part, field) for part, field in zip(parts, _FIELDS, strict=True)
    )
    either = not parts[2].startswith("*") and not parts[4].startswith("*")
    longest = {2: 29, 4: 30, 6: 30, 9: 30, 11: 30}
    if not either and not any(min(days) <= longest.get(m, 31) for m in months):
        raise ScheduleError(
            f"cron {text!r} never fires: no month in its month field has day {min(days)}; pick "
            "a day that exists"
        )
    return _Cron(
        tuple(sorted(mins)), tuple(sorted(hours)), days, months, {d % 7 for d in dows}, either
    )


def _parse_field(text: str, part: str, field: _Field) -> set[int]:
    name, low, high, names, allowed = field
    out: set[int] = set()
    for item in part.split(","):
        bad = f"cron {text!r}: {name} field {item!r}"
        match = _ITEM.match(item)
        if not match:
            raise ScheduleError(
                f"{bad} is not valid: write '*', 'N', 'N-M', '*/STEP' or 'N-M/STEP' (allowed: "
                f"{allowed})"
            )
        star, first, last, step = match.groups()
        if step is not None and int(step) < 1:
            raise ScheduleError(f"{bad} has step 0: the step must be at least 1")
        start = low if star else _value(bad, first, field)
        stop = _value(bad, last, field) if last else (high if star or step else start)
        stop = 7 if stop < start and last in ("sun", "0") else stop  # "sat-sun" ends on Sunday
        if stop < start:
            raise ScheduleError(f"{bad} is a backwards range: write the smaller value first")
        out.update(range(start, stop + 1, int(step or 1)))
    return out


def _value(bad: str, token: str, field: _Field) -> int:
    name, low, high, names, allowed = field
    if not token.isdigit() and token not in names:
        raise ScheduleError(
            f"{bad} is not {'a number or name' if names else 'a number'} (allowed: {allowed})"
        )
    value = int(token) if token.isdigit() else names.index(token) + (name == "month")
    if not low <= value <= high:
        raise ScheduleError(f"{bad} is out of range {allowed}")
    return value


def _aware(value: datetime | str, zone: ZoneInfo, what: str) -> datetime:
    """An aware datetime from a datetime or ISO string; naive times are wall times in zone."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ScheduleError(
                f"{what} {value!r} is not an ISO 8601 time: write e.g. '2026-12-01T09:00' or "
                "'2026-12-01 09:00+01:00'"
            ) from None
    if value.utcoffset() is not None:
        return value
    local = value.replace(tzinfo=zone)
    if local.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != value:
        raise ScheduleError(
            f"{what} {value:%Y-%m-%d %H:%M} does not exist in {zone.key} (the clocks jump "
            "forward then): pick another time"
        )
    return local


def parse_schedule(
    *,
    cron: str | None = None,
    interval_seconds: float | None = None,
    at: datetime | str | None = None,
    timezone: str = "UTC",
    anchor: datetime | str | None = None,
    now: datetime | None = None,
) -> Schedule:
    """Validate user input into a Schedule; raises ScheduleError naming what is wrong.

    Interval anchors default to ``now`` (the task's creation time). A one-shot at or before
    ``now`` is refused; naive times are wall times in ``timezone`` (the first if ambiguous).
    """
    pairs = (("cron", cron), ("interval", interval_seconds), ("at", at))
    if len(given := [name for name, value in pairs if value is not None]) != 1:
        got = " and ".join(given) if given else "none"
        raise ScheduleError(f"give exactly one of cron, interval or at (got {got})")
    zone = zone_info(timezone)
    if cron is not None:
        return Schedule(kind="cron", cron=cron.strip(), timezone=timezone)
    if interval_seconds is not None:
        base = anchor if anchor is not None else now
        start = _aware(base, zone, "anchor").replace(microsecond=0) if base is not None else None
        return Schedule(
            kind="interval", interval_seconds=interval_seconds, timezone=timezone, anchor=start
        )
    assert at is not None
    when = _aware(at, zone, "at").replace(microsecond=0)
    if now is not None and when <= now:
        raise ScheduleError(
            f"one-shot time {_show(when, zone)} is in the past (now {_show(now, zone)}): "
            "give a future time"
        )
    return Schedule(kind="once", at=when, timezone=timezone)


def as_utc(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(microsecond=0)


def next_slot(schedule: Schedule, after: datetime) -> datetime | None:
    """The first slot strictly after ``after`` (UTC, whole seconds); None if a one-shot is done."""
    if after.utcoffset() is None:
        raise ValueError(f"after {after.isoformat()} must be timezone-aware")
    if schedule.at is not None:
        return as_utc(schedule.at) if as_utc(schedule.at) > after else None
    if schedule.kind == "interval":
        step = timedelta(seconds=int(schedule.interval_seconds or 0))
        anchor = as_utc(schedule.anchor) if schedule.anchor is not None else EPOCH
        return anchor if after < anchor else anchor + ((after - anchor) // step + 1) * step
    assert schedule.cron is not None
    return _cron_next(parse_cron(schedule.cron), zone_info(schedule.timezone), after)


def slots_between(schedule: Schedule, start: datetime, end: datetime, limit: int) -> list[datetime]:
    """Slots in (start, end], oldest first: the FIRST ``limit`` of them (for catch-up)."""
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    out: list[datetime] = []
    slot = next_slot(schedule, start)
    while len(out) < limit and slot is not None and slot <= end:
        out.append(slot)
        slot = next_slot(schedule, slot)
    return out


def _next_wall(cron: _Cron, wall: datetime) -> datetime | None:
    """The first matching naive wall-clock minute at or after ``wall``."""
    if wall.second or wall.microsecond:
        wall = wall.replace(second=0, microsecond=0) + timedelta(minutes=1)
    day, hour, minute = wall.date(), wall.hour, wall.minute
    for _ in range(_MAX_DAYS):
        if day.month not in cron.months:
            day, hour, minute = date(day.year + day.month // 12, day.month % 12 + 1, 1), 0, 0
            continue
        if cron.day_matches(day):
            for h in cron.hours[bisect_left(cron.hours, hour) :]:
                i = bisect_left(cron.minutes, minute) if h == hour else 0
                if i < len(cron.minutes):
                    return datetime(day.year, day.month, day.day, h, cron.minutes[i])
        day, hour, minute = day + timedelta(days=1), 0, 0
    return None


def _instants(cron: _Cron, wall: datetime, zone: ZoneInfo) -> list[datetime]:
    """The UTC instants a wall time fires at (DST rules in the module docstring)."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if first < second and len(cron.hours) == 24:  # repeated hour, job runs every hour
        return [first, second]
    return [first]  # unique, first occurrence, or nonexistent shifted forward by the gap


def _cron_next(cron: _Cron, zone: ZoneInfo, after: datetime) -> datetime | None:
    local = after.astimezone(zone).replace(tzinfo=None)
    best: datetime | None = None
    wall = _next_wall(cron, local)
    while wall is not None and best is None:  # the first match in wall order
        best = next((t for t in _instants(cron, wall, zone) if t > after), None)
        best_wall, wall = wall, _next_wall(cron, wall + timedelta(minutes=1))
    if best is None:
        return None
    before, later = (after - _JUMP).astimezone(zone), (best + _JUMP).astimezone(zone)
    if best - after < timedelta(days=7) and before.utcoffset() == later.utcoffset():
        return best  # no offset change near: wall order is time order
    wall = _next_wall(cron, local - _JUMP)  # else wall and time order may differ: look around
    while wall is not None and wall <= best_wall + _JUMP:
        best = min([best, *(t for t in _instants(cron, wall, zone) if t > after)])
        wall = _next_wall(cron, wall + timedelta(minutes=1))
    return best


def _show(value: datetime, zone: ZoneInfo) -> str:
    local = value.astimezone(zone)
    return f"{local:%Y-%m-%d %H:%M}" + (f":{local:%S}" if local.second else "") + f" {zone.key}"


def describe(schedule: Schedule) -> str:
    """Human text: "cron '0 9 * * mon-fri' (Europe/Berlin)", "every 15m", "once at … UTC"."""
    if schedule.kind == "cron":
        return f"cron '{schedule.cron}' ({schedule.timezone})"
    if schedule.kind == "interval":
        assert schedule.interval_seconds is not None
        seconds, text = int(schedule.interval_seconds), ""
        for unit, size in list(_UNITS.items())[1:]:
            if seconds >= size:
                text, seconds = f"{text}{seconds // size}{unit}", seconds % size
        return f"every {text}"
    assert schedule.at is not None
    return f"once at {_show(schedule.at, zone_info(schedule.timezone))}"


def parse_plain_interval(text: str) -> float:
    """Whole seconds, at least MIN_INTERVAL_SECONDS, in a typed interval such as "15m", "1.5h"
    or "1h30m" (the grammar of :mod:`daemon.core.durations`)."""
    try:
        seconds = parse_duration(text, "interval").total_seconds()
    except DurationError as exc:
        raise ScheduleError(str(exc)) from None
    _check_interval(seconds)
    return seconds
