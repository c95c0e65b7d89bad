"""Errors raised by the storage layer."""

from __future__ import annotations


class StoreError(Exception):
    """The database cannot be opened or used."""


class SchemaTooNewError(StoreError):
    """The database was written by a newer nightshift than this one."""

    def __init__(self, path: str, found: int, known: int) -> None:
        super().__init__(
            f"database {path} has schema version {found}, but this nightshift knows only up to "
            f"{known}: it was written by a newer release. Upgrade nightshift, or point "
            f"--state-dir at another directory; the database was left untouched."
        )
        self.found = found
        self.known = known
