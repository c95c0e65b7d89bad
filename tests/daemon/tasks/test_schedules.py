"""Schedules: crontab weekdays, DST, intervals, one-shots, catch-up, APScheduler agreement."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from daemon.core.durations import EXAMPLES
from daemon.core.errors import ScheduleError
from daemon.core.schedule import (
    Schedule,
    describe,
    next_slot,
    parse_plain_interval,
    parse_schedule,
    slots_between,
)
from daemon.tasks.triggers import SlotCronTrigger, to_trigger

BERLIN = "Europe/Berlin"


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, sec: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, sec, tzinfo=UTC)


def cron(expr: str, timezone: str = "UTC") -> Schedule:
    return parse_schedule(cron=expr, timezone=timezone)


def slots(schedule: Schedule, start: datetime, end: datetime, limit: int = 1000) -> list[datetime]:
    return slots_between(schedule, start, end, limit)


def fired(
    trigger: BaseTrigger, start: datetime, end: datetime, *, stock: bool = False
) -> list[datetime]:
    """Fire times the way APScheduler's scheduler chains them: (previous, now=previous)."""
    get = CronTrigger.get_next_fire_time if stock else type(trigger).get_next_fire_time
    out: list[datetime] = []
    when = get(trigger, None, start + timedelta(microseconds=1))
    while when is not None and when <= end:
        out.append(when.astimezone(UTC))
        when = get(trigger, when, when)
    return out


