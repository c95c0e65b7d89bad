"""The systemd notify protocol without libsystemd: readiness, status, reload, stop and watchdog.

Each message is one AF_UNIX datagram of newline-separated ``KEY=value`` lines sent to
``$NOTIFY_SOCKET`` (a leading ``@`` names the abstract namespace). Outside systemd the socket is
unset and every call is a cheap no-op. Sending never raises: a lost status line must not take the
daemon down, so failures are logged at debug level and reported as ``False``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Mapping

__all__ = ["SEND_TIMEOUT_SECONDS", "SystemdNotifier"]

logger = logging.getLogger(__name__)

# A datagram send only blocks if the service manager's queue is full (a hung PID 1); bound it.
SEND_TIMEOUT_SECONDS = 1.0


class SystemdNotifier:
    """Talks to the service manager through ``$NOTIFY_SOCKET``; inert when it is unset.

    The environment is read once, at construction. Under ``Type=notify`` with ``NotifyAccess=main``
    only the main process may notify, so create the notifier in the daemon process itself.
    """

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        self._address = _socket_address(environ.get("NOTIFY_SOCKET", ""))
        self._watchdog_usec = environ.get("WATCHDOG_USEC", "")
        self._watchdog_pid = environ.get("WATCHDOG_PID", "")

    @property
    def enabled(self) -> bool:
        """Whether a notify socket was given (i.e. we run under a notify-type systemd unit)."""
        return self._address is not None

    def notify(self, message: str | None = None, /, **fields: str | int) -> bool:
        """Send one datagram: a raw ``message`` or ``KEY=value`` fields; True if it was sent.

        Newlines inside field values are replaced by spaces so a value cannot inject a field.
        """
        if self._address is None:
            return False
        lines = [] if message is None else [message]
        lines += [f"{key}={str(value).replace(chr(10), ' ')}" for key, value in fields.items()]
        payload = "\n".join(lines).encode()
        if not payload:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.settimeout(SEND_TIMEOUT_SECONDS)
                sock.sendto(payload, self._address)
        except OSError as exc:
            logger.debug("sd_notify to %r failed: %s", self._address, exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """Startup finished (``READY=1``), optionally with a status line."""
        if status is None:
            return self.notify(READY=1)
        return self.notify(READY=1, STATUS=status)

    def status(self, text: str) -> bool:
        """A one-line status shown by ``systemctl status``."""
        return self.notify(STATUS=text)

    def stopping(self) -> bool:
        """Shutdown has begun (``STOPPING=1``): draining in-flight work."""
        return self.notify(STOPPING=1)

    def reloading(self) -> bool:
        """A reload has begun; send ``ready()`` when it is done."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify(RELOADING=1, MONOTONIC_USEC=usec)

    def watchdog(self) -> bool:
        """Keep-alive ping (``WATCHDOG=1``)."""
        return self.notify(WATCHDOG=1)

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for ``seconds`` more before the start/stop timeout fires (a long drain)."""
        return self.notify(EXTEND_TIMEOUT_USEC=max(0, round(seconds * 1_000_000)))

    def watchdog_interval(self) -> float | None:
        """Seconds between pings (half of ``$WATCHDOG_USEC``), or None when no watchdog is ours.

        None when notifications are disabled, the variable is missing or invalid, or
        ``$WATCHDOG_PID`` names another process (the variable was inherited from a parent).
        """
        if self._address is None:
            return None
        try:
            usec = int(self._watchdog_usec)
        except ValueError:
            return None
        if usec <= 0:
            return None
        if self._watchdog_pid:
            try:
                if int(self._watchdog_pid) != os.getpid():
                    return None
            except ValueError:
                return None
        return usec / 2 / 1_000_000

    async def run_watchdog(self) -> None:
        """Ping the watchdog forever; returns at once when no watchdog is configured.

        Run it as a task on the daemon's event loop: a loop that blocks stops the pings, and
        systemd then kills and restarts the service.
        """
        interval = self.watchdog_interval()
        if interval is None:
            return
        logger.debug("systemd watchdog: pinging every %.3f s", interval)
        while True:
            self.watchdog()
            await asyncio.sleep(interval)


def _socket_address(value: str) -> str | bytes | None:
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + os.fsencode(value[1:])
    if value.startswith("/"):
        return value
    return None  # systemd also allows vsock: addresses (VMs); not used for services
