"""The reading half of the file tools, run as its own process inside the sandbox.

Started as ``python -I -S _read_helper.py PATH`` (standard library only). It opens PATH one
component at a time relative to its parent's descriptor, never following a symlink, so a path
swapped after the policy check fails instead of leading elsewhere; it reads regular files only
and never blocks on a FIFO. The daemon itself never opens the file (closing any descriptor of
its SQLite database would drop that database's POSIX locks).

Protocol: one JSON line ``{"size": N}`` or ``{"error": "..."}``; then for each request line
``OFFSET COUNT`` on stdin, one response: ``+`` or ``!``, a 4-byte big-endian length, and the
bytes (``!``: an error message). EOF on stdin ends it.
"""

from __future__ import annotations

import json
import os
import stat
import sys

MAX_COUNT = 4 * 1024 * 1024


def open_no_follow(path: str) -> int:
    """Open ``path`` for reading without following any symlink in any component."""
    parts = path.split("/")
    if not path.startswith("/") or any(part in (".", "..") for part in parts):
        raise OSError(0, "the path must be absolute and resolved")
    names = [part for part in parts if part]
    directory = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
    fd = os.open("/", directory)
    try:
        for name in names[:-1]:
            child = os.open(name, directory | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = child
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
        return os.open(names[-1] if names else ".", flags, dir_fd=fd)
    finally:
        os.close(fd)


def _describe(path: str, exc: OSError) -> str:
    import errno

    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return f"{path}: a part of the path is a symlink or not a directory (changed since checked)"
    parts = path.split("/")
    if exc.errno == errno.ENOENT and len(parts) > 2 and parts[1] == "proc" and parts[2].isdigit():
        return (
            f"{path}: no such process here: file tools see only their own sandbox in /proc "
            "(use the process tools to look at other processes)"
        )
    if exc.errno == errno.EACCES:
        return f"{path}: permission denied"
    return f"{path}: {exc.strerror or exc}"


def _send(status: bytes, payload: bytes) -> None:
    out = sys.stdout.buffer
    out.write(status + len(payload).to_bytes(4, "big") + payload)
    out.flush()


def main(argv: list[str]) -> int:
    path = argv[1]
    try:
        fd = open_no_follow(path)
        info = os.fstat(fd)
    except OSError as exc:
        print(json.dumps({"error": _describe(path, exc)}), flush=True)
        return 0
    if not stat.S_ISREG(info.st_mode):
        kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        print(json.dumps({"error": f"{path} is {kind}; file tools read regular files only"}))
        return 0
    print(json.dumps({"size": info.st_size}), flush=True)
    for line in sys.stdin.buffer:
        offset, count = (int(field) for field in line.split())
        try:
            data = os.pread(fd, min(count, MAX_COUNT), offset)
        except OSError as exc:  # e.g. /proc/kmsg (would block)
            _send(b"!", f"cannot read this file: {exc.strerror or exc}".encode())
            continue
        _send(b"+", data)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
