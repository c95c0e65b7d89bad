"""The task spec: what runs when, and where its result goes.

A ``TaskSpec`` is one task's whole definition; tasks from config and tasks created at run time
(CLI, chat, agent tools) share it, and it is stored as JSON in the ``tasks`` table.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import Field, field_validator, model_validator

from daemon.core.section import Section, split_argv

CHANNELS = ("console", "slack", "telegram", "matrix")
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")


def check_target(target: str) -> str:
    channel = target.split(":", 1)[0]
    if channel not in CHANNELS:
        raise ValueError(
            f"unknown delivery target {target!r}; use one of {', '.join(CHANNELS)}, optionally "
            "with ':room' (e.g. 'slack:C0OPS', 'telegram:123456')"
        )
    return target


class TaskSpec(Section):
    """What runs when, and where its result goes."""

    name: str
    # schedule: exactly one of cron / interval_seconds / at
    cron: str | None = None  # crontab, weekdays 0/7 = Sunday: "0 9 * * mon-fri"
    interval_seconds: float | None = None  # e.g. 900 (see also `every` in the CLI: "15m")
    at: datetime | None = None  # one-shot, ISO 8601 ("2026-12-01T09:00:00+01:00")
    timezone: str | None = None  # IANA; default [scheduler] timezone
    # action: exactly one of prompt / command
    prompt: str | None = None  # asks the agent (unattended)
    command: list[str] | None = None  # runs a program (no shell); no LLM
    builtin: Literal["digest"] | None = None  # a built-in job (the daily digest)
    precheck: list[str] | None = None  # runs first: exit 0 = work to do, 1 = nothing to do
    deliver_to: str = "console"  # channel[:room]
    thread: str | None = None
    mode: Literal["thinking", "instant"] = "instant"
    # The run's tools: "default" (read-only ones run, privileged ones are refused unless in
    # [policy] auto_approve) or "none" (answer from the prompt and pre-check output alone).
    tools: Literal["default", "none"] = "default"
    no_news_token: str = "NO_NEWS"  # a reply of exactly this is not delivered
    catch_up: Literal["skip", "once", "each"] = "once"  # slots missed while down
    catch_up_max: int = Field(default=3, ge=1, le=100)
    # a run cut by a crash or a stop: tell the owner once ("report"), or run it again once
    on_interrupt: Literal["report", "retry"] = "report"
    max_concurrency: int = Field(default=1, ge=1, le=10)
    timeout_seconds: float = Field(default=600.0, gt=0, le=86400)
    retries: int = Field(default=2, ge=0, le=10)  # per slot, with backoff
    retry_backoff_seconds: float = Field(default=60.0, gt=0)
    notify_after_failures: int = Field(default=3, ge=1)  # consecutive: tell the owner once
    pause_after_failures: int = Field(default=10, ge=1)  # consecutive: pause the task
    critical: bool = False  # delivered even during quiet hours
    enabled: bool = True

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError(
                f"task name {value!r}: use 1-64 lowercase letters, digits, '-', '_' or '.', "
                "starting with a letter or digit (e.g. 'morning-summary')"
            )
        return value

    @field_validator("deliver_to")
    @classmethod
    def _target(cls, value: str) -> str:
        return check_target(value)

    _argv = field_validator("command", "precheck", mode="before")(
        lambda cls, value: split_argv(value)
    )

    @model_validator(mode="after")
    def _coherent(self) -> TaskSpec:
        schedules = [x is not None for x in (self.cron, self.interval_seconds, self.at)]
        if sum(schedules) != 1:
            raise ValueError(
                f'task {self.name!r}: give exactly one schedule: cron = "0 9 * * mon-fri", '
                'interval_seconds = 900, or at = "2026-12-01T09:00:00Z"'
            )
        if sum(x is not None for x in (self.prompt, self.command, self.builtin)) != 1:
            raise ValueError(
                f'task {self.name!r}: give exactly one action: prompt = "…" (asks the agent) '
                'or command = ["program", "arg"] (runs without the LLM)'
            )
        if self.command == [] or self.precheck == []:
            raise ValueError(f"task {self.name!r}: command/precheck must not be empty")
        from daemon.core.schedule import parse_schedule

        parse_schedule(  # raises a ValueError that names the problem
            cron=self.cron,
            interval_seconds=self.interval_seconds,
            at=self.at,
            timezone=self.timezone or "UTC",
        )
        return self
