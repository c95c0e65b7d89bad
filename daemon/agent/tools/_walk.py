"""Bounded directory walks for the file tools (evidence and remediation).

A walk opens its root and every directory below it relative to its parent's descriptor with
``O_NOFOLLOW``, so a directory swapped for a symlink (before or during the walk) cannot lead it
elsewhere; it never follows symlinks, never enters another filesystem, skips (and counts) what
it cannot read or is denied, and stops after ``budget`` entries. It opens no file, only
directories. Blocking: run it in a worker thread.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from daemon.agent.sandbox import covers
from daemon.core.errors import ToolError

__all__ = ["Entry", "Walk", "deny_roots"]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class Entry:
    """One directory entry; ``dir_fd`` (its open parent) is valid until the walk moves on."""

    dir_fd: int
    parent: str
    name: str
    path: str
    depth: int  # 1 = directly under the root
    info: os.stat_result  # lstat: a symlink is reported as a symlink


@dataclass(slots=True)
class Walk:
    """Settings and counters of one walk."""

    budget: int
    deny: tuple[str, ...] = ()  # resolved paths never entered or reported
    max_depth: int = 64  # deeper directories are not entered (one descriptor per level)
    scanned: int = 0
    unreadable: int = 0
    other_filesystems: int = 0
    denied: int = 0
    too_deep: int = 0
    cut: bool = False

    def entries(self, root: str) -> Iterator[Entry]:
        """Every entry below the resolved directory ``root``, depth first, parents first."""
        try:
            root_fd = _open_no_follow(root)
        except PermissionError:
            raise ToolError(f"{root}: permission denied for the nightshift service user") from None
        except OSError as exc:
            raise ToolError(f"{root}: {exc.strerror or exc}") from None
        try:
            root_dev, listing = os.fstat(root_fd).st_dev, os.scandir(root_fd)
        except OSError as exc:
            os.close(root_fd)
            raise ToolError(f"{root}: {exc.strerror or exc}") from None
        stack: list[tuple[int, str, os._ScandirIterator[str], int]] = [
            (root_fd, root.rstrip("/"), listing, 0)
        ]
        try:
            while stack:
                fd, prefix, listing, depth = stack[-1]
                try:
                    item = next(listing)
                except (StopIteration, OSError) as exc:
                    self.unreadable += isinstance(exc, OSError)
                    _close(stack.pop())
                    continue
                if self.scanned >= self.budget:
                    self.cut = True
                    return
                self.scanned += 1
                path = f"{prefix}/{item.name}"
                if self.deny and any(covers(d, path) for d in self.deny):  # /etc/shadow-, too
                    self.denied += 1
                    continue
                try:
                    info = item.stat(follow_symlinks=False)
                except OSError:
                    self.unreadable += 1
                    continue
                is_dir = stat.S_ISDIR(info.st_mode)
                if is_dir and info.st_dev != root_dev:
                    self.other_filesystems += 1
                    continue
                yield Entry(fd, prefix or "/", item.name, path, depth + 1, info)
                if is_dir:
                    child = self._enter(fd, item.name, info, depth + 1)
                    if child is not None:
                        stack.append((child[0], path, child[1], depth + 1))
        finally:
            while stack:
                _close(stack.pop())

    def _enter(
        self, parent_fd: int, name: str, info: os.stat_result, depth: int
    ) -> tuple[int, os._ScandirIterator[str]] | None:
        if depth >= self.max_depth:
            self.too_deep += 1
            return None
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        except OSError:  # gone, unreadable, or swapped for a symlink since it was listed
            self.unreadable += 1
            return None
        try:
            opened = os.fstat(fd)
            if (opened.st_dev, opened.st_ino) != (info.st_dev, info.st_ino):
                raise OSError("replaced while walking")
            return fd, os.scandir(fd)
        except OSError:
            os.close(fd)
            self.unreadable += 1
            return None

    def notes(self) -> list[str]:
        """What the walk left out, for the tool's ``note``."""
        notes = []
        if self.cut:
            notes.append(f"[stopped after {self.budget} entries: the results are partial]")
        if self.unreadable:
            notes.append(f"[{self.unreadable} entries could not be read and were skipped]")
        if self.other_filesystems:
            notes.append(f"[{self.other_filesystems} mount points of other filesystems skipped]")
        if self.denied:
            notes.append(
                f"[{self.denied} entries under [policy] deny_paths skipped (or nightshift's own "
                "state and credentials)]"
            )
        if self.too_deep:
            notes.append(f"[{self.too_deep} directories deeper than {self.max_depth} skipped]")
        return notes


def _open_no_follow(root: str) -> int:
    """Open the directory ``root`` one component at a time, following no symlink: a component
    swapped for a symlink since the policy check fails (ELOOP/ENOTDIR) instead of leading on."""
    names = [name for name in root.split("/") if name]
    fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name in names[:-1]:
            child = os.open(
                name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd
            )
            os.close(fd)
            fd = child
        return os.open(names[-1] if names else ".", _DIR_FLAGS, dir_fd=fd)
    finally:
        os.close(fd)


def _close(item: tuple[int, str, os._ScandirIterator[str], int]) -> None:
    fd, _, listing, _ = item
    listing.close()
    os.close(fd)


def deny_roots(paths: Sequence[str]) -> tuple[str, ...]:
    """``[policy] deny_paths`` as written and resolved, without trailing slashes."""
    roots = {p.rstrip("/") for entry in paths for p in (entry, os.path.realpath(entry))}
    return tuple(sorted(r for r in roots if r))