def probes(zone: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    """Times to ask from: every 679 minutes, and every 7 minutes within 4 h of an offset change."""
    out = [start + timedelta(minutes=k, seconds=k % 60) for k in range(0, 6 * 7 * 1440, 679)]
    hours = [start + timedelta(hours=h) for h in range(int((end - start) / timedelta(hours=1)))]
    changes = [
        t
        for t in hours
        if t.astimezone(zone).utcoffset() != (t - HOUR).astimezone(zone).utcoffset()
    ]
    assert changes, "the window must hold a DST change"
    for change in changes:
        out += [change + timedelta(minutes=m, seconds=m % 60) for m in range(-240, 241, 7)]
    return out


HOUR = timedelta(hours=1)


# --- crontab weekdays ------------------------------------------------------------------------


def test_crontab_1_to_5_is_monday_to_friday() -> None:
    # 2026-06-01 is a Monday
    expected = [utc(2026, 6, d, 9) for d in (1, 2, 3, 4, 5, 8)]
    for expr in ("0 9 * * 1-5", "0 9 * * mon-fri", "0 9 * * MON-FRI", "0 9 * * 1,2,3,4,5"):
        assert slots(cron(expr), utc(2026, 5, 31, 12), utc(2026, 6, 8, 12)) == expected, expr


def test_crontab_0_and_7_and_sun_are_sunday() -> None:
    sundays = [utc(2026, 6, 7, 9), utc(2026, 6, 14, 9)]
    for expr in ("0 9 * * 0", "0 9 * * 7", "0 9 * * sun"):
        assert slots(cron(expr), utc(2026, 6, 1), utc(2026, 6, 15)) == sundays, expr
    weekend = [utc(2026, 6, 6, 9), utc(2026, 6, 7, 9)]
    for expr in ("0 9 * * sat-sun", "0 9 * * 6-7", "0 9 * * 6,0"):
        assert slots(cron(expr), utc(2026, 6, 1), utc(2026, 6, 8)) == weekend, expr


def test_trigger_fields_carry_the_translation_and_stock_cron_agrees() -> None:
    trigger = to_trigger(cron("0 9 * * 1-5", BERLIN))
    assert isinstance(trigger, SlotCronTrigger)
    assert str(trigger.fields[4]) == "mon,tue,wed,thu,fri"
    assert trigger.timezone == ZoneInfo(BERLIN)
    start, end = utc(2026, 6, 1), utc(2026, 6, 29)
    ours = slots(cron("0 9 * * 1-5", BERLIN), start, end)
    assert len(ours) == 20
    assert fired(trigger, start, end, stock=True) == ours == fired(trigger, start, end)
    # the pitfall the translation exists for: APScheduler 3.x reads crontab 0 as Monday
    naive = CronTrigger.from_crontab("0 9 * * 0", timezone=UTC)
    assert naive.get_next_fire_time(None, utc(2026, 6, 2)) == utc(2026, 6, 8, 9)  # a Monday


def test_day_of_month_or_day_of_week_as_crontab() -> None:
    # March 2026 Fridays: 6, 13, 20, 27; both fields restricted -> either matches
    either = cron("0 9 15 * fri")
    expected = [utc(2026, 3, d, 9) for d in (6, 13, 15, 20, 27)]
    assert slots(either, utc(2026, 3, 1), utc(2026, 3, 31)) == expected
    assert fired(to_trigger(either), utc(2026, 3, 1), utc(2026, 3, 31)) == expected
    # a '*'-led day-of-month field ANDs (Vixie cron): odd days that are Fridays
    both = cron("0 9 */2 * fri")
    assert slots(both, utc(2026, 3, 1), utc(2026, 3, 31)) == [
        utc(2026, 3, 13, 9),
        utc(2026, 3, 27, 9),
    ]


def test_macros_steps_and_leap_days() -> None:
    after = utc(2026, 6, 1, 10, 20)  # a Monday
    assert next_slot(cron("@hourly"), after) == utc(2026, 6, 1, 11)
    assert next_slot(cron("@DAILY"), after) == utc(2026, 6, 2)
    assert next_slot(cron("@weekly"), after) == utc(2026, 6, 7)
    assert next_slot(cron("@monthly"), after) == utc(2026, 7, 1)
    assert next_slot(cron("@yearly"), after) == utc(2027, 1, 1)
    assert slots(cron("*/15 * * * *"), after, utc(2026, 6, 1, 11)) == [
        utc(2026, 6, 1, 10, 30),
        utc(2026, 6, 1, 10, 45),
        utc(2026, 6, 1, 11),
    ]
    assert slots(cron("5/20 8-9 * * *"), after, utc(2026, 6, 2, 9, 5)) == [
        utc(2026, 6, 2, 8, 5),
        utc(2026, 6, 2, 8, 25),
        utc(2026, 6, 2, 8, 45),
        utc(2026, 6, 2, 9, 5),
    ]
    assert next_slot(cron("0 0 29 feb *"), utc(2026, 3, 1)) == utc(2028, 2, 29)
    assert next_slot(cron("0 12 31 * *"), utc(2026, 4, 1)) == utc(2026, 5, 31, 12)


# --- time zones and DST ----------------------------------------------------------------------


def test_daily_nine_in_berlin_is_eight_utc_in_winter_seven_in_summer() -> None:
    daily = cron("0 9 * * *", BERLIN)
    assert next_slot(daily, utc(2026, 1, 15)) == utc(2026, 1, 15, 8)
    assert next_slot(daily, utc(2026, 7, 15)) == utc(2026, 7, 15, 7)
    assert slots(daily, utc(2026, 3, 27, 12), utc(2026, 3, 30, 12)) == [
        utc(2026, 3, 28, 8),
        utc(2026, 3, 29, 7),
        utc(2026, 3, 30, 7),
    ]
    assert slots(daily, utc(2026, 10, 23, 12), utc(2026, 10, 26, 12)) == [
        utc(2026, 10, 24, 7),
        utc(2026, 10, 25, 8),
        utc(2026, 10, 26, 8),
    ]


def test_spring_forward_nonexistent_time_fires_once_shifted_by_the_gap() -> None:
    job = cron("30 2 * * *", BERLIN)  # 2026-03-29 02:00 CET -> 03:00 CEST
    expected = [
        utc(2026, 3, 28, 1, 30),  # 02:30 CET
        utc(2026, 3, 29, 1, 30),  # 02:30 does not exist: 03:30 CEST
        utc(2026, 3, 30, 0, 30),  # 02:30 CEST
    ]
    assert slots(job, utc(2026, 3, 27, 12), utc(2026, 3, 30, 12)) == expected
    # the same slot whatever time we ask from (stock CronTrigger from now=03:10 CEST skips it)
    for after in (utc(2026, 3, 28, 23), utc(2026, 3, 29, 0, 59), utc(2026, 3, 29, 1, 10)):
        assert next_slot(job, after) == utc(2026, 3, 29, 1, 30)
    trigger = to_trigger(job)
    assert CronTrigger.get_next_fire_time(trigger, None, utc(2026, 3, 29, 1, 10)) == utc(
        2026, 3, 30, 0, 30
    )
    assert fired(trigger, utc(2026, 3, 27, 12), utc(2026, 3, 30, 12), stock=True) == expected


def test_fall_back_ambiguous_time_fires_once_at_first_occurrence() -> None:
    job = cron("30 2 * * *", BERLIN)  # 2026-10-25 03:00 CEST -> 02:00 CET, 02:30 twice
    expected = [utc(2026, 10, 24, 0, 30), utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]
    assert slots(job, utc(2026, 10, 23, 12), utc(2026, 10, 26, 12)) == expected
    for after in (utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 0, 45), utc(2026, 10, 25, 1, 15)):
        assert next_slot(job, after) == utc(2026, 10, 26, 1, 30)
    trigger = to_trigger(job)
    assert fired(trigger, utc(2026, 10, 23, 12), utc(2026, 10, 26, 12)) == expected
    # stock APScheduler 3.11 fires the repeated 02:30 a second time; our trigger does not
    stock = fired(trigger, utc(2026, 10, 23, 12), utc(2026, 10, 26, 12), stock=True)
    assert stock == sorted([*expected, utc(2026, 10, 25, 1, 30)])


