"""A loopback Slack: the Web API methods nightshift uses plus a Socket Mode websocket.

Use it as ``async with FakeSlack() as slack:`` and point the clients at ``slack.api_url``
(``http://127.0.0.1:PORT/api/``); ``apps.connections.open`` answers ``ws://127.0.0.1:PORT/link``.

Web API: ``auth.test``, ``apps.connections.open``, ``chat.postMessage`` (``ts``, ``thread_ts``),
``chat.update``, ``chat.postEphemeral``, ``conversations.open``, ``users.info``. Tokens are
checked (``invalid_auth``;
``revoke(token)`` makes one ``token_revoked``); ``rate_limit(n, retry_after)`` answers the next
``n`` chat calls with HTTP 429 + Retry-After; every call lands in ``calls``.

Socket Mode: every ``apps.connections.open`` URL works once (a retried URL is refused, as
on Slack); each connection gets ``{"type": "hello"}``; ``push_event`` / ``push_interactive`` /
``push_raw`` send envelopes to the newest live connection (waiting for one), acks land in
``acks``; ``disconnect()`` sends ``{"type": "disconnect"}``; ``go_silent()`` makes the current
connection deaf: it answers no pings, acks nothing and sends nothing, but keeps TCP open.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import WSMsgType, web

__all__ = ["ApiCall", "FakeSlack", "SocketConnection"]

BOT_TOKEN = "xoxb-fake-bot"
APP_TOKEN = "xapp-fake-app"
CHAT_METHODS = frozenset({"chat.postMessage", "chat.update"})


@dataclass(slots=True)
class ApiCall:
    """One Web API request as the fake saw it."""

    method: str
    token: str | None
    params: dict[str, Any]


@dataclass(slots=True, eq=False)
class SocketConnection:
    """One Socket Mode websocket the client opened."""

    ws: web.WebSocketResponse
    number: int
    silent: bool = False
    retired: bool = False  # told to disconnect, or deaf: no more envelopes go here
    received: list[dict[str, Any]] = field(default_factory=list)

    @property
    def live(self) -> bool:
        return not self.ws.closed and not self.retired and not self.silent


class FakeSlack:
    """An aiohttp Slack Web API + Socket Mode server on 127.0.0.1 with a random port."""

    def __init__(
        self,
        *,
        bot_token: str = BOT_TOKEN,
        app_token: str = APP_TOKEN,
        bot_user_id: str = "UBOT",
        bot_id: str = "BBOT",
        bot_name: str = "nightshift",
        users: dict[str, str] | None = None,
        channels: tuple[str, ...] = ("C1", "C2", "D1"),
    ) -> None:
        self.bot_token, self.app_token = bot_token, app_token
        self.bot_user_id, self.bot_id, self.bot_name = bot_user_id, bot_id, bot_name
        self.users = dict(users or {"U1": "ann", "U2": "bob"})
        self.channels = set(channels)
        self.revoked: set[str] = set()
        self.outage = False  # every Web API call answers 503 and no socket is accepted
        self.calls: list[ApiCall] = []
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}  # (channel, ts) -> message
        self.acks: list[str] = []
        self.connections: list[SocketConnection] = []
        self.refuse_sockets = False  # answer the /link handshake with 503
        self._tickets: set[str] = set()  # issued, not yet used: like Slack, a URL works once
        self._limited = 0
        self._retry_after = 1
        self._ts = itertools.count(1)
        self._ids = itertools.count(1)
        self._changed = asyncio.Condition()
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> FakeSlack:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_get("/link", self._link)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for conn in self.connections:
            conn.retired = True
            if not conn.ws.closed:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.ws.close(), 1.0)
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    @property
    def socket_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/link"

    # -- test controls ---------------------------------------------------------------------

    def revoke(self, token: str) -> None:
        """From now on calls with ``token`` fail with ``token_revoked``."""
        self.revoked.add(token)

    def rate_limit(self, count: int = 1, retry_after: int = 1) -> None:
        """Answer the next ``count`` chat.* calls with HTTP 429 and ``Retry-After``."""
        self._limited, self._retry_after = count, retry_after

    def calls_to(self, method: str) -> list[ApiCall]:
        return [c for c in self.calls if c.method == method]

    async def wait_connections(self, count: int, timeout: float = 10.0) -> SocketConnection:
        """Wait until ``count`` sockets have been opened; return the newest live one."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(
                lambda: len(self.connections) >= count and self._current() is not None
            )
        current = self._current()
        assert current is not None
        return current

    async def wait_ack(self, envelope_id: str, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: envelope_id in self.acks)

    async def push_raw(self, envelope: dict[str, Any], timeout: float = 10.0) -> None:
        """Send one envelope on the newest live connection (waits for one to exist)."""
        conn = await self.wait_connections(1, timeout)
        await conn.ws.send_str(json.dumps(envelope))

    async def push_event(
        self,
        event: dict[str, Any],
        *,
        event_id: str | None = None,
        retry_attempt: int = 0,
        timeout: float = 10.0,
    ) -> str:
        """Send an ``events_api`` envelope; returns its envelope id."""
        envelope_id = f"env-{next(self._ids)}"
        event = {"event_ts": event.get("ts", ""), **event}
        await self.push_raw(
            {
                "envelope_id": envelope_id,
                "type": "events_api",
                "accepts_response_payload": False,
                "retry_attempt": retry_attempt,
                "retry_reason": "timeout" if retry_attempt else "",
                "payload": {
                    "token": "verification",
                    "team_id": "T1",
                    "api_app_id": "A1",
                    "type": "event_callback",
                    "event_id": event_id or f"Ev{next(self._ids)}",
                    "event_time": int(time.time()),
                    "event": event,
                },
            },
            timeout,
        )
        return envelope_id

    async def push_interactive(self, payload: dict[str, Any], timeout: float = 10.0) -> str:
        envelope_id = f"env-{next(self._ids)}"
        await self.push_raw(
            {
                "envelope_id": envelope_id,
                "type": "interactive",
                "accepts_response_payload": True,
                "payload": payload,
            },
            timeout,
        )
        return envelope_id

    async def push_button(
        self,
        *,
        action_id: str,
        value: str,
        user_id: str = "U1",
        channel: str = "C1",
        message_ts: str = "1.000001",
    ) -> str:
        """Press a Block Kit button as ``user_id`` (a ``block_actions`` payload)."""
        name = self.users.get(user_id, user_id)
        return await self.push_interactive(
            {
                "type": "block_actions",
                "trigger_id": "trig",
                "api_app_id": "A1",
                "user": {"id": user_id, "username": name, "name": name, "team_id": "T1"},
                "container": {"type": "message", "message_ts": message_ts, "channel_id": channel},
                "channel": {"id": channel, "name": "ops"},
                "message": self.messages.get((channel, message_ts), {"ts": message_ts}),
                "actions": [
                    {
                        "action_id": action_id,
                        "block_id": "b",
                        "value": value,
                        "type": "button",
                        "action_ts": str(time.time()),
                    }
                ],
            }
        )

    async def disconnect(self, close_after: float = 1.0) -> None:
        """Ask the current connection to reconnect; like Slack, close it ``close_after`` later."""
        conn = self._current()
        assert conn is not None, "no live connection"
        conn.retired = True
        await conn.ws.send_str(json.dumps({"type": "disconnect", "reason": "refresh_requested"}))
        self._tasks.add(asyncio.create_task(self._close_later(conn, close_after)))

    async def _close_later(self, conn: SocketConnection, delay: float) -> None:
        await asyncio.sleep(delay)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.ws.close(), 1.0)

    def go_silent(self) -> SocketConnection:
        """Make the current connection deaf: no pongs, no acks, no envelopes, TCP stays open."""
        conn = self._current()
        assert conn is not None, "no live connection"
        conn.silent = True
        return conn

    # -- Web API ---------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params: dict[str, Any] = dict(request.query)
        if request.content_type == "application/json":
            params = await request.json()
        else:
            params.update(await request.post())
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else params.get("token")
        self.calls.append(ApiCall(method, token, params))
        if self.outage:
            return _json({"ok": False, "error": "service_unavailable"}, 503)
        expected = self.app_token if method == "apps.connections.open" else self.bot_token
        if not token:
            return _json({"ok": False, "error": "not_authed"})
        if token in self.revoked:
            return _json({"ok": False, "error": "token_revoked"})
        if token != expected:
            return _json({"ok": False, "error": "invalid_auth"})
        if method in CHAT_METHODS and self._limited > 0:
            self._limited -= 1
            retry = {"Retry-After": str(self._retry_after)}
            return _json({"ok": False, "error": "ratelimited"}, 429, retry)
        handler = getattr(self, "_m_" + method.replace(".", "_"), None)
        if handler is None:
            return _json({"ok": False, "error": "unknown_method"})
        return _json(handler(params))

    def _m_auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        me = {"user": self.bot_name, "user_id": self.bot_user_id, "bot_id": self.bot_id}
        return {"ok": True, "url": "https://fake.slack.com/", "team_id": "T1", **me}

    def _m_apps_connections_open(self, params: dict[str, Any]) -> dict[str, Any]:
        ticket = f"t{next(self._ids)}"
        self._tickets.add(ticket)
        return {"ok": True, "url": f"{self.socket_url}?ticket={ticket}"}

    def _m_chat_postMessage(self, params: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        channel = str(params.get("channel", ""))
        channel = self._dm_for(channel) if channel.startswith("U") else channel
        if channel not in self.channels:
            return {"ok": False, "error": "channel_not_found"}
        if not params.get("text") and not params.get("blocks"):
            return {"ok": False, "error": "no_text"}
        ts = f"{int(time.time())}.{next(self._ts):06d}"
        message = {
            "type": "message",
            "user": self.bot_user_id,
            "bot_id": self.bot_id,
            "ts": ts,
            "text": params.get("text", ""),
            "blocks": _blocks(params),
            "thread_ts": params.get("thread_ts"),
        }
        self.messages[(channel, ts)] = message
        return {"ok": True, "channel": channel, "ts": ts, "message": message}

    def _m_chat_update(self, params: dict[str, Any]) -> dict[str, Any]:
        key = (str(params.get("channel", "")), str(params.get("ts", "")))
        if key not in self.messages:
            return {"ok": False, "error": "message_not_found"}
        self.messages[key].update(text=params.get("text", ""), blocks=_blocks(params))
        return {"ok": True, "channel": key[0], "ts": key[1], "text": params.get("text", "")}

    def _m_chat_postEphemeral(self, params: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        if str(params.get("channel", "")) not in self.channels:
            return {"ok": False, "error": "channel_not_found"}
        return {"ok": True, "message_ts": f"{int(time.time())}.{next(self._ts):06d}"}

    def _m_conversations_open(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "channel": {"id": self._dm_for(str(params.get("users", "")))}}

    def _m_users_info(self, params: dict[str, Any]) -> dict[str, Any]:
        user = str(params.get("user", ""))
        if user not in self.users:
            return {"ok": False, "error": "user_not_found"}
        name = self.users[user]
        return {"ok": True, "user": {"id": user, "name": name, "profile": {"display_name": name}}}

    def _dm_for(self, user: str) -> str:
        channel = "D" + user.removeprefix("U")
        self.channels.add(channel)
        return channel

    # -- Socket Mode -----------------------------------------------------------------------

    def _current(self) -> SocketConnection | None:
        live = [c for c in self.connections if c.live]
        return live[-1] if live else None

    async def _link(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        if ticket not in self._tickets:
            return web.Response(status=401, text="unknown or used ticket")
        self._tickets.discard(ticket)
        if self.refuse_sockets or self.outage:
            return web.Response(status=503, text="no sockets today")
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        conn = SocketConnection(ws=ws, number=len(self.connections) + 1)
        await ws.send_str(
            json.dumps({"type": "hello", "num_connections": 1, "debug_info": {"host": "fake"}})
        )
        async with self._changed:
            self.connections.append(conn)
            self._changed.notify_all()
        async for msg in ws:
            if conn.silent:
                continue  # deaf: read (so TCP stays healthy) but answer nothing
            if msg.type == WSMsgType.PING:
                await ws.pong(msg.data)
            elif msg.type == WSMsgType.TEXT:
                with contextlib.suppress(ValueError):
                    data = json.loads(msg.data)
                    conn.received.append(data)
                    async with self._changed:
                        if isinstance(data, dict) and "envelope_id" in data:
                            self.acks.append(str(data["envelope_id"]))
                        self._changed.notify_all()
        async with self._changed:
            self._changed.notify_all()
        return ws


def _blocks(params: dict[str, Any]) -> list[Any]:
    blocks = params.get("blocks") or []
    return json.loads(blocks) if isinstance(blocks, str) else list(blocks)


def _json(body: dict[str, Any], status: int = 200, headers: Any = None) -> web.Response:
    return web.json_response(body, status=status, headers=headers)
