"""Slack through Socket Mode: slack-sdk's aiohttp ``SocketModeClient`` in, ``AsyncWebClient`` out.

Health comes from our side, not the SDK's: the SDK retries a revoked token or a dead socket URL
forever while only logging (see LIBRARY-NOTES), so ``start`` and every rebuild check the tokens
(``auth.test``, ``apps.connections.open``) and a watchdog rebuilds the whole SocketModeClient when
the socket stays disconnected or silent for ``liveness_seconds``. Web API failures map onto
the contract in :func:`integrations.slack.blocks.map_api_error`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from daemon.core.background import BackgroundTasks
from daemon.core.errors import DeliveryError, PermanentDeliveryError
from integrations.base import (
    ApprovalAnswer,
    ApprovalPrompt,
    ChannelHealth,
    InboundSink,
    OutgoingMessage,
)
from integrations.slack import blocks
from integrations.slack.blocks import ParsedEvent
from integrations.slack.settings import SlackChannelSettings

__all__ = ["SlackChannel"]

log = logging.getLogger(__name__)
sdk_log = logging.getLogger(f"{__name__}.sdk")
sdk_log.addFilter(blocks.QuietSdkLog())

API_TIMEOUT = 10  # seconds for one Web API call
CONNECT_TIMEOUT = 10.0  # seconds to check the tokens and open one socket
DRAIN_TIMEOUT = 2.0  # seconds stop() lets acknowledged input reach the sink
NAME_TIMEOUT = 3.0  # seconds for a users.info lookup before falling back to the id
MAX_PING_INTERVAL = 5.0  # the SDK's default ping interval
MAX_RETRY_SECONDS = 300.0  # backoff cap between failed rebuilds
PROBE_SECONDS = 5.0  # while backing off or with a rejected token: is Slack (or the token) back?
TOKEN_CHECK_SECONDS = 300.0  # while idle and connected: is the bot token still accepted?
SEEN_SIZE, NAME_CACHE_SIZE = 4096, 1024  # de-duplication and users.info caches


class SlackChannel:
    """The Slack channel: Socket Mode in, Web API out, health from our own checks."""

    name = "slack"

    def __init__(
        self,
        settings: SlackChannelSettings,
        *,
        probe_seconds: float = PROBE_SECONDS,
        token_check_seconds: float = TOKEN_CHECK_SECONDS,
    ) -> None:
        self._settings = settings
        self._probe_every = probe_seconds
        self._token_check_every = token_check_seconds
        self._liveness = float(settings.liveness_seconds)
        self._ping_interval = min(MAX_PING_INTERVAL, self._liveness / 3)
        self._sink: InboundSink | None = None
        self._session: aiohttp.ClientSession | None = None
        self._web: AsyncWebClient | None = None  # bot token
        self._app_web: AsyncWebClient | None = None  # no token: apps.connections.open gets it
        self._socket: SocketModeClient | None = None
        self._running = self._starting = False
        self._detail = ""
        self._bot_problem: str | None = None  # a rejected bot token (or none configured)
        self._app_problem: str | None = None  # a rejected app-level token
        self._bot_name = ""
        self._filter = blocks.InboundFilter(SEEN_SIZE)
        self._names = blocks.Lru(NAME_CACHE_SIZE)
        self._inbox: asyncio.Queue[ParsedEvent | ApprovalAnswer] = asyncio.Queue()
        self._tasks = BackgroundTasks("slack")  # the delivery loop and the watchdog
        self._last_traffic = 0.0  # time.time() of the last frame received
        self.rebuilds = 0  # Socket Mode clients built after the first one

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, sink: InboundSink) -> None:
        """Check the tokens, connect, start the watchdog; returns within CONNECT_TIMEOUT."""
        self._sink = sink
        self._running, self._starting = True, True
        missing = [n for n in ("bot_token", "app_token") if getattr(self._settings, n) is None]
        if missing:
            self._bot_problem = " and ".join(f"channels.slack.{n}" for n in missing) + " not set"
            self._starting = False
            log.error("Slack channel not started: %s", self._bot_problem)
            return
        self._ensure_clients()
        self._tasks.spawn(self._deliver(), "slack-deliver")
        try:
            await self._connect()
        except Exception as exc:  # noqa: BLE001 - reported as health; the watchdog retries
            self._note_failure(exc)
        finally:
            self._starting = False
        self._tasks.spawn(self._watch(), "slack-watchdog")

    async def stop(self) -> None:
        """Let acknowledged input reach the sink, then close the socket and the HTTP session."""
        if not self._running:
            return
        self._running = False
        if self._tasks and not self._inbox.empty():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._inbox.join(), DRAIN_TIMEOUT)
        await self._tasks.cancel()
        if self._socket is not None:
            await blocks.close_socket_client(self._socket)
            self._socket = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._web = self._app_web = None

    def health(self) -> ChannelHealth:
        if not self._running:
            return ChannelHealth(state="stopped")
        if self._bot_problem or self._app_problem:
            detail = "; ".join(p for p in (self._bot_problem, self._app_problem) if p)
            return ChannelHealth(state="down", detail=detail)
        if self._socket_alive():
            return ChannelHealth(state="up", detail=f"socket connected as @{self._bot_name}")
        if self._starting:
            return ChannelHealth(state="starting", detail="connecting to Slack")
        return ChannelHealth(state="down", detail=self._detail or "socket not connected")

    # -- outbound --------------------------------------------------------------------------

    async def send(self, message: OutgoingMessage) -> str:
        """Post (escaped, split past Slack's size advice); return "channel:ts" of the first part."""
        room = self._room(message.target)
        chunks = blocks.split_text(blocks.escape(message.text))
        web = self._require_web()
        first = await self._api(
            web.chat_postMessage(channel=room, text=chunks[0], thread_ts=message.thread)
        )
        channel, ts = str(first.get("channel") or room), str(first["ts"])
        self._filter.threads.add((channel, message.thread or ts))
        for chunk in chunks[1:]:  # the first part is delivered: never raise (it would repeat)
            try:
                await self._api(
                    web.chat_postMessage(channel=channel, text=chunk, thread_ts=message.thread)
                )
            except (DeliveryError, PermanentDeliveryError) as exc:
                log.warning("Slack message %s cut short: a later part failed: %s", ts, exc)
                break
        return f"{channel}:{ts}"

    async def edit(self, target: str, platform_id: str, text: str) -> None:
        room, ts = self._split_id(target, platform_id)
        body = blocks.one_message(text)
        await self._api(self._require_web().chat_update(channel=room, ts=ts, text=body))

    async def ask_approval(self, prompt: ApprovalPrompt) -> str:
        room = self._room(prompt.target)
        response = await self._api(
            self._require_web().chat_postMessage(
                channel=room,
                text=blocks.one_message(prompt.text),
                blocks=blocks.approval_blocks(prompt),
                thread_ts=prompt.thread,
            )
        )
        return f"{response.get('channel') or room}:{response['ts']}"

    async def close_approval(self, prompt: ApprovalPrompt, platform_id: str, outcome: str) -> None:
        room, ts = self._split_id(prompt.target, platform_id)
        text = blocks.one_message(f"{prompt.text}\n{outcome}")
        closed = blocks.closed_approval_blocks(prompt, outcome)
        web = self._require_web()
        await self._api(web.chat_update(channel=room, ts=ts, text=text, blocks=closed))

    # -- Web API plumbing ------------------------------------------------------------------

    def _ensure_clients(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        bot, base = self._settings.bot_token, self._settings.api_url
        if self._web is None:
            self._web = AsyncWebClient(
                token=bot.get_secret_value() if bot else None,
                base_url=base,
                timeout=API_TIMEOUT,
                session=self._session,
                retry_handlers=[],
            )
            self._app_web = AsyncWebClient(
                base_url=base, timeout=API_TIMEOUT, session=self._session
            )

    def _require_web(self) -> AsyncWebClient:
        if not self._running:  # a new session now would never be closed
            raise DeliveryError("Slack channel not running")
        if self._settings.bot_token is None:
            wait = blocks.AUTH_RETRY_AFTER
            raise DeliveryError("channels.slack.bot_token is not set", retry_after=wait)
        self._ensure_clients()
        assert self._web is not None
        return self._web

    def _room(self, target: str) -> str:
        if room := target or self._settings.default_channel:
            return room
        raise PermanentDeliveryError("no target and channels.slack.default_channel is not set")

    def _split_id(self, target: str, platform_id: str) -> tuple[str, str]:
        room, sep, ts = platform_id.rpartition(":")
        return (room, ts) if sep and room else (self._room(target), platform_id)

    async def _api(self, call: Awaitable[AsyncSlackResponse]) -> AsyncSlackResponse:
        """Await one Web API call and map its failures onto the channel's delivery errors."""
        try:
            response = await call
        except SlackApiError as exc:
            error, auth_problem = blocks.map_api_error(exc)
            if auth_problem:
                self._bot_problem = auth_problem
                log.error("%s", auth_problem)
            raise error from exc
        except (SlackClientError, aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise DeliveryError(f"cannot reach Slack: {type(exc).__name__}: {exc}") from exc
        if self._bot_problem and self._settings.bot_token is not None:
            log.info("Slack accepts the bot token again")
            self._bot_problem = None
        return response

    # -- Socket Mode -----------------------------------------------------------------------

    async def _connect(self) -> None:
        """Check both tokens, open a fresh SocketModeClient, then drop the previous one."""
        self._ensure_clients()
        assert self._web is not None and self._app_web is not None
        app = self._settings.app_token
        assert app is not None
        async with asyncio.timeout(CONNECT_TIMEOUT):
            me = await blocks.token_checked("bot", self._web.auth_test())
            self._filter.bot_user_id = str(me.get("user_id", ""))
            self._filter.bot_id = str(me.get("bot_id", ""))
            self._bot_name = str(me.get("user", "") or self._filter.bot_user_id)
            opened = await blocks.token_checked(
                "app", self._app_web.apps_connections_open(app_token=app.get_secret_value())
            )
            client = SocketModeClient(
                app_token=app.get_secret_value(),
                web_client=self._app_web,
                ping_interval=self._ping_interval,
                logger=sdk_log,
            )
            client.wss_uri = str(opened["url"])
            client.message_listeners.append(self._on_envelope)
            try:
                await client.connect()  # type: ignore[no-untyped-call]  # retried forever: bounded
            except BaseException:
                await blocks.close_socket_client(client)
                raise
        old, self._socket = self._socket, client
        self._last_traffic = time.time()
        self._bot_problem = self._app_problem = None
        self._detail = ""
        log.info("Slack socket connected as @%s", self._bot_name)
        if old is not None:
            self.rebuilds += 1
            await blocks.close_socket_client(old)

    def _socket_alive(self) -> bool:
        client = self._socket
        if client is None or client.closed or client.stale:
            return False
        session = client.current_session
        if session is None or session.closed:
            return False
        last_pong = client.last_ping_pong_time
        return last_pong is None or time.time() - last_pong < self._ping_interval * 4

    def _note_failure(self, exc: BaseException) -> None:
        if isinstance(exc, blocks.TokenRejected):
            if exc.which == "bot":
                self._bot_problem = str(exc)
            else:
                self._app_problem = str(exc)
            log.error("%s", exc)
            return
        if isinstance(exc, TimeoutError):
            self._detail = f"Slack did not accept a socket within {CONNECT_TIMEOUT:g} s; retrying"
        else:
            self._detail = f"cannot connect to Slack: {type(exc).__name__}: {exc}"
        log.warning("%s", self._detail)

    async def _watch(self) -> None:
        """Rebuild the SocketModeClient when it stays disconnected or silent too long.

        Rebuilds back off (up to MAX_RETRY_SECONDS), but a cheap ``auth.test`` every
        ``probe_seconds`` ends the backoff as soon as Slack answers again; the bot token is
        checked every ``token_check_seconds`` while idle (a revoked token shows as down) and
        every ``probe_seconds`` while rejected (a rotated one is taken within seconds).
        """
        tick = min(1.0, self._liveness / 5, self._probe_every)
        down_since: float | None = None
        next_try, backoff = 0.0, self._liveness
        next_check = time.monotonic() + self._token_check_every  # the bot token, while up
        next_probe = 0.0  # Slack's answer, while down and backing off
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            if self._socket_alive():
                down_since, self._app_problem = None, None  # it connected: the app token works
                assert self._socket is not None
                heard = max(self._last_traffic, self._socket.last_ping_pong_time or 0.0)
                silent = time.time() - heard
                if silent <= self._liveness:
                    if now >= next_check:  # a revoked (or a fixed) bot token
                        await self._slack_answers()
                        wait = self._probe_every if self._bot_problem else self._token_check_every
                        next_check = now + wait
                    continue
                reason = f"silent for {silent:.1f} s"
            else:
                down_since = down_since or now
                if self._socket is not None and now - down_since < self._liveness / 2:
                    continue  # give the SDK's own reconnect a chance first
                reason = f"disconnected for {now - down_since:.1f} s"
            if now < next_try:
                if self._app_problem or now < next_probe:
                    continue  # a rejected app token is not fixed by Slack coming back
                next_probe = now + self._probe_every
                if not await self._slack_answers():
                    continue
                log.info("Slack answers again: rebuilding the socket now")
                next_try, backoff = now, self._liveness
            log.warning("Slack socket %s: rebuilding the Socket Mode client", reason)
            try:
                await self._connect()
            except Exception as exc:  # noqa: BLE001 - reported as health; retried with backoff
                self._note_failure(exc)
                next_try, backoff = now + backoff, min(backoff * 2, MAX_RETRY_SECONDS)
                if self._socket is not None and not self._socket_alive():
                    dead, self._socket = self._socket, None  # stop its silent retry loop
                    await blocks.close_socket_client(dead)
            else:
                down_since, next_try, backoff = None, 0.0, self._liveness

    async def _slack_answers(self) -> bool:
        """One auth.test with the bot token: True when Slack accepted it."""
        try:
            await self._api(self._require_web().auth_test())
        except Exception:  # noqa: BLE001 - unreachable or rejected: _api noted which
            return False
        return True

    async def _on_envelope(
        self, client: AsyncBaseSocketModeClient, message: dict[str, Any], raw: str | None
    ) -> None:
        """Ack first, then parse; anything malformed is logged and dropped, never raised."""
        self._last_traffic = time.time()
        kind, envelope_id = message.get("type"), message.get("envelope_id")
        if isinstance(envelope_id, str) and envelope_id:
            try:
                await client.send_socket_mode_response(SocketModeResponse(envelope_id=envelope_id))
            except Exception as exc:  # noqa: BLE001 - Slack redelivers; we de-duplicate
                log.warning("could not ack Slack envelope %s: %s", envelope_id, exc)
        if kind == "hello":
            return
        try:
            payload = message.get("payload")
            if not isinstance(payload, dict):
                log.warning("ignoring a Slack envelope without payload (type %r)", kind)
            elif kind == "events_api":
                if parsed := self._filter.event(payload):
                    self._inbox.put_nowait(parsed)
            elif kind == "interactive":
                for answer in blocks.parse_action(payload, self.name):
                    self._inbox.put_nowait(answer)
            else:
                log.info("ignoring a Slack envelope of type %r", kind)
        except Exception:
            log.exception("ignoring a malformed Slack envelope (type %r)", kind)

    # -- inbound delivery ------------------------------------------------------------------

    async def _deliver(self) -> None:
        """Hand inbound items to the sink one at a time, in arrival order."""
        while True:
            item = await self._inbox.get()
            try:
                if self._sink is None:
                    continue
                if isinstance(item, ApprovalAnswer):
                    outcome = await self._sink.on_approval(item)
                    if not outcome.accepted:  # accepted: the prompt itself shows the decision
                        await self._tell_presser(item, outcome.text)
                else:
                    name = await self._user_name(item.user_id)
                    await self._sink.on_message(item.to_message(self.name, name))
            except Exception:
                log.exception("the inbound sink failed on a Slack message; it is dropped")
            finally:
                self._inbox.task_done()

    async def _tell_presser(self, answer: ApprovalAnswer, text: str) -> None:
        """Only the person who pressed sees why nothing happened (chat.postEphemeral)."""
        if self._web is None or not answer.room:
            return
        try:
            await self._web.chat_postEphemeral(channel=answer.room, user=answer.user_id, text=text)
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
            log.info("could not tell %s why their press did nothing: %s", answer.user_id, exc)

    async def _user_name(self, user_id: str) -> str:
        """The user's handle via users.info (cached), or the id if that fails."""
        if (cached := self._names.get(user_id)) is not None:
            return str(cached)
        name = user_id
        try:
            async with asyncio.timeout(NAME_TIMEOUT):
                info = await self._require_web().users_info(user=user_id)
            user = info.get("user") or {}
            profile = user.get("profile") or {}
            name = str(profile.get("display_name") or user.get("name") or user_id)
        except Exception as exc:  # noqa: BLE001 - a name is a nicety
            log.debug("users.info failed for %s: %s", user_id, exc)
            return name
        self._names.add(user_id, name)
        return name