def test_every_hour_jobs_keep_their_pace_through_both_changes() -> None:
    job = cron("*/30 * * * *", BERLIN)
    for start in (utc(2026, 3, 28, 23), utc(2026, 10, 24, 23)):
        got = slots(job, start, start + timedelta(hours=4))
        assert got == [start + timedelta(minutes=30 * k) for k in range(1, 9)]
        assert fired(to_trigger(job), start, start + timedelta(hours=4), stock=True) == got
    hourly = cron("0 * * * *", BERLIN)
    assert slots(hourly, utc(2026, 10, 24, 23, 30), utc(2026, 10, 25, 2, 30)) == [
        utc(2026, 10, 25, 0),  # 02:00 CEST
        utc(2026, 10, 25, 1),  # 02:00 CET, the repeated hour
        utc(2026, 10, 25, 2),  # 03:00 CET
    ]


def test_new_york_changes_too() -> None:
    ny = "America/New_York"
    # 2026-03-08 02:00 EST -> 03:00 EDT; 2026-11-01 02:00 EDT -> 01:00 EST
    assert next_slot(cron("30 2 * * *", ny), utc(2026, 3, 8)) == utc(2026, 3, 8, 7, 30)
    first_only = slots(cron("30 1 * * *", ny), utc(2026, 10, 31, 12), utc(2026, 11, 2, 12))
    assert first_only == [utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]


@pytest.mark.parametrize(
    ("expr", "timezone"),
    [
        ("30 2 * * *", BERLIN),
        ("*/20 1-3 * * *", BERLIN),
        ("15 * * * sun", BERLIN),
        ("0 9 * * mon-fri", "America/New_York"),
        ("45 1 * * *", "America/New_York"),
        ("*/7 * * * *", "Australia/Lord_Howe"),  # 30-minute DST shifts
        ("0 0 13 * fri", BERLIN),
    ],
)
def test_next_slot_is_path_independent_and_matches_the_trigger(expr: str, timezone: str) -> None:
    job = cron(expr, timezone)
    trigger = to_trigger(job)
    for start in (utc(2026, 3, 1), utc(2026, 10, 1)):  # weeks with spring and fall changes
        end = start + timedelta(weeks=6)
        every = slots(job, start, end + timedelta(weeks=2), limit=100_000)
        assert every == sorted(set(every)) and all(s.microsecond == s.second == 0 for s in every)
        assert fired(trigger, start, end) == [s for s in every if s <= end]
        for after in probes(ZoneInfo(timezone), start, end):
            want = next(s for s in every if s > after)
            assert next_slot(job, after) == want, after
            assert trigger.get_next_fire_time(None, after + timedelta(seconds=1)) == want


def test_interval_is_absolute_time_across_dst() -> None:
    job = parse_schedule(interval_seconds=3600, timezone=BERLIN, now=utc(2026, 10, 24, 22, 0, 5))
    got = slots(job, utc(2026, 10, 24, 23), utc(2026, 10, 25, 4))
    assert got == [utc(2026, 10, 24, 23, 0, 5) + timedelta(hours=k) for k in range(5)]
    trigger = to_trigger(job)
    assert isinstance(trigger, IntervalTrigger)
    chained, when = [], trigger.get_next_fire_time(None, utc(2026, 10, 24, 23))
    while when <= utc(2026, 10, 25, 4):
        chained.append(when.astimezone(UTC))
        when = trigger.get_next_fire_time(when, when)
    assert chained == got


