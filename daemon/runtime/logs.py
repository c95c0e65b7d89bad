"""Logging setup: one event per line on stderr, every record redacted before any handler
writes it, and third-party loggers that dump requests kept quiet at every level we enable."""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

from daemon.core.redact import redact

__all__ = ["QUIET_LIBRARIES", "RedactingFilter", "quiet_libraries", "setup_logging"]

# Loggers that write request parameters, bodies, URLs or headers at DEBUG/INFO: held at
# WARNING even with --log-level debug. openai/httpx2 (request options, "HTTP Request: POST
# <url>"), httpx/httpcore (python-telegram-bot's transport: URLs carry the bot token), slack_sdk
# (params and JSON bodies of every Web API call, socket-mode envelopes), telegram (Bot API
# parameters), nio (Matrix URLs with ?access_token=), aiohttp (client traces, access lines with
# query strings), websockets/h2/hpack (frames and headers), aiosqlite (every SQL call with its
# parameters, i.e. every stored value).
QUIET_LIBRARIES = (
    "openai",
    "httpx",
    "httpx2",
    "httpcore",
    "httpcore2",
    "slack_sdk",
    "slack_bolt",
    "telegram",
    "nio",
    "peewee",
    "aiohttp.access",
    "aiohttp.client",
    "aiohttp.server",
    "aiohttp.websocket",
    "websockets",
    "h2",
    "hpack",
    "urllib3",
    "aiosqlite",
)

_MARK = "_nightshift_redacted"


class RedactingFilter(logging.Filter):
    """Redact a record's message, arguments, exception and stack text in place, and keep each
    record on its own line: control characters in the message are escaped, and every line of a
    traceback after its first is indented.

    Installed on every root handler, so whatever any logger emits (ours or a library's) is
    masked before it reaches the journal, and no text from a label, a log line or a model can
    start a line that looks like another record (``\nCRITICAL …``).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, _MARK, False):
            return True
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep what we can, never drop the record
            message = f"{record.msg!r} {record.args!r}"
        record.msg, record.args = one_line(redact(message)), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = _indented(redact(record.exc_text))
        if record.stack_info:
            record.stack_info = _indented(redact(record.stack_info))
        setattr(record, _MARK, True)
        return True


_ESCAPES = {code: f"\\x{code:02x}" for code in range(32) if code != 9}
_ESCAPES |= {10: "\\n", 13: "\\r", 127: "\\x7f", 0x2028: "\\u2028", 0x2029: "\\u2029"}


def one_line(text: str) -> str:
    """``text`` with newlines and other control characters escaped (tabs kept)."""
    return text.translate(_ESCAPES)


def _indented(block: str) -> str:
    """Every line after the first starts with whitespace: none can pass for a record."""
    first, *rest = block.split("\n")
    return "\n".join([first, *(line if line[:1].isspace() else "  " + line for line in rest)])


def quiet_libraries() -> None:
    """Hold the request-dumping library loggers at WARNING (see :data:`QUIET_LIBRARIES`)."""
    for name in QUIET_LIBRARIES:
        logger = logging.getLogger(name)
        if logger.level < logging.WARNING:
            logger.setLevel(logging.WARNING)


def setup_logging(level: str | int, stream: TextIO | None = None) -> logging.Handler:
    """Log to ``stream`` (stderr) at ``level``, every record redacted; returns the handler.

    Under systemd (``JOURNAL_STREAM`` set) lines carry no timestamp: the journal adds its own.
    """
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not os.environ.get("JOURNAL_STREAM"):
        fmt = "%(asctime)s " + fmt
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(logging.Formatter(fmt))
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _MARK, False)]:
        root.removeHandler(old)
    setattr(handler, _MARK, True)
    root.addHandler(handler)
    redacting = RedactingFilter()
    for each in root.handlers:
        if not any(isinstance(f, RedactingFilter) for f in each.filters):
            each.addFilter(redacting)
    root.setLevel(level)
    quiet_libraries()
    return handler
