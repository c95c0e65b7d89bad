"""The real Prometheus Alertmanager as a child process, for the webhook contract tests.

Debian's ``prometheus-alertmanager`` (``apt-get install prometheus-alertmanager``; ``$ALERTMANAGER``
overrides the binary). :class:`Alertmanager` writes a config whose one webhook receiver points
at the test's server with a bearer token, starts the binary on loopback with clustering off and
storage in the test's directory, waits for ``/-/ready``, and posts alerts through API v2
(``POST /api/v2/alerts``; an alert whose ``endsAt`` is in the past is resolved). Everything is
async so the test's own aiohttp server keeps serving while the helper waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import aiohttp

START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0
REQUEST_TIMEOUT_SECONDS = 10.0


def alertmanager_binary() -> str | None:
    """The path of the Alertmanager binary, or None when it is not installed."""
    return shutil.which(os.environ.get("ALERTMANAGER", "prometheus-alertmanager"))


SKIP_REASON = (
    "the real Alertmanager is not installed: apt-get install -y prometheus-alertmanager "
    "(or set $ALERTMANAGER to its binary)"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class Alertmanager:
    """One Alertmanager in ``directory`` sending every group to ``webhook_url``.

    Groups by ``alertname`` with group_wait/group_interval 1 s and repeat_interval 1 h, and sends
    resolved notifications. ``token`` is what it puts in ``Authorization: Bearer``; ``also_to``
    are more webhook URLs the same receiver notifies (with the same token).
    """

    def __init__(
        self,
        directory: Path,
        webhook_url: str,
        token: str,
        *,
        group_by: Sequence[str] = ("alertname",),
        group_wait: str = "1s",
        group_interval: str = "1s",
        repeat_interval: str = "1h",
        resolve_timeout: str = "5m",
        also_to: Sequence[str] = (),
    ) -> None:
        binary = alertmanager_binary()
        if binary is None:
            raise RuntimeError(SKIP_REASON)
        self.binary = binary
        self.directory = directory
        self.config_path = directory / "alertmanager.yml"
        self.log_path = directory / "alertmanager.log"
        self.port = 0
        self._config: dict[str, Any] = {
            "global": {"resolve_timeout": resolve_timeout},
            "route": {
                "receiver": "nightshift",
                "group_by": list(group_by),
                "group_wait": group_wait,
                "group_interval": group_interval,
                "repeat_interval": repeat_interval,
            },
            "receivers": [
                {
                    "name": "nightshift",
                    "webhook_configs": [
                        {
                            "url": url,
                            "send_resolved": True,
                            "http_config": {
                                "authorization": {"type": "Bearer", "credentials": token}
                            },
                        }
                        for url in (webhook_url, *also_to)
                    ],
                }
            ],
        }
        self._process: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Write the config, start the binary, wait until ``/-/ready`` answers 200."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(self._config, indent=2))  # JSON is valid YAML
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS)
        )
        try:
            for _ in range(3):  # the free port can be taken before the binary binds it
                self.port = free_port()
                with contextlib.suppress(_PortTaken):
                    await self._start_once()
                    return
            raise RuntimeError(f"Alertmanager could not bind a port: {self.tail()}")
        except BaseException:
            await self.stop()
            raise

    async def _start_once(self) -> None:
        self._log = self.log_path.open("ab")
        self._process = await asyncio.create_subprocess_exec(
            self.binary,
            f"--config.file={self.config_path}",
            f"--storage.path={self.directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",
            "--log.level=debug",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log,
            stderr=asyncio.subprocess.STDOUT,
        )
        assert self._session is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT_SECONDS
        while True:
            if self._process.returncode is not None:
                await self._reap()
                if "address already in use" in self.tail():
                    raise _PortTaken
                raise RuntimeError(f"Alertmanager exited at start: {self.tail()}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with self._session.get(f"{self.url}/-/ready") as response:
                    if response.status == 200:
                        return
            if loop.time() > deadline:
                raise RuntimeError(
                    f"Alertmanager not ready in {START_TIMEOUT_SECONDS}s: {self.tail()}"
                )
            await asyncio.sleep(0.05)

    async def post_alerts(self, alerts: Sequence[Mapping[str, Any]]) -> None:
        """``POST /api/v2/alerts`` with postable alerts (labels, annotations, startsAt, endsAt)."""
        assert self._session is not None, "start() first"
        async with self._session.post(f"{self.url}/api/v2/alerts", json=list(alerts)) as response:
            if response.status != 200:
                raise RuntimeError(
                    f"POST /api/v2/alerts: {response.status} {await response.text()}"
                )

    async def fire(
        self,
        labels: Mapping[str, str],
        annotations: Mapping[str, str] | None = None,
        *,
        starts_at: datetime | None = None,
    ) -> None:
        """Post one firing alert (no ``endsAt``; Alertmanager stamps ``startsAt`` if omitted)."""
        await self.post_alerts([firing(labels, annotations, starts_at=starts_at)])

    async def resolve(
        self,
        labels: Mapping[str, str],
        annotations: Mapping[str, str] | None = None,
        *,
        starts_at: datetime,
        ends_at: datetime | None = None,
    ) -> None:
        """Post the alert again with ``endsAt`` in the past (1 s ago unless given): resolved."""
        ends = ends_at or datetime.now(UTC) - timedelta(seconds=1)
        alert = firing(labels, annotations, starts_at=starts_at)
        alert["endsAt"] = rfc3339(ends)
        await self.post_alerts([alert])

    async def alerts(self) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts``: what Alertmanager holds, with its fingerprints."""
        assert self._session is not None, "start() first"
        async with self._session.get(f"{self.url}/api/v2/alerts") as response:
            response.raise_for_status()
            result: list[dict[str, Any]] = await response.json()
            return result

    async def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of one of its own Prometheus metrics matching ``labels``."""
        assert self._session is not None, "start() first"
        async with self._session.get(f"{self.url}/metrics") as response:
            text = await response.text()
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name) or line.startswith("#"):
                continue
            series, _, value = line.rpartition(" ")
            series_name = series.partition("{")[0]
            if series_name == name and all(f'{k}="{v}"' in series for k, v in labels.items()):
                total += float(value)
        return total

    def tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    async def stop(self) -> None:
        """SIGTERM and wait; SIGKILL after a timeout. Safe to call twice."""
        process = self._process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT_SECONDS)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        await self._reap()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _reap(self) -> None:
        if self._process is not None:
            await self._process.wait()
            self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    async def __aenter__(self) -> Alertmanager:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def firing(
    labels: Mapping[str, str],
    annotations: Mapping[str, str] | None = None,
    *,
    starts_at: datetime | None = None,
) -> dict[str, Any]:
    """A postable alert for API v2 with no end (firing until resolve_timeout)."""
    alert: dict[str, Any] = {"labels": dict(labels), "annotations": dict(annotations or {})}
    if starts_at is not None:
        alert["startsAt"] = rfc3339(starts_at)
    return alert


class _PortTaken(Exception):
    """The listen port was taken between choosing and binding it."""