def test_interval_slots_are_stable_across_restarts() -> None:
    created = datetime(2026, 5, 1, 12, 0, 0, 654321, tzinfo=UTC)
    job = parse_schedule(interval_seconds=900, now=created)
    assert job.anchor == utc(2026, 5, 1, 12)  # whole seconds
    late = datetime(2026, 5, 1, 13, 7, 30, 5, tzinfo=UTC)
    restarted = Schedule(**{f: getattr(job, f) for f in Schedule.__dataclass_fields__})
    assert restarted == job
    for after in (utc(2026, 5, 1, 11), utc(2026, 5, 1, 12), late):
        assert next_slot(job, after) == next_slot(restarted, after)
    assert next_slot(job, utc(2026, 5, 1, 11)) == utc(2026, 5, 1, 12)  # the anchor is a slot
    assert next_slot(job, utc(2026, 5, 1, 12)) == utc(2026, 5, 1, 12, 15)
    assert next_slot(job, late) == utc(2026, 5, 1, 13, 15)
    explicit = parse_schedule(interval_seconds=60, anchor="2026-05-01T10:00:30+02:00")
    assert next_slot(explicit, utc(2026, 5, 1, 9)) == utc(2026, 5, 1, 9, 0, 30)
    epoch = Schedule(kind="interval", interval_seconds=600)  # no anchor: aligned to the epoch
    assert next_slot(epoch, utc(2026, 5, 1, 9, 1)) == utc(2026, 5, 1, 9, 10)


def test_one_shot() -> None:
    now = utc(2026, 11, 1)
    job = parse_schedule(at="2026-12-01 09:00", timezone=BERLIN, now=now)
    assert job.at == datetime(2026, 12, 1, 9, tzinfo=ZoneInfo(BERLIN))
    assert next_slot(job, now) == utc(2026, 12, 1, 8)
    assert next_slot(job, utc(2026, 12, 1, 8)) is None
    assert slots(job, now, utc(2027, 1, 1)) == [utc(2026, 12, 1, 8)]
    assert slots(job, utc(2026, 12, 1, 8), utc(2027, 1, 1)) == []
    trigger = to_trigger(job)
    assert isinstance(trigger, DateTrigger)
    assert trigger.get_next_fire_time(None, now) == utc(2026, 12, 1, 8)
    exact = datetime(2026, 12, 1, 9, 0, 0, 999, tzinfo=UTC)
    assert parse_schedule(at=exact, now=now).at == utc(2026, 12, 1, 9)
    assert parse_schedule(at="2026-12-01T09:00Z", timezone=BERLIN).at == utc(2026, 12, 1, 9)
    ambiguous = parse_schedule(at="2026-10-25 02:30", timezone=BERLIN)
    assert next_slot(ambiguous, now - timedelta(days=30)) == utc(2026, 10, 25, 0, 30)


def test_slots_between_bounds_and_limit() -> None:
    job = cron("0 * * * *")
    start, end = utc(2026, 6, 1, 0), utc(2026, 6, 1, 5)
    assert slots_between(job, start, end, 10) == [utc(2026, 6, 1, h) for h in range(1, 6)]
    assert slots_between(job, start, end, 2) == [utc(2026, 6, 1, 1), utc(2026, 6, 1, 2)]
    assert slots_between(job, start, end, 0) == []
    assert slots_between(job, end, start, 10) == []
    with pytest.raises(ValueError, match=r"^limit must be >= 0, got -1$"):
        slots_between(job, start, end, -1)
    with pytest.raises(ValueError, match=r"^after 2026-06-01T00:00:00 must be timezone-aware$"):
        next_slot(job, datetime(2026, 6, 1))


def test_trigger_follows_the_scheduler_contract() -> None:
    trigger = to_trigger(cron("0 9 * * *", BERLIN))
    # after a missed run the scheduler asks from the previous fire time, not from now
    assert trigger.get_next_fire_time(utc(2026, 6, 1, 7), utc(2026, 6, 4, 12)) == utc(2026, 6, 2, 7)
    assert trigger.get_next_fire_time(None, utc(2026, 6, 1, 7)) == utc(2026, 6, 1, 7)  # at now
    assert str(trigger) == "cron '0 9 * * *' (Europe/Berlin)"
    restored = pickle.loads(pickle.dumps(trigger))
    assert restored.get_next_fire_time(None, utc(2026, 6, 1, 8)) == utc(2026, 6, 2, 7)


# --- describe and plain intervals ------------------------------------------------------------


