"""Matrix through the client-server API, with matrix-nio's ``AsyncClient`` and our own sync loop.

We log in with an access token (``whoami`` gives the device id), then long-poll ``/sync``
ourselves rather than ``sync_forever``: our loop retries with backoff, records the last good
sync for ``health()``, and persists ``next_batch`` through a :class:`SyncTokenStore` only after
the sink has stored the batch, so a restart neither replays history nor loses what came while we
were away. The very first start (no token) skips the backlog. nio's own retries are off
(``max_limit_exceeded=0``, ``max_timeouts=0``): the outbox decides when to retry.

Inbound: ``m.text`` messages from others (DMs: every message; rooms with more than two members:
only messages that mention us, mention stripped), invites (joined only when the inviter is in
``channels.matrix.users``, otherwise rejected), and reactions on our approval prompts
(👍 / ✅ approve, 👎 / ❌ deny). No end-to-end encryption: use unencrypted rooms.

Errors, mapped onto the channel contract::

    M_LIMIT_EXCEEDED (429)           DeliveryError(retry_after=retry_after_ms / 1000)
    connection errors, timeouts, 5xx DeliveryError
    M_UNKNOWN_TOKEN (401)            DeliveryError + health "down": rotate the token
    M_FORBIDDEN, unknown room, 4xx   PermanentDeliveryError
"""

from __future__ import annotations

import logging
import secrets
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from typing import Any

import aiohttp
from nio import (
    AsyncClient,
    AsyncClientConfig,
    ErrorResponse,
    ReactionEvent,
    RoomMessageText,
    RoomSendResponse,
    SyncResponse,
    WhoamiResponse,
)
from nio.rooms import MatrixRoom

from daemon.core.errors import DeliveryError, PermanentDeliveryError, TransientError
from integrations.base import (
    ApprovalAnswer,
    ApprovalPrompt,
    ChannelHealth,
    InboundSink,
    OutgoingMessage,
)
from integrations.inbound import InboundOnce
from integrations.matrix.events import (
    CHANNEL,
    TOKEN_DETAIL,
    FileSyncTokenStore,
    SyncTokenStore,
    approval_content,
    describe,
    edit_content,
    error_kind,
    quiet_library_loggers,
    reaction_content,
    text_content,
)
from integrations.matrix.inbound import (
    Prompts,
    approval_answer,
    fresh_events,
    inbound_message,
    inviter_of,
)
from integrations.matrix.settings import MatrixChannelSettings
from integrations.receive_loop import ReceiveLoop

__all__ = ["TOKEN_DETAIL", "FileSyncTokenStore", "MatrixChannel", "SyncTokenStore"]

log = logging.getLogger(__name__)

NO_TOKEN_DETAIL = "no access token: set channels.matrix.access_token"
SYNC_TIMEOUT_SECONDS = 30.0
START_TIMEOUT_SECONDS = 10.0
REQUEST_TIMEOUT_SECONDS = 15.0
SYNC_SLACK_SECONDS = 20.0  # a long poll may take its timeout plus this before we call it dead
BACKOFF_INITIAL_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 60.0
TIMELINE_LIMIT = 100  # events per room per sync; more while we were away is logged as a gap
SEEN_EVENTS = 2000  # handled event ids remembered (a retried sync hands them over again)
TXNS_KEPT = 1000
TOLD_KEPT = 1000
# Synapse caches a sync answer for 2 minutes keyed on (device, since, timeout, filter,
# full_state): a restart within that time would get the previous process's first answer, with
# an old next_batch, and replay what followed. A random timeout on the first sync avoids it.
CACHE_BUSTER_MS = 60_000
_NETWORK_ERRORS = (aiohttp.ClientError, TimeoutError, OSError)
SYNC_FILTER = {"room": {"timeline": {"limit": TIMELINE_LIMIT}}}


@dataclass(frozen=True, slots=True)
class _Batch:
    """One /sync answer and the position it was asked from (None: the first, the backlog)."""

    client: AsyncClient
    response: SyncResponse
    since: str | None


class _SyncFailed(TransientError):
    def __init__(self, response: ErrorResponse) -> None:
        super().__init__(describe(response))
        self.response = response


