"""The rule engine: for, X-within-Y, hysteresis, keep_firing_for, event rules, restore."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from daemon.alerting.rules import RuleEngine
from daemon.alerting.settings import RuleSettings
from daemon.core.alerts import Change, Observation

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def rule(**fields: Any) -> RuleSettings:
    base: dict[str, Any] = {"name": "HighCpu", "metric": "cpu_percent", "op": ">", "threshold": 90}
    return RuleSettings(**{**base, **fields})


def cpu(seconds: float, value: float, **labels: str) -> Observation:
    return Observation(
        source="host", metric="cpu_percent", at=at(seconds), value=value, labels=labels
    )


def events(changes: list[Change]) -> list[str]:
    return [c.event.status for c in changes if c.event is not None]


def feed(engine: RuleEngine, readings: Sequence[tuple[float, float]]) -> list[str]:
    found: list[str] = []
    for seconds, value in readings:
        found += events(engine.evaluate(cpu(seconds, value)))
    return found


def test_fires_only_after_the_condition_holds_for_the_duration() -> None:
    engine = RuleEngine([rule(for_seconds=60)])
    assert feed(engine, [(0, 95), (30, 96)]) == []
    assert [a.state for a in engine.alerts()] == ["pending"]
    assert feed(engine, [(60, 97)]) == ["firing"]
    assert feed(engine, [(90, 98)]) == []  # announced once
    assert feed(engine, [(120, 10)]) == ["resolved"]
    assert engine.alerts() == []


def test_a_dip_before_for_elapses_resets_pending_without_any_event() -> None:
    engine = RuleEngine([rule(for_seconds=60)])
    assert feed(engine, [(0, 95), (30, 50), (45, 95), (90, 95)]) == []
    assert feed(engine, [(105, 95)]) == ["firing"]


def test_for_is_reached_by_tick_without_a_new_reading() -> None:
    engine = RuleEngine([rule(for_seconds=60)])
    engine.evaluate(cpu(0, 95))
    assert engine.next_deadline() == at(60)
    assert events(engine.tick(at(59))) == []
    assert events(engine.tick(at(60))) == ["firing"]


def test_times_within_catches_flapping_that_for_misses() -> None:
    flapping = [(0, 95), (10, 20), (20, 95), (30, 20), (40, 95), (50, 20)]
    assert feed(RuleEngine([rule(for_seconds=15)]), flapping) == []
    engine = RuleEngine([rule(times=3, within_seconds=60)])
    assert feed(engine, flapping) == ["firing"]
    # it stays firing while 3 bad readings remain in the window, then resolves
    assert feed(engine, [(70, 20)]) == ["resolved"]


def test_hysteresis_keeps_firing_until_below_the_clear_threshold() -> None:
    engine = RuleEngine([rule(clear_threshold=80)])
    assert feed(engine, [(0, 95)]) == ["firing"]
    assert feed(engine, [(10, 85), (20, 89)]) == []  # below threshold, above clear
    assert feed(engine, [(30, 79)]) == ["resolved"]


def test_keep_firing_for_bridges_short_recoveries() -> None:
    engine = RuleEngine([rule(keep_firing_for_seconds=120)])
    assert feed(engine, [(0, 95), (30, 10), (60, 95), (90, 10)]) == ["firing"]
    assert engine.next_deadline() == at(210)
    assert events(engine.tick(at(209))) == []
    assert events(engine.tick(at(210))) == ["resolved"]


def test_labels_split_alerts_and_where_selects_observations() -> None:
    engine = RuleEngine(
        [
            RuleSettings(
                name="DiskFull",
                metric="disk_percent",
                op=">",
                threshold=90,
                where_re={"mount": "/(var|srv)"},
                labels={"team": "ops"},
                summary="{mount} is {value:.0f}% full",
            )
        ]
    )

    def disk(mount: str, value: float) -> list[Change]:
        obs = Observation(
            source="host", metric="disk_percent", at=T0, value=value, labels={"mount": mount}
        )
        return engine.evaluate(obs)

    assert disk("/", 99) == []  # not selected
    var, srv = disk("/var", 95), disk("/srv", 97)
    assert var[0].event and srv[0].event
    assert var[0].fingerprint != srv[0].fingerprint
    assert var[0].event.labels == {
        "mount": "/var",
        "team": "ops",
        "alertname": "DiskFull",
        "severity": "warning",
    }
    assert var[0].event.annotations["summary"] == "/var is 95% full"


def test_log_rate_rule_fires_at_the_count_and_resolves_when_the_window_empties() -> None:
    engine = RuleEngine(
        [
            RuleSettings(
                name="SshBruteForce",
                metric="log_line",
                match=r"Failed password for (?P<user>\S+)",
                times=5,
                within_seconds=60,
                summary="failed logins, last user {user}",
            )
        ]
    )

    def line(seconds: float, text: str) -> list[Change]:
        return engine.evaluate(
            Observation(
                source="log",
                metric="log_line",
                at=at(seconds),
                text=text,
                labels={"path": "/var/log/auth.log"},
            )
        )

    found = []
    for second in range(4):
        found += events(line(second, f"Failed password for root from 10.0.0.{second}"))
        found += events(
            line(second + 0.5, "Accepted publickey for deploy")
        )  # not a match: no effect
    assert found == []
    firing = line(4, "Failed password for admin from 10.0.0.9")
    assert events(firing) == ["firing"]
    assert (
        firing[0].event
        and firing[0].event.annotations["summary"] == "failed logins, last user admin"
    )
    assert engine.next_deadline() == at(60)  # the first of the last five hits leaves the window
    assert events(engine.tick(at(59))) == []
    assert events(engine.tick(at(60))) == ["resolved"]


def test_a_single_log_match_resolves_after_the_default_quiet_time() -> None:
    engine = RuleEngine([RuleSettings(name="OomKill", metric="log_line", match="Out of memory")])
    obs = Observation(source="log", metric="log_line", at=T0, text="kernel: Out of memory: Killed")
    assert events(engine.evaluate(obs)) == ["firing"]
    engine.tick(at(1))
    assert events(engine.tick(at(300))) == []
    assert events(engine.tick(at(301))) == ["resolved"]


def test_many_log_rules_each_fire_on_their_own_lines_and_only_there() -> None:
    """One pass rules most regexes out per line; the rest are searched: none is ever missed."""
    patterns = {
        "Oom": r"Out of memory: Killed process (?P<pid>\d+)",
        "Panic": r"(?i)kernel panic",
        "Slow": r"took (\d{4,}) ?ms",  # no literal long enough to filter on
        "Umlaut": r"Prüfung fehlgeschlagen",
        "Catastrophic": r"(a+)+$",
        "Either": r"\bERROR\b|\bFATAL\b",
    }
    engine = RuleEngine(
        RuleSettings(name=name, metric="log_line", match=match, capture_labels=["pid"])
        if name == "Oom"
        else RuleSettings(name=name, metric="log_line", match=match)
        for name, match in patterns.items()
    )
    lines = {
        "kernel: Out of memory: Killed process 4242 (java)": ["Oom"],
        "KERNEL PANIC - not syncing": ["Panic"],
        "request took 12000ms": ["Slow"],
        "Prüfung fehlgeschlagen für /srv": ["Umlaut"],
        "a" * 5000 + "!": [],
        "x " + "a" * 5000: ["Catastrophic"],
        "app: FATAL boom": ["Either"],
        "all quiet, took 12 ms, fatalism": [],
    }
    for n, (text, expected) in enumerate(lines.items()):
        obs = Observation(source="log", metric="log_line", at=at(n), text=text)
        fired = [c.event.labels for c in engine.evaluate(obs) if c.event is not None]
        assert [labels["alertname"] for labels in fired] == expected, text
    assert [a.labels.get("pid") for a in engine.alerts() if a.rule == "Oom"] == ["4242"]


def test_restored_firing_alert_is_not_announced_again_but_resolves() -> None:
    first = RuleEngine([rule()])
    [change] = first.evaluate(cpu(0, 95))
    assert change.state is not None
    second = RuleEngine([rule()])
    assert second.restore([change.state], now=at(100)) == 1
    assert feed(second, [(110, 96)]) == []
    assert feed(second, [(120, 10)]) == ["resolved"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"metric": "cpu_temp"}, "unknown metric 'cpu_temp'"),
        ({"match": "("}, "invalid regular expression"),
        ({"match": "disk(?!ok)"}, r"negative lookahead `\(\?!…\)` is not supported"),
        ({"op": None}, "give both op and threshold"),
        ({"metric": "log_line", "op": None, "threshold": None}, "give exactly one condition"),
        ({"times": 3}, "times = 3 needs within_seconds"),
        ({"for_seconds": -1}, "greater than or equal to 0"),
        ({"for_seconds": 10 * 86400}, "less than or equal to 604800"),
        ({"clear_threshold": 95}, "clear_threshold 95 must be at or below threshold 90"),
        ({"summary": "{value"}, "bad template"),
        ({"labels": {"severity": "x"}}, "alertname and severity are set"),
    ],
)
def test_invalid_rules_are_rejected_with_a_reason(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rule(**fields)
