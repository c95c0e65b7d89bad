"""How many incident investigations may run at once and per hour.

One authenticated payload of thousands of alerts in distinct groups opens thousands of incidents;
without a limit each would start an agent run and the day's token budget would be gone in
minutes. Incidents over a limit are still announced and resolved by rule; their timeline says
the investigation was skipped and which setting to raise.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta

from daemon.core.clock import Clock
from daemon.incidents.settings import IncidentSettings

__all__ = ["WINDOW", "InvestigationLimiter"]

WINDOW = timedelta(hours=1)


class InvestigationLimiter:
    """Admits investigations under ``incidents.max_concurrent_investigations``,
    ``max_investigations_per_hour`` and ``max_investigation_tokens_per_hour`` (tokens of the
    investigations that ended in the last hour; counted in memory, so a restart forgets them).
    The settings are read anew at each start (reload)."""

    def __init__(self, settings: Callable[[], IncidentSettings], clock: Clock) -> None:
        self._settings = settings
        self._clock = clock
        self._starts: deque[datetime] = deque()
        self._spent: deque[tuple[datetime, int]] = deque()
        self.running = 0
        self.skipped = 0

    def try_start(self) -> str | None:
        """Count a start and return None, or return why it may not start now (nothing counted)."""
        settings = self._settings()
        now = self._clock.now()
        while self._starts and now - self._starts[0] >= WINDOW:
            self._starts.popleft()
        while self._spent and now - self._spent[0][0] >= WINDOW:
            self._spent.popleft()
        tokens = sum(spent for _, spent in self._spent)
        why = None
        if self.running >= settings.max_concurrent_investigations:
            why = (
                f"{self.running} investigations already running, the limit "
                f"(incidents.max_concurrent_investigations = "
                f"{settings.max_concurrent_investigations})"
            )
        elif len(self._starts) >= settings.max_investigations_per_hour:
            why = (
                f"{len(self._starts)} investigations started in the last hour, the limit "
                f"(incidents.max_investigations_per_hour = {settings.max_investigations_per_hour})"
            )
        elif tokens >= settings.max_investigation_tokens_per_hour:
            why = (
                f"investigations used {tokens:,} tokens in the last hour, the limit "
                f"(incidents.max_investigation_tokens_per_hour = "
                f"{settings.max_investigation_tokens_per_hour:,})"
            )
        if why is not None:
            self.skipped += 1
            return why
        self._starts.append(now)
        self.running += 1
        return None

    def spent(self, tokens: int) -> None:
        """An investigation's agent run used ``tokens``."""
        if tokens > 0:
            self._spent.append((self._clock.now(), tokens))

    def finished(self) -> None:
        """An admitted investigation ended (however it ended)."""
        self.running -= 1
