"""The investigation limiter: at most N at once and M started per sliding hour (manual clock)."""

from __future__ import annotations

from daemon.core.clock import ManualClock
from daemon.incidents.settings import IncidentSettings
from daemon.response.limits import InvestigationLimiter


def limiter(
    clock: ManualClock, concurrent: int = 2, per_hour: int = 3
) -> tuple[InvestigationLimiter, list[IncidentSettings]]:
    settings = [
        IncidentSettings(
            max_concurrent_investigations=concurrent, max_investigations_per_hour=per_hour
        )
    ]
    return InvestigationLimiter(lambda: settings[0], clock), settings


def test_beyond_the_concurrency_limit_a_start_is_refused_naming_the_setting() -> None:
    limits, _ = limiter(ManualClock())
    assert limits.try_start() is None and limits.try_start() is None
    why = limits.try_start()
    assert why is not None and "incidents.max_concurrent_investigations = 2" in why
    limits.finished()
    assert limits.try_start() is None  # a slot came free
    assert (limits.running, limits.skipped) == (2, 1)


def test_the_hourly_limit_slides_with_the_clock() -> None:
    clock = ManualClock()
    limits, _ = limiter(clock, concurrent=10, per_hour=3)
    for _ in range(3):
        assert limits.try_start() is None
        limits.finished()
        clock.advance(600)
    why = limits.try_start()
    assert why is not None and "incidents.max_investigations_per_hour = 3" in why
    clock.advance(1800)  # the first start is now an hour old
    assert limits.try_start() is None
    assert limits.try_start() is not None


def test_a_reload_changes_the_limits_at_the_next_start() -> None:
    limits, settings = limiter(ManualClock(), concurrent=1)
    assert limits.try_start() is None
    assert limits.try_start() is not None
    settings[0] = IncidentSettings(max_concurrent_investigations=2)
    assert limits.try_start() is None


def test_tokens_used_in_the_last_hour_stop_new_starts() -> None:
    clock = ManualClock()
    limits, settings = limiter(clock, concurrent=10, per_hour=100)
    settings[0] = IncidentSettings(
        max_concurrent_investigations=10, max_investigation_tokens_per_hour=50_000
    )
    assert limits.try_start() is None
    limits.spent(30_000)
    limits.finished()
    assert limits.try_start() is None  # 30,000 < 50,000
    clock.advance(60)
    limits.spent(25_000)
    limits.finished()
    why = limits.try_start()
    assert why is not None and "55,000 tokens in the last hour" in why
    assert "incidents.max_investigation_tokens_per_hour = 50,000" in why
    clock.advance(3541)  # the first 30,000 are older than an hour
    assert limits.try_start() is None