class MatrixChannel:
    """The Matrix chat transport (DMs and group rooms, reaction approvals)."""

    name = CHANNEL

    def __init__(
        self,
        settings: MatrixChannelSettings,
        *,
        sync_token_store: SyncTokenStore | None = None,
        sync_timeout: float = SYNC_TIMEOUT_SECONDS,
        start_timeout: float = START_TIMEOUT_SECONDS,
        backoff_initial: float = BACKOFF_INITIAL_SECONDS,
        backoff_max: float = BACKOFF_MAX_SECONDS,
    ) -> None:
        self._settings = settings
        self._store = sync_token_store
        self._sync_timeout = sync_timeout
        self._start_timeout = start_timeout
        self._backoff = (backoff_initial, backoff_max)
        self._token = settings.access_token.get_secret_value() if settings.access_token else ""
        self._client: AsyncClient | None = None
        self._me = settings.user_id
        self._logged_in = False
        self._sink: InboundSink | None = None
        self._since: str | None = None
        self._first_sync = True
        self._once = InboundOnce[str]("Matrix event", SEEN_EVENTS)
        self._prompts = Prompts()  # our prompt event ids -> approval ids
        self._txns: OrderedDict[int, str] = OrderedDict()  # outbox id -> transaction id
        self._told: set[tuple[str, str]] = set()  # (user, approval) told why a reaction failed
        self._loop = ReceiveLoop("sync", sync_timeout + SYNC_SLACK_SECONDS)

    async def start(self, sink: InboundSink) -> None:
        """Begin syncing; returns once connected, or after ``start_timeout`` with health down
        (the sync loop keeps retrying with backoff in the background)."""
        if self._loop.running:
            return
        quiet_library_loggers()
        self._sink = sink
        if not self._token or not self._settings.homeserver:
            self._loop.set("down", NO_TOKEN_DETAIL if not self._token else "no homeserver set")
            return
        config = AsyncClientConfig(
            max_limit_exceeded=0,
            max_timeouts=0,
            request_timeout=REQUEST_TIMEOUT_SECONDS,
            encryption_enabled=False,
        )
        self._client = AsyncClient(self._settings.homeserver, self._me, config=config)
        self._client.access_token = self._token
        self._logged_in = False
        self._first_sync = True
        self._since = None
        await self._loop.launch(
            self._sync_forever(),
            name="matrix-sync",
            detail=f"connecting to {self._settings.homeserver}",
            start_timeout=self._start_timeout,
        )

    async def stop(self) -> None:
        """Stop syncing and close the HTTP session (the sync token is saved after every batch)."""
        await self._loop.cancel()
        client, self._client = self._client, None
        if client is not None:
            await client.close()
        self._loop.set("stopped", "")

    def health(self) -> ChannelHealth:
        return self._loop.health()

    async def send(self, message: OutgoingMessage) -> str:
        """Send ``message`` as one m.text event; a retry reuses the transaction id, so the
        homeserver does not post it twice."""
        txn = self._txns.get(message.outbox_id) or f"ns{message.outbox_id}-{uuid.uuid4().hex}"
        self._txns[message.outbox_id] = txn
        while len(self._txns) > TXNS_KEPT:
            self._txns.popitem(last=False)
        content = text_content(message.text, thread=message.thread)
        event_id = await self._room_send(message.target, "m.room.message", content, txn=txn)
        self._txns.pop(message.outbox_id, None)
        return event_id

    async def edit(self, target: str, platform_id: str, text: str) -> None:
        await self._room_send(target, "m.room.message", edit_content(platform_id, text))

    async def ask_approval(self, prompt: ApprovalPrompt) -> str:
        """Post the prompt, then react 👍 and 👎 to it so people can answer with one click."""
        content = approval_content(prompt.approval_id, prompt.text, thread=prompt.thread)
        event_id = await self._room_send(prompt.target, "m.room.message", content)
        self._prompts.add(event_id, prompt.approval_id)
        for key in ("👍", "👎"):
            try:
                await self._room_send(prompt.target, "m.reaction", reaction_content(event_id, key))
            except (DeliveryError, PermanentDeliveryError) as exc:
                log.info("could not add the %s reaction to an approval prompt: %s", key, exc)
        return event_id

    async def close_approval(self, prompt: ApprovalPrompt, platform_id: str, outcome: str) -> None:
        """Edit the prompt to its text plus the outcome."""
        await self.edit(prompt.target, platform_id, f"{prompt.text}\n\n{outcome}")

    async def _room_send(
        self, target: str, event_type: str, content: dict[str, Any], *, txn: str | None = None
    ) -> str:
        client = self._require_client()
        room = target or self._settings.default_room
        if not room:
            raise PermanentDeliveryError(
                "no target room and no channels.matrix.default_room configured"
            )
        try:
            response = await client.room_send(room, event_type, content, tx_id=txn)
        except _NETWORK_ERRORS as exc:
            raise DeliveryError(f"sending to Matrix failed: {exc!r}") from None
        if isinstance(response, RoomSendResponse):
            return str(response.event_id)
        assert isinstance(response, ErrorResponse)
        raise self._delivery_error(response, f"{event_type} to {room}")

    def _delivery_error(self, response: ErrorResponse, what: str) -> Exception:
        kind, detail = error_kind(response), describe(response)
        if kind == "rate_limited":
            seconds = (response.retry_after_ms or 5000) / 1000
            log.warning("Matrix rate limit on %s: retry after %.1f s", what, seconds)
            return DeliveryError(f"Matrix rate limit: {detail}", retry_after=seconds)
        if kind == "token":
            self._loop.set("down", TOKEN_DETAIL)
            return DeliveryError(TOKEN_DETAIL)
        if kind == "permanent":
            return PermanentDeliveryError(f"Matrix refused {what}: {detail}")
        return DeliveryError(f"Matrix failed {what}: {detail}")

    def _require_client(self) -> AsyncClient:
        if self._client is None:
            raise DeliveryError(f"Matrix channel not running: {self._loop.detail or 'stopped'}")
        return self._client

    async def _sync_forever(self) -> None:
        """Log in (whoami) and long-poll /sync until cancelled; every failure is retried."""
        await self._loop.poll_forever(
            self._sync, self._handle_batch, self._sync_failed, backoff=self._backoff
        )

    async def _sync(self) -> _Batch:
        """One /sync (after whoami, until that worked)."""
        client = self._client
        assert client is not None
        if not self._logged_in:
            await self._login(client)
        since = self._since
        # not up yet: a short poll, so start() learns at once that the server answers
        timeout = int(self._sync_timeout * 1000) if self._loop.up else 0
        if self._first_sync:  # full_state: answered at once, whatever the timeout
            timeout = 1 + secrets.randbelow(CACHE_BUSTER_MS)
        response = await client.sync(
            timeout=timeout,
            sync_filter=SYNC_FILTER,
            since=since,
            full_state=True if self._first_sync else None,
        )
        if not isinstance(response, SyncResponse):
            assert isinstance(response, ErrorResponse)
            raise _SyncFailed(response)
        if not self._loop.up:
            log.info("Matrix syncing as %s", self._me)
        self._loop.succeeded(f"syncing as {self._me}")
        return _Batch(client, response, since)

    async def _handle_batch(self, batch: _Batch) -> bool:
        """Hand the batch over, then move (and save) the sync position past it."""
        response = batch.response
        if not await self._handle_sync(batch.client, response, deliver=batch.since is not None):
            return False
        self._first_sync = False
        self._since = response.next_batch
        if self._store is not None:
            try:
                await self._store.save(response.next_batch)
            except Exception:  # noqa: BLE001 - a restart may see this batch again
                log.exception("could not save the Matrix sync token")
        return True

    async def _login(self, client: AsyncClient) -> None:
        response = await client.whoami()
        if not isinstance(response, WhoamiResponse):
            assert isinstance(response, ErrorResponse)
            raise _SyncFailed(response)
        if self._me and response.user_id != self._me:
            log.warning(
                "the Matrix access token belongs to %s, not channels.matrix.user_id %s",
                response.user_id,
                self._me,
            )
        self._me = client.user_id = response.user_id
        client.device_id = response.device_id or ""
        if self._store is not None and self._since is None:
            self._since = await self._store.load()
        self._logged_in = True

    def _sync_failed(self, exc: Exception, backoff: float) -> float:
        """Record why syncing failed; return how long to wait before the next try."""
        if isinstance(exc, _SyncFailed):
            kind, detail = error_kind(exc.response), describe(exc.response)
            if kind == "token":
                detail = TOKEN_DETAIL
                self._logged_in = False
            elif kind == "rate_limited":
                backoff = max(backoff, (exc.response.retry_after_ms or 0) / 1000)
        elif isinstance(exc, _NETWORK_ERRORS):
            detail = f"cannot reach {self._settings.homeserver}: {exc!r}"
        else:
            detail = f"sync failed: {exc!r}"
            log.error("Matrix sync loop error", exc_info=True)
        if detail != self._loop.detail:
            log.warning("Matrix channel down: %s (retrying in %.1f s)", detail, backoff)
        self._loop.failed(detail)
        return backoff

    async def _handle_sync(
        self, client: AsyncClient, response: SyncResponse, *, deliver: bool
    ) -> bool:
        """Answer invites, then hand the new events to the sink in order; False when the sink
        failed (the same batch comes again). The first sync without a saved token
        (``deliver`` False) is the backlog: skipped."""
        for room_id, info in response.rooms.invite.items():
            await self._answer_invite(client, room_id, info.invite_state)
        if not deliver:
            return True
        for room_id, joined in response.rooms.join.items():
            room = client.rooms.get(room_id)
            if room is None:
                continue
            events = fresh_events(joined.timeline.events, self._me)
            if joined.timeline.limited and len(events) == len(joined.timeline.events):
                log.warning("Matrix room %s: more than %d events since the last sync, older "
                            "ones skipped", room_id, TIMELINE_LIMIT)  # fmt: skip
            for event in events:
                event_id = getattr(event, "event_id", None)
                if not event_id:
                    continue
                handler = partial(self._handle_event, client, room, event)
                if not await self._once.handle(event_id, handler):
                    return False
        return True

    async def _answer_invite(self, client: AsyncClient, room_id: str, state: list[Any]) -> None:
        inviter = inviter_of(state, self._me)
        if inviter is None:
            return
        allowed = inviter in self._settings.users
        response = await (client.join(room_id) if allowed else client.room_leave(room_id))
        if isinstance(response, ErrorResponse):
            log.warning("could not answer the invite to %s: %s", room_id, describe(response))
        elif allowed:
            log.info("joined Matrix room %s on the invite of %s", room_id, inviter)
        else:
            log.info("rejected an invite to %s from %s (not in channels.matrix.users)",
                     room_id, inviter)  # fmt: skip

    async def _handle_event(self, client: AsyncClient, room: MatrixRoom, event: Any) -> None:
        sink = self._sink
        assert sink is not None
        if event.sender == self._me:
            return
        if isinstance(event, RoomMessageText):
            inbound = inbound_message(room, event, self._me)
            if inbound is not None:
                await sink.on_message(inbound)
        elif isinstance(event, ReactionEvent):
            answer = await approval_answer(client, room, event, self._prompts)
            if answer is not None:
                outcome = await sink.on_approval(answer)
                if not outcome.accepted:  # accepted: the prompt itself is edited to say so
                    await self._tell_reactor(room.room_id, answer, outcome.text)

    async def _tell_reactor(self, room: str, answer: ApprovalAnswer, text: str) -> None:
        """A notice in the room saying why a reaction did nothing (once per person and prompt:
        a stranger's reactions cannot make us talk on and on)."""
        key = (answer.user_id, answer.approval_id)
        if key in self._told:
            return
        self._told.add(key)
        while len(self._told) > TOLD_KEPT:
            self._told.pop()
        content = {"msgtype": "m.notice", "body": f"{answer.user_id}: {text}"}
        try:
            await self._room_send(room, "m.room.message", content)
        except (DeliveryError, PermanentDeliveryError) as exc:
            log.info("could not tell %s why their reaction did nothing: %s", answer.user_id, exc)
