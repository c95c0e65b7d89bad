"""Blocking helpers of the file watcher: what a file looks like now (mode, owner, sha256)."""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from fnmatch import fnmatchcase

Mode = tuple[int, int, int]  # st_mode, st_uid, st_gid


@dataclass(frozen=True, kw_only=True, slots=True)
class Inspection:
    """Mode, owner and (when asked for) content digest of one path."""

    mode: Mode
    digest: str | None  # None: not a regular file, over the hash limit, or not asked for


def inspect(path: str, hash_limit: int) -> Inspection | None:
    """Stat ``path`` and hash it when it is a regular file of at most ``hash_limit`` bytes."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    digest = None
    if hash_limit and stat.S_ISREG(info.st_mode) and info.st_size <= hash_limit:
        digest = sha256_file(path, hash_limit)
    return Inspection(mode=(info.st_mode, info.st_uid, info.st_gid), digest=digest)


def sha256_file(path: str, limit: int) -> str | None:
    """The hex sha256 of the file, or None when unreadable or it grew past ``limit``."""
    digest = hashlib.sha256()
    read = 0
    try:
        with open(path, "rb") as handle:
            while block := handle.read(1 << 20):
                read += len(block)
                if read > limit:
                    return None
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def matches(relative: str, patterns: list[str]) -> bool:
    """Patterns match the file name, or the path below the directory when they contain "/"."""
    name = os.path.basename(relative)
    return any(fnmatchcase(relative if "/" in p else name, p) for p in patterns)


def below(directory: str, patterns: list[str], recursive: bool) -> list[str]:
    """Paths in ``directory`` (and its subdirectories when ``recursive``) matching ``patterns``."""
    found = []
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            path = os.path.join(root, name)
            if matches(os.path.relpath(path, directory), patterns):
                found.append(path)
        if not recursive:
            break
    return found


def kind_of(path: str) -> bool | None:
    """True for a directory, False for anything else, None when missing."""
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except FileNotFoundError:
        return None