def test_describe() -> None:
    assert describe(cron("0 9 * * mon-fri", BERLIN)) == "cron '0 9 * * mon-fri' (Europe/Berlin)"
    assert describe(parse_schedule(interval_seconds=900)) == "every 15m"
    assert describe(parse_schedule(interval_seconds=5400.0)) == "every 1h30m"
    assert describe(parse_schedule(interval_seconds=90)) == "every 1m30s"
    assert describe(parse_schedule(interval_seconds=86400 * 8)) == "every 8d"
    assert describe(parse_schedule(at="2026-12-01T09:00Z")) == "once at 2026-12-01 09:00 UTC"
    berlin = parse_schedule(at="2026-12-01T08:00:30Z", timezone=BERLIN)
    assert describe(berlin) == "once at 2026-12-01 09:00:30 Europe/Berlin"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("2h", 7200), ("1d", 86400), ("1w", 604800), ("1h30m", 5400)]
    + [(" 1h 30m ", 5400), ("2H", 7200), ("1d2h3m4s", 93784), ("1.5h", 5400), ("0.5m", 30)],
)
def test_parse_plain_interval(text: str, seconds: float) -> None:
    assert parse_plain_interval(text) == seconds


HOW = EXAMPLES


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("15", f"interval '15' has no unit: {HOW}"),
        ("", f"interval '' is not understood: {HOW}"),
        ("15 minutes", f"interval '15 minutes' is not understood: {HOW}"),
        ("30m1h", f"interval '30m1h' repeats or misorders units (largest first): {HOW}"),
        ("1h1h", f"interval '1h1h' repeats or misorders units (largest first): {HOW}"),
        ("0s", f"interval '0s' is zero: a duration is longer than that; {HOW}"),
        ("0.5s", "interval 0.5 s is too short: the minimum is 1 s"),  # a task-side bound
        ("1.5s", "interval 1.5 s is not a whole number of seconds: round it"),
        ("400d", "interval '400d' is too long: at most 365d"),
    ],
)
def test_parse_plain_interval_errors(text: str, message: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_plain_interval(text)
    assert str(caught.value) == message


# --- errors ----------------------------------------------------------------------------------

STEPS = "write '*', 'N', 'N-M', '*/STEP' or 'N-M/STEP'"
DOW = "0-7 (0 and 7 = Sunday) or sun-sat"


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("61 * * * *", "cron '61 * * * *': minute field '61' is out of range 0-59"),
        ("0 24 * * *", "cron '0 24 * * *': hour field '24' is out of range 0-23"),
        ("0 9 0 * *", "cron '0 9 0 * *': day-of-month field '0' is out of range 1-31"),
        ("0 9 * 13 *", "cron '0 9 * 13 *': month field '13' is out of range 1-12 or jan-dec"),
        ("0 9 * * 8", f"cron '0 9 * * 8': day-of-week field '8' is out of range {DOW}"),
        ("0 9 * * 1-9", f"cron '0 9 * * 1-9': day-of-week field '1-9' is out of range {DOW}"),
        (
            "0 9 * * mond",
            f"cron '0 9 * * mond': day-of-week field 'mond' is not a number or name "
            f"(allowed: {DOW})",
        ),
        ("x 9 * * *", "cron 'x 9 * * *': minute field 'x' is not a number (allowed: 0-59)"),
        (
            "1,,2 * * * *",
            f"cron '1,,2 * * * *': minute field '' is not valid: {STEPS} (allowed: 0-59)",
        ),
        (
            "*/0 * * * *",
            "cron '*/0 * * * *': minute field '*/0' has step 0: the step must be at least 1",
        ),
        (
            "0 5-1 * * *",
            "cron '0 5-1 * * *': hour field '5-1' is a backwards range: write the smaller value "
            "first",
        ),
        (
            "0 9 * * fri-mon",
            "cron '0 9 * * fri-mon': day-of-week field 'fri-mon' is a backwards range: write the "
            "smaller value first",
        ),
        (
            "0 9 * *",
            "cron '0 9 * *' has 4 fields, expected 5: minute hour day-of-month month day-of-week "
            "(e.g. '0 9 * * mon-fri')",
        ),
        (
            "",
            "cron '' has 0 fields, expected 5: minute hour day-of-month month day-of-week "
            "(e.g. '0 9 * * mon-fri')",
        ),
        (
            "@reboot",
            "unknown cron macro '@reboot': use @hourly, @daily, @weekly, @monthly, @yearly",
        ),
        (
            "0 0 30 2 *",
            "cron '0 0 30 2 *' never fires: no month in its month field has day 30; pick a day "
            "that exists",
        ),
        (
            "0 0 31 apr,jun *",
            "cron '0 0 31 apr,jun *' never fires: no month in its month field has day 31; pick "
            "a day that exists",
        ),
    ],
)
def test_invalid_cron(expr: str, message: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_schedule(cron=expr)
    assert str(caught.value) == message


IANA = "use an IANA name such as 'Europe/Berlin' or 'UTC'"
NOW = utc(2026, 3, 1, 12)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "give exactly one of cron, interval or at (got none)"),
        (
            {"cron": "0 9 * * *", "at": "2026-12-01T09:00"},
            "give exactly one of cron, interval or at (got cron and at)",
        ),
        (
            {"cron": "0 9 * * *", "timezone": "Europe/Berln"},
            f"unknown time zone 'Europe/Berln' (did you mean 'Europe/Berlin'?): {IANA}",
        ),
        (
            {"cron": "0 9 * * *", "timezone": "Mars/Olympus"},
            f"unknown time zone 'Mars/Olympus': {IANA}",
        ),
        ({"interval_seconds": 0}, "interval 0 s is too short: the minimum is 1 s"),
        ({"interval_seconds": -5}, "interval -5 s is too short: the minimum is 1 s"),
        (
            {"interval_seconds": 1.5},
            "interval 1.5 s is not a whole number of seconds: round it",
        ),
        ({"interval_seconds": float("inf")}, "interval inf is not a finite number of seconds"),
        ({"interval_seconds": float("nan")}, "interval nan is not a finite number of seconds"),
        ({"interval_seconds": True}, "interval True is not a finite number of seconds"),
        (
            {"at": "2026-01-01T09:00Z", "now": NOW},
            "one-shot time 2026-01-01 09:00 UTC is in the past (now 2026-03-01 12:00 UTC): give "
            "a future time",
        ),
        (
            {"at": "2026-03-01 13:00", "timezone": BERLIN, "now": NOW},
            "one-shot time 2026-03-01 13:00 Europe/Berlin is in the past (now 2026-03-01 13:00 "
            "Europe/Berlin): give a future time",
        ),
        (
            {"at": "next tuesday"},
            "at 'next tuesday' is not an ISO 8601 time: write e.g. '2026-12-01T09:00' or "
            "'2026-12-01 09:00+01:00'",
        ),
        (
            {"at": "2026-03-29 02:30", "timezone": BERLIN},
            "at 2026-03-29 02:30 does not exist in Europe/Berlin (the clocks jump forward "
            "then): pick another time",
        ),
        (
            {"interval_seconds": 60, "anchor": "yesterday"},
            "anchor 'yesterday' is not an ISO 8601 time: write e.g. '2026-12-01T09:00' or "
            "'2026-12-01 09:00+01:00'",
        ),
    ],
)
def test_invalid_schedule(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_schedule(**kwargs)  # type: ignore[arg-type]
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "weekly"}, "unknown schedule kind 'weekly': use cron, interval or once"),
        ({"kind": "cron"}, "a schedule of kind 'cron' takes cron (got none)"),
        (
            {"kind": "cron", "cron": "0 9 * * *", "at": NOW},
            "a schedule of kind 'cron' takes cron (got cron, at)",
        ),
        (
            {"kind": "interval", "at": NOW},
            "a schedule of kind 'interval' takes interval_seconds (got at)",
        ),
        (
            {"kind": "once", "at": datetime(2026, 12, 1, 9)},
            "at 2026-12-01T09:00:00 has no time zone: make it aware",
        ),
        (
            {"kind": "interval", "interval_seconds": 60, "anchor": datetime(2026, 12, 1)},
            "anchor 2026-12-01T00:00:00 has no time zone: make it aware",
        ),
        ({"kind": "cron", "cron": "0 9 * * *", "timezone": ""}, f"unknown time zone '': {IANA}"),
    ],
)
def test_schedule_validates_itself(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        Schedule(**fields)  # type: ignore[arg-type]
    assert str(caught.value) == message


async def test_a_real_asyncio_scheduler_takes_the_triggers() -> None:
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    scheduler = AsyncIOScheduler(timezone=UTC)
    scheduler.start(paused=True)
    try:
        for job in (cron("0 9 1 1 *", BERLIN), parse_schedule(at="2099-01-01T00:00Z")):
            before = datetime.now(UTC)
            added = scheduler.add_job(lambda: None, to_trigger(job))
            assert added.next_run_time == next_slot(job, before)
            assert added.next_run_time.utcoffset() == timedelta(0)
    finally:
        scheduler.shutdown(wait=False)
