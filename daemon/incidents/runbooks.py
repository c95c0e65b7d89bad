"""Runbooks: markdown files in a directory, matched to alerts.

An alert finds its runbook by, in order: its ``runbook`` annotation naming a file in the
directory (a URL is passed on as a reference); a file named after the alert (``DiskFull.md``,
``diskfull.md`` or ``disk-full.md``); or a file whose first lines say
``<!-- match: alertname=~Disk.*, severity=critical -->``.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from daemon.alerting.matchers import Matcher, match_all
from memory.recall import RecallRepo, RunbookFile

log = logging.getLogger(__name__)

MAX_RUNBOOK_BYTES = 64 * 1024
INDEX_INTERVAL_SECONDS = 30.0  # how often the runbook directory is checked for changes
_MATCH_LINE = re.compile(r"<!--\s*match:\s*(.+?)\s*-->")


@dataclass(frozen=True, slots=True)
class Runbook:
    name: str  # file name or URL
    text: str  # "" for a URL

    def excerpt(self, lines: int = 12) -> str:
        body = [line for line in self.text.splitlines() if not _MATCH_LINE.search(line)]
        shown = "\n".join(body[:lines]).strip()
        return shown + ("\n…" if len(body) > lines else "")


class RunbookLibrary:
    """Looks runbooks up on each call (files may be edited while the daemon runs)."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory

    def find(self, labels: Mapping[str, str], annotations: Mapping[str, str]) -> Runbook | None:
        reference = annotations.get("runbook") or annotations.get("runbook_url") or ""
        if reference.startswith(("http://", "https://")):
            return Runbook(reference, "")
        if self.directory is None or not self.directory.is_dir():
            return Runbook(reference, "") if reference else None
        if reference:
            found = self._read(reference)
            if found is not None:
                return found
        alertname = labels.get("alertname", "")
        for candidate in _names_for(alertname):
            found = self._read(candidate)
            if found is not None:
                return found
        return self._by_match_line(labels)

    def _read(self, name: str) -> Runbook | None:
        assert self.directory is not None
        path = (self.directory / name).resolve()
        if self.directory.resolve() not in path.parents or not path.is_file():
            return None
        try:
            with path.open("rb") as handle:
                text = handle.read(MAX_RUNBOOK_BYTES).decode("utf-8", errors="replace")
        except OSError as exc:
            log.warning("runbook %s unreadable: %s", path, exc.strerror)
            return None
        return Runbook(path.name, text)

    def _by_match_line(self, labels: Mapping[str, str]) -> Runbook | None:
        assert self.directory is not None
        for path in sorted(self.directory.glob("*.md")):
            runbook = self._read(path.name)
            if runbook is None:
                continue
            head = "\n".join(runbook.text.splitlines()[:5])
            found = _MATCH_LINE.search(head)
            if found is None:
                continue
            try:
                matchers = [Matcher.parse(part) for part in found.group(1).split(",")]
            except ValueError as exc:
                log.warning("runbook %s: %s", path.name, exc)
                continue
            if match_all(matchers, labels):
                return runbook
        return None

    def digests(self) -> dict[str, str]:
        """The runbook files (``*.md``) in the directory by name: size and mtime, as a digest."""
        if self.directory is None or not self.directory.is_dir():
            return {}
        found = {}
        for path in sorted(self.directory.glob("*.md")):
            try:
                stat = path.stat()
            except OSError:
                continue
            if path.is_file():
                found[path.name] = f"{stat.st_size}:{stat.st_mtime_ns}"
        return found

    async def index(self, recall: RecallRepo) -> int:
        """Bring the recall index in step with the directory: changed files are re-read,
        removed ones forgotten. Returns how many documents changed."""
        now = await asyncio.to_thread(self.digests)
        known = await recall.runbook_digests()
        changed = []
        for name, digest in now.items():
            if known.get(name) == digest:
                continue
            runbook = await asyncio.to_thread(self._read, name)
            if runbook is not None:
                changed.append(RunbookFile(name, digest, runbook.text))
        if not changed and set(known) <= set(now):
            return 0
        touched = await recall.sync_runbooks(changed, now)
        if touched:
            log.info("recall: %d runbook document(s) indexed or removed", touched)
        return touched

    async def run_index(self, recall: RecallRepo, interval: float = INDEX_INTERVAL_SECONDS) -> None:
        """Keep runbooks searchable: index them now, then whenever the directory changes."""
        while True:
            await self.index(recall)
            await asyncio.sleep(interval)


def _names_for(alertname: str) -> list[str]:
    if not alertname:
        return []
    kebab = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "-", alertname).lower()
    return list(dict.fromkeys([f"{alertname}.md", f"{alertname.lower()}.md", f"{kebab}.md"]))
