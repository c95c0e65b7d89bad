"""The CLI's way into a running daemon: HTTP over the unix socket in the state directory."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from daemon.core.errors import ApiError, DaemonNotRunning

BASE = "http://nightshift"


class DaemonClient:
    """Small async client for the local API."""

    def __init__(self, socket_path: Path, timeout: float | None = 30.0) -> None:
        self.socket_path = socket_path
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=5)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> DaemonClient:
        if not self.socket_path.exists():
            raise DaemonNotRunning(self.socket_path)
        connector = aiohttp.UnixConnector(path=str(self.socket_path))
        self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use DaemonClient as an async context manager"
        return self._session

    async def get(self, path: str) -> Any:
        try:
            async with self.session.get(BASE + path) as response:
                return await _json_or_raise(response)
        except aiohttp.ClientConnectionError as exc:
            raise DaemonNotRunning(self.socket_path, str(exc)) from None

    async def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            async with self.session.post(BASE + path, json=body or {}) as response:
                return await _json_or_raise(response)
        except aiohttp.ClientConnectionError as exc:
            raise DaemonNotRunning(self.socket_path, str(exc)) from None

    async def chat(self, text: str, conversation: str | None) -> AsyncIterator[dict[str, Any]]:
        """Send a message; yield the daemon's events (tool, approval, reply, error) as they come."""
        body = {"text": text, "conversation": conversation}
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5)
        try:
            async with self.session.post(BASE + "/v1/chat", json=body, timeout=timeout) as response:
                if response.status != 200:
                    yield {"type": "error", "message": (await response.text()).strip()}
                    return
                async for line in response.content:
                    if line.strip():
                        yield json.loads(line)
        except aiohttp.ClientConnectionError as exc:
            raise DaemonNotRunning(self.socket_path, str(exc)) from None


async def _json_or_raise(response: aiohttp.ClientResponse) -> Any:
    if response.status >= 400:
        raise ApiError(f"{response.status}: {(await response.text()).strip()}")
    return await response.json()
