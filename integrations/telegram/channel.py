"""Telegram through long polling, with python-telegram-bot's ``ExtBot`` and our own poll loop.

We drive ``getUpdates`` ourselves rather than ``Application.run_polling``/``Updater``: with 22.8
``run_polling`` gives up when the first ``getMe`` fails, a revoked token kills the updater's task
while ``updater.running`` stays True, and a handler failure loses the update. Our loop retries
``getMe`` with backoff, records the last successful ``getUpdates`` for ``health()``, advances the
offset only after the sink stored an update (a failing sink gets the update again), and skips
``update_id``s it already handled (Telegram redelivers when the confirming poll was lost).

Errors, mapped onto the channel contract::

    RetryAfter (429)                 DeliveryError(retry_after=seconds)
    TimedOut, NetworkError (5xx)     DeliveryError              (PTB does not retry them)
    InvalidToken (401/404)           DeliveryError + health "down": rotate the token
    Forbidden (403: blocked, kicked) PermanentDeliveryError
    BadRequest (400: chat not found) PermanentDeliveryError
    ChatMigrated                     resent once to the new supergroup id (and logged)

Text goes out without ``parse_mode``: plain text, so no markup can be injected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from functools import partial

from telegram import InlineKeyboardMarkup, Message, Update
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    RetryAfter,
    TelegramError,
)
from telegram.ext import AIORateLimiter, ExtBot
from telegram.request import HTTPXRequest

from daemon.core.errors import DeliveryError, PermanentDeliveryError
from integrations.base import ApprovalPrompt, ChannelHealth, InboundSink, OutgoingMessage
from integrations.inbound import InboundOnce
from integrations.receive_loop import ReceiveLoop
from integrations.telegram.settings import TelegramChannelSettings
from integrations.telegram.updates import (
    TOKEN_DETAIL,
    BotIdentity,
    approval_answer,
    approval_keyboard,
    describe_error,
    inbound_message,
    poll_failure,
    quiet_library_loggers,
    retry_after_seconds,
    split_text,
    truncate,
)

__all__ = ["TOKEN_DETAIL", "TelegramChannel"]

# Opt in to PTB's future timedelta periods: without it, building a RetryAfter emits a
# PTBDeprecationWarning (an error under pytest's filterwarnings=error).
os.environ.setdefault("PTB_TIMEDELTA", "true")

log = logging.getLogger(__name__)

NO_TOKEN_DETAIL = "no bot token: set channels.telegram.bot_token"
POLL_TIMEOUT_SECONDS = 25
START_TIMEOUT_SECONDS = 10.0
STOP_TIMEOUT_SECONDS = 3.0
BACKOFF_INITIAL_SECONDS = 1.0
# An unreachable Bot API is polled again every second: a failing getUpdates costs nothing, and
# replies waiting in the outbox go out within about a second of Telegram's recovery (a rejected
# token or a competing poller is retried every few seconds: see poll_failure).
BACKOFF_MAX_SECONDS = 1.0
REQUEST_TIMEOUT_SECONDS = 10.0
POLL_READ_SLACK_SECONDS = 10.0  # a getUpdates may take its timeout plus PTB's read timeout
SEEN_UPDATES = 10_000  # handled update ids remembered (Telegram may send them again)
PARTIAL_SENDS_KEPT = 1000
ALLOWED_UPDATES = [Update.MESSAGE, Update.CALLBACK_QUERY]


class TelegramChannel:
    """The Telegram chat transport (private chats and groups, inline-button approvals)."""

    name = "telegram"

    def __init__(
        self,
        settings: TelegramChannelSettings,
        *,
        poll_timeout: int = POLL_TIMEOUT_SECONDS,
        start_timeout: float = START_TIMEOUT_SECONDS,
        backoff_initial: float = BACKOFF_INITIAL_SECONDS,
        backoff_max: float = BACKOFF_MAX_SECONDS,
        handled_update_ids: Sequence[int] = (),
    ) -> None:
        self._settings = settings
        self._poll_timeout = poll_timeout
        self._start_timeout = start_timeout
        self._backoff = (backoff_initial, backoff_max)
        self._token = settings.bot_token.get_secret_value() if settings.bot_token else ""
        self._bot: ExtBot[int] | None = None
        self._me: BotIdentity | None = None
        self._sink: InboundSink | None = None
        self._offset: int | None = None
        self._confirmed: int | None = None
        self._once = InboundOnce[int]("Telegram update", SEEN_UPDATES, handled=handled_update_ids)
        self._partial: OrderedDict[int, list[str]] = OrderedDict()
        self._migrated: dict[str, int] = {}
        self._loop = ReceiveLoop("poll", poll_timeout + POLL_READ_SLACK_SECONDS, call="getUpdates")

    async def start(self, sink: InboundSink) -> None:
        """Begin polling; returns once connected, or after ``start_timeout`` with health down
        (polling keeps retrying with backoff in the background)."""
        if self._loop.running:
            return
        quiet_library_loggers()
        self._sink = sink
        if not self._token:
            self._loop.set("down", NO_TOKEN_DETAIL)
            return
        self._bot = ExtBot(
            self._token,
            base_url=self._settings.api_url,
            rate_limiter=AIORateLimiter(max_retries=0),
            request=HTTPXRequest(
                read_timeout=REQUEST_TIMEOUT_SECONDS, write_timeout=REQUEST_TIMEOUT_SECONDS
            ),
            get_updates_request=HTTPXRequest(connection_pool_size=1),
        )
        self._offset = self._confirmed = None  # like a new process: Telegram knows the offset
        await self._loop.launch(
            self._poll_forever(),
            name="telegram-poll",
            detail="connecting to Telegram",
            start_timeout=self._start_timeout,
        )

    async def stop(self) -> None:
        """Stop polling, confirm the handled updates to Telegram, close the HTTP clients."""
        await self._loop.cancel()
        bot, self._bot = self._bot, None
        if bot is not None:
            if self._offset is not None and self._offset != self._confirmed:
                try:
                    await asyncio.wait_for(
                        bot.get_updates(offset=self._offset, timeout=0), STOP_TIMEOUT_SECONDS
                    )
                except (TelegramError, TimeoutError) as exc:
                    log.warning(
                        "could not confirm handled Telegram updates (%s); Telegram will send "
                        "them again, the handled ones are skipped",
                        describe_error(exc, self._token),
                    )
            await bot.shutdown()
        self._me = None
        self._loop.set("stopped", "")

    def health(self) -> ChannelHealth:
        return self._loop.health()

    async def send(self, message: OutgoingMessage) -> str:
        """Send ``message`` as one or more plain-text messages (4,096 characters each), in
        order; a retry after a partial failure resumes with the first part not yet sent."""
        bot = self._require_bot()
        chat = self._target(message.target)
        thread = int(message.thread) if message.thread else None
        done = self._partial.pop(message.outbox_id, [])
        with self._delivery_errors("sendMessage"):
            try:
                for part in split_text(message.text)[len(done) :]:
                    sent = await self._send(bot, chat, part, thread=thread)
                    done.append(str(sent.message_id))
            except BaseException:
                if done:
                    self._partial[message.outbox_id] = done
                    while len(self._partial) > PARTIAL_SENDS_KEPT:
                        self._partial.popitem(last=False)
                raise
        return done[0]

    async def edit(self, target: str, platform_id: str, text: str) -> None:
        await self._edit(target, platform_id, truncate(text), markup=None)

    async def ask_approval(self, prompt: ApprovalPrompt) -> str:
        """Post the prompt with Approve / Deny buttons (callback data ``ns:approve:<id>``)."""
        bot = self._require_bot()
        chat = self._target(prompt.target)
        try:
            keyboard = approval_keyboard(prompt.approval_id)
        except ValueError as exc:
            raise PermanentDeliveryError(str(exc)) from exc
        thread = int(prompt.thread) if prompt.thread else None
        with self._delivery_errors("sendMessage"):
            sent = await self._send(
                bot, chat, truncate(prompt.text), thread=thread, markup=keyboard
            )
        return str(sent.message_id)

    async def close_approval(self, prompt: ApprovalPrompt, platform_id: str, outcome: str) -> None:
        """Replace the prompt with its text plus the outcome, and remove the buttons."""
        text = truncate(f"{prompt.text}\n\n{outcome}")
        await self._edit(prompt.target, platform_id, text, markup=InlineKeyboardMarkup([]))

    async def _send(
        self,
        bot: ExtBot[int],
        chat: int | str,
        text: str,
        *,
        thread: int | None,
        markup: InlineKeyboardMarkup | None = None,
    ) -> Message:
        try:
            return await bot.send_message(chat, text, message_thread_id=thread, reply_markup=markup)
        except ChatMigrated as exc:
            log.warning(
                "Telegram group %s became supergroup %s: update the configured chat id",
                chat,
                exc.new_chat_id,
            )
            self._migrated[str(chat)] = exc.new_chat_id
            return await bot.send_message(
                exc.new_chat_id, text, message_thread_id=thread, reply_markup=markup
            )

    async def _edit(
        self, target: str, platform_id: str, text: str, *, markup: InlineKeyboardMarkup | None
    ) -> None:
        bot = self._require_bot()
        chat = self._target(target)
        with self._delivery_errors("editMessageText"):
            try:
                await bot.edit_message_text(
                    text, chat_id=chat, message_id=int(platform_id), reply_markup=markup
                )
            except BadRequest as exc:
                if "not modified" not in exc.message.lower():
                    raise

    def _require_bot(self) -> ExtBot[int]:
        if self._bot is None:
            raise DeliveryError(f"Telegram channel not running: {self._loop.detail or 'stopped'}")
        return self._bot

    def _target(self, target: str) -> int | str:
        target = target or self._settings.default_chat
        if not target:
            raise PermanentDeliveryError(
                "no target chat and no channels.telegram.default_chat configured"
            )
        if target in self._migrated:
            return self._migrated[target]
        try:
            return int(target)
        except ValueError:
            return target  # "@channelusername"

    @contextlib.contextmanager
    def _delivery_errors(self, method: str) -> Iterator[None]:
        """Translate PTB errors into the contract's delivery errors."""
        try:
            yield
        except RetryAfter as exc:
            seconds = retry_after_seconds(exc)
            log.warning("Telegram rate limit on %s: retry after %.0f s", method, seconds)
            raise DeliveryError(f"Telegram rate limit on {method}", retry_after=seconds) from None
        except InvalidToken:
            self._loop.set("down", TOKEN_DETAIL)
            raise DeliveryError(TOKEN_DETAIL) from None
        except (Forbidden, BadRequest) as exc:
            raise PermanentDeliveryError(f"Telegram refused {method}: {exc.message}") from None
        except TelegramError as exc:  # TimedOut, NetworkError (5xx, refused), anything else
            raise DeliveryError(f"{method} failed: {describe_error(exc, self._token)}") from None

    async def _poll_forever(self) -> None:
        """Connect (getMe) and long-poll until cancelled; every failure is retried."""
        await self._loop.poll_forever(
            self._poll, self._handle_batch, self._poll_failed, backoff=self._backoff
        )

    async def _poll(self) -> Sequence[Update]:
        """One getUpdates (after getMe, until that worked)."""
        bot = self._bot
        assert bot is not None
        if self._me is None:
            await bot.initialize()  # getMe, retried until it works
            self._me = BotIdentity(id=bot.id, username=bot.username or "")
            await bot.delete_webhook()  # getUpdates answers 409 while a webhook is set
        offset = self._offset
        # not up yet: a short poll, so start() learns at once that Telegram answers
        timeout = self._poll_timeout if self._loop.up else 0
        updates = await bot.get_updates(
            offset=offset, timeout=timeout, allowed_updates=ALLOWED_UPDATES
        )
        self._confirmed = offset
        if not self._loop.up:
            log.info("Telegram polling as @%s", self._me.username)
        self._loop.succeeded(f"polling as @{self._me.username}")
        return updates

    def _poll_failed(self, exc: Exception, backoff: float) -> float:
        """Record why polling failed; return how long to wait before the next try."""
        detail, delay = poll_failure(exc, backoff, self._token)
        if not isinstance(exc, TelegramError | OSError):
            log.error("Telegram poll loop error", exc_info=True)
        if detail != self._loop.detail:
            log.warning("Telegram channel down: %s (retrying in %.1f s)", detail, delay)
        self._loop.failed(detail)
        return delay

    async def _handle_batch(self, updates: Sequence[Update]) -> bool:
        """Hand updates to the sink in order; False when one failed (it will come again)."""
        for update in updates:
            update_id = update.update_id
            if not await self._once.handle(update_id, partial(self._handle, update)):
                return False
            if self._offset is None or update_id >= self._offset:
                self._offset = update_id + 1
        return True

    async def _handle(self, update: Update) -> None:
        sink, me, bot = self._sink, self._me, self._bot
        assert sink is not None and me is not None and bot is not None
        if update.message is not None:
            inbound = inbound_message(
                update.message, me, require_mention=self._settings.require_mention_in_groups
            )
            if inbound is not None:
                await sink.on_message(inbound)
            return
        query = update.callback_query
        if query is None:
            return
        answer = approval_answer(query)
        note = "Unknown button" if answer is None else (await sink.on_approval(answer)).text
        try:
            await bot.answer_callback_query(query.id, text=note)
        except TelegramError as exc:  # e.g. "query is too old": the answer is stored anyway
            log.info("answerCallbackQuery failed: %s", describe_error(exc, self._token))

    @property
    def handled_update_ids(self) -> list[int]:
        """Recently handled update ids, oldest first (to persist across restarts)."""
        return self._once.seen.snapshot()
