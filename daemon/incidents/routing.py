"""Routing: which channels and targets a notification goes to, from its severity and labels."""

from __future__ import annotations

from dataclasses import dataclass

from daemon.core.patterns import Pattern, compile_pattern
from daemon.incidents.settings import RouteSettings


@dataclass(frozen=True, slots=True)
class Destination:
    """A channel and a target on it ("" = the channel's configured default target)."""

    channel: str
    target: str = ""

    @classmethod
    def parse(cls, text: str) -> Destination:
        channel, _, target = text.partition(":")
        return cls(channel, target)


class Router:
    """Routes are tried in order; the first match decides unless it says continue_matching."""

    def __init__(self, routes: list[RouteSettings], default: list[str]) -> None:
        self._routes = [
            (route, {key: compile_pattern(pattern) for key, pattern in route.match_re.items()})
            for route in routes
        ]
        self._default = [Destination.parse(item) for item in default]

    def destinations(self, labels: dict[str, str]) -> list[Destination]:
        """Where a notification with ``labels`` (severity included) goes, without repeats."""
        found: list[Destination] = []
        matched = False
        for route, patterns in self._routes:
            if not _matches(route, patterns, labels):
                continue
            matched = True
            found += [Destination.parse(item) for item in route.to]
            if not route.continue_matching:
                break
        chosen = found if matched else self._default
        return list(dict.fromkeys(chosen))


def _matches(route: RouteSettings, patterns: dict[str, Pattern], labels: dict[str, str]) -> bool:
    if any(labels.get(key) != value for key, value in route.match.items()):
        return False
    return all(
        key in labels and pattern.fullmatch(labels[key]) for key, pattern in patterns.items()
    )
