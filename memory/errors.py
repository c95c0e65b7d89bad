"""Errors raised by the storage layer.

StoreError               the database cannot be opened or used
├── SchemaTooNewError    written by a newer release; left untouched
└── RecordNotFound       a lookup by id found nothing (also a LookupError)
"""

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
        self.path = path
        self.found = found
        self.known = known


class RecordNotFound(StoreError, LookupError):
    """A lookup by id found no row; carries what was looked for."""

    def __init__(self, kind: str, record_id: int | str) -> None:
        super().__init__(f"no {kind} with id {record_id}")
        self.kind = kind
        self.record_id = record_id
