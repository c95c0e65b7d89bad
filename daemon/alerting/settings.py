"""Config models for rules, incidents, silences, maintenance, inhibition and remediation."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from daemon.alerting.templates import check_template
from daemon.core.alerts import EVENT_METRICS, METRICS, TEXT_METRICS, Severity
from daemon.core.patterns import compile_pattern
from daemon.core.section import Section, check_regex, check_regexes

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_LABEL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class RuleSettings(Section):
    """One alerting rule: a condition on a watcher metric, with timing and presentation."""

    name: str = Field(min_length=1)  # the alertname
    metric: str
    where: dict[str, str] = Field(default_factory=dict)  # observation labels, exact
    where_re: dict[str, str] = Field(default_factory=dict)  # observation labels, regex
    op: Literal[">", ">=", "<", "<=", "==", "!="] | None = None
    threshold: float | None = None
    match: str | None = None  # regex searched in the observation text (log line, output…)
    clear_threshold: float | None = None  # hysteresis: stays firing until past this value
    for_seconds: float = Field(default=0.0, ge=0, le=7 * 86400)
    times: int = Field(default=1, ge=1, le=1_000_000)  # "X times within Y"
    within_seconds: float | None = Field(default=None, gt=0, le=7 * 86400)
    keep_firing_for_seconds: float | None = Field(default=None, ge=0, le=7 * 86400)
    severity: Severity = "warning"
    labels: dict[str, str] = Field(default_factory=dict)
    capture_labels: list[str] = Field(default_factory=list)  # named regex groups → labels
    summary: str = ""
    description: str = ""
    runbook: str = ""  # a file in incidents.runbooks_dir, or a URL
    enabled: bool = True

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError(f"rule name {value!r} must be letters, digits, '_', '.', '-'")
        return value

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if value not in METRICS:
            raise ValueError(f"unknown metric {value!r}; known: {', '.join(sorted(METRICS))}")
        return value

    _where_re = field_validator("where_re")(lambda cls, patterns: check_regexes(patterns))

    @field_validator("match")
    @classmethod
    def _match(cls, value: str | None) -> str | None:
        return None if value is None else check_regex(value)

    @field_validator("labels")
    @classmethod
    def _labels(cls, labels: dict[str, str]) -> dict[str, str]:
        for key in labels:
            if not _LABEL.fullmatch(key) or key in ("alertname", "severity"):
                raise ValueError(
                    f"label {key!r}: use letters, digits and '_' (alertname and severity are set "
                    "from the rule's name and severity)"
                )
        return labels

    @field_validator("summary", "description")
    @classmethod
    def _templates(cls, value: str) -> str:
        return check_template(value)

    @model_validator(mode="after")
    def _coherent(self) -> RuleSettings:
        numeric = self.op is not None or self.threshold is not None
        if numeric and (self.op is None or self.threshold is None):
            raise ValueError('give both op and threshold (e.g. op = ">", threshold = 90)')
        if numeric == (self.match is not None):
            raise ValueError(
                'give exactly one condition: op + threshold for a number, or match = "regex" '
                "for text"
            )
        if self.match is not None and self.metric not in TEXT_METRICS:
            raise ValueError(
                f"match needs a text metric ({', '.join(sorted(TEXT_METRICS))}); "
                f"{self.metric!r} is a number: use op and threshold"
            )
        if self.op is not None and self.metric in EVENT_METRICS:
            raise ValueError(f'{self.metric!r} carries text: use match = "regex"')
        if self.clear_threshold is not None:
            self._check_clear()
        if self.times > 1 and self.within_seconds is None:
            raise ValueError(f"times = {self.times} needs within_seconds (the window Y)")
        if self.capture_labels:
            groups = compile_pattern(self.match or "").groupindex
            missing = [name for name in self.capture_labels if name not in groups]
            if missing:
                raise ValueError(
                    f"capture_labels {missing} are not named groups of match (use (?P<name>…))"
                )
        return self

    def _check_clear(self) -> None:
        assert self.threshold is not None and self.clear_threshold is not None
        if self.op in (">", ">=") and self.clear_threshold > self.threshold:
            raise ValueError(
                f"clear_threshold {self.clear_threshold:g} must be at or below threshold "
                f"{self.threshold:g} for op {self.op!r}"
            )
        if self.op in ("<", "<=") and self.clear_threshold < self.threshold:
            raise ValueError(
                f"clear_threshold {self.clear_threshold:g} must be at or above threshold "
                f"{self.threshold:g} for op {self.op!r}"
            )
        if self.op in ("==", "!="):
            raise ValueError("clear_threshold works with <, <=, > and >= only")
