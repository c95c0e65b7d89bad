"""A loopback Telegram Bot API server for tests: ``async with FakeTelegram(token) as tg:``.

Point python-telegram-bot at ``tg.api_url`` (``http://127.0.0.1:PORT/bot``; the library appends
the token and ``/method``). The fake speaks the parts of the Bot API nightshift uses: ``getMe``,
``deleteWebhook``, ``getUpdates`` (long poll honouring ``offset``/``timeout``, updates kept until
an offset confirms them, as Telegram does), ``sendMessage``, ``editMessageText``,
``editMessageReplyMarkup``, ``answerCallbackQuery``. Requests arrive as PTB sends them: form
fields whose non-string values are JSON-encoded.

Tests push updates (``push_private``, ``push_group``, ``push_callback``, ``push_update``), inspect
``calls`` (every request, in order) and ``messages`` (what the bot posted, as Telegram would store
it), and inject faults: ``revoked`` (401 Unauthorized for everything), ``outage`` (every call
answers that HTTP status, e.g. 502), ``fail_next(method, status, retry_after=...)``, unknown chats
(400 "chat not found"), ``blocked_chats`` (403), ``redeliver(update_id)`` (at-least-once
delivery), and ``pause()``/``resume()`` (connection refused, then the same port again).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import web

__all__ = ["BOT_ID", "BOT_USERNAME", "Call", "FakeTelegram"]

BOT_ID = 7000001
BOT_USERNAME = "nightshift_bot"
MAX_TEXT = 4096
_STRING_FIELDS = frozenset({"text", "caption", "callback_query_id", "inline_message_id", "url"})
_DESCRIPTIONS = {
    400: "Bad Request",
    403: "Forbidden",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
}
_MENTION = re.compile(r"@\w+")
_COMMAND = re.compile(r"^/\w+(@\w+)?")


@dataclass(slots=True)
class Call:
    """One request the fake received."""

    method: str
    params: dict[str, Any]
    status: int = 200
    response: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class _Fault:
    status: int
    retry_after: int | None
    description: str | None
    times: int
    migrate_to: int | None = None


@dataclass(slots=True)
class _State:
    pending: list[dict[str, Any]] = field(default_factory=list)
    redeliver: list[dict[str, Any]] = field(default_factory=list)
    history: dict[int, dict[str, Any]] = field(default_factory=dict)


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _entities(text: str) -> list[dict[str, Any]]:
    """Entities as Telegram computes them (UTF-16 offsets): bot commands and @mentions."""
    found: list[dict[str, Any]] = []
    command = _COMMAND.match(text)
    if command:
        found.append({"type": "bot_command", "offset": 0, "length": _utf16_len(command.group())})
    for match in _MENTION.finditer(text):
        if command and match.start() < command.end():
            continue
        found.append(
            {
                "type": "mention",
                "offset": _utf16_len(text[: match.start()]),
                "length": _utf16_len(match.group()),
            }
        )
    return found


class FakeTelegram:
    """An aiohttp Bot API server on 127.0.0.1 (random port unless given)."""

    def __init__(
        self,
        token: str = "123456:TEST-token",
        *,
        bot_username: str = BOT_USERNAME,
        chats: Iterable[int] = (),
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.token = token
        self.bot_user = {
            "id": BOT_ID,
            "is_bot": True,
            "first_name": "nightshift",
            "username": bot_username,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }
        self.calls: list[Call] = []
        self.messages: dict[tuple[int, int], dict[str, Any]] = {}
        self.revoked = False
        self._outage: int | None = None
        self.blocked_chats: set[int] = set()
        self._chats: dict[int, dict[str, Any]] = {}
        for chat_id in chats:
            self.add_chat(chat_id)
        self._faults: dict[str, list[_Fault]] = {}
        self._state = _State()
        self._update_ids = itertools.count(1001)
        self._message_ids = itertools.count(1)
        self._callback_ids = itertools.count(1)
        self._changed = asyncio.Condition()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> FakeTelegram:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/bot{token}/{method}", self._handle)
        app.router.add_get("/bot{token}/{method}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
        await self._runner.setup()
        await self.resume()

    async def pause(self) -> None:
        """Stop listening (clients see connection refused); ``resume`` rebinds the same port."""
        if self._site is not None:
            await self._site.stop()
            self._site = None

    async def resume(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, self._host, self._port)
        await self._site.start()
        server = self._site._server
        assert server is not None
        self._port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def close(self) -> None:
        self._closing = True
        async with self._changed:
            self._changed.notify_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            self._site = None

    @property
    def api_url(self) -> str:
        return f"http://{self._host}:{self._port}/bot"

    # -- what tests push -----------------------------------------------------------------------

    def add_chat(self, chat_id: int, *, title: str = "ops", forum: bool = False) -> dict[str, Any]:
        """Make a chat known (the bot can post there); negative ids are supergroups."""
        if chat_id > 0:
            chat: dict[str, Any] = {"id": chat_id, "type": "private", "first_name": f"u{chat_id}"}
        else:
            chat = {"id": chat_id, "type": "supergroup", "title": title}
            if forum:
                chat["is_forum"] = True
        self._chats.setdefault(chat_id, chat)
        return self._chats[chat_id]

    def push_update(self, update: dict[str, Any]) -> int:
        """Queue a raw update (``update_id`` is assigned when missing); return its id."""
        update = dict(update)
        update.setdefault("update_id", next(self._update_ids))
        self._state.pending.append(update)
        self._state.history[update["update_id"]] = update
        self._notify()
        return int(update["update_id"])

    def push_private(
        self, text: str, *, user_id: int = 42, first_name: str = "Ann", username: str = "ann"
    ) -> int:
        """A person writes to the bot in a private chat."""
        user = self._user(user_id, first_name, username)
        chat = self.add_chat(user_id)
        return self.push_update({"message": self._message(chat, user, text)})

    def push_group(
        self,
        text: str,
        *,
        chat_id: int = -1001234,
        user_id: int = 42,
        first_name: str = "Ann",
        username: str = "ann",
        thread_id: int | None = None,
        reply_to: int | None = None,
        from_bot: bool = False,
    ) -> int:
        """A group message; ``thread_id`` puts it in a forum topic, ``reply_to`` replies to one
        of the bot's messages (by id)."""
        chat = self.add_chat(chat_id, forum=thread_id is not None)
        user = self._user(user_id, first_name, username, is_bot=from_bot)
        message = self._message(chat, user, text)
        if thread_id is not None:
            message["message_thread_id"] = thread_id
            message["is_topic_message"] = True
        if reply_to is not None:
            message["reply_to_message"] = self.messages[(chat_id, reply_to)]
        return self.push_update({"message": message})

    def push_callback(
        self,
        chat_id: int,
        message_id: int,
        data: str,
        *,
        user_id: int = 42,
        first_name: str = "Ann",
        username: str = "ann",
    ) -> int:
        """A person presses an inline button under one of the bot's messages."""
        query = {
            "id": f"cbq-{next(self._callback_ids)}",
            "from": self._user(user_id, first_name, username),
            "chat_instance": f"ci{chat_id}",
            "data": data,
            "message": self.messages[(chat_id, message_id)],
        }
        return self.push_update({"callback_query": query})

    def redeliver(self, update_id: int) -> None:
        """Send an update again in the next getUpdates answer, whatever the offset says."""
        self._state.redeliver.append(self._state.history[update_id])
        self._notify()

    def fail_next(
        self,
        method: str,
        status: int,
        *,
        retry_after: int | None = None,
        description: str | None = None,
        times: int = 1,
        migrate_to: int | None = None,
    ) -> None:
        """Answer the next ``times`` calls of ``method`` with an error (``migrate_to``: the
        group became that supergroup, as Telegram answers with ``migrate_to_chat_id``)."""
        fault = _Fault(status, retry_after, description, times, migrate_to)
        self._faults.setdefault(method, []).append(fault)

    # -- what tests inspect --------------------------------------------------------------------

    def calls_to(self, method: str) -> list[dict[str, Any]]:
        """Parameters of every successful call to ``method``, in order."""
        return [c.params for c in self.calls if c.method == method and c.status == 200]

    def delivered_update_ids(self) -> list[int]:
        """Every update id getUpdates answered with, in order (redeliveries repeat)."""
        answers = [c.response.get("result") for c in self.calls if c.method == "getUpdates"]
        return [u["update_id"] for result in answers if isinstance(result, list) for u in result]

    def sent_texts(self, chat_id: int) -> list[str]:
        return [m["text"] for (chat, _), m in sorted(self.messages.items()) if chat == chat_id]

    async def wait_for(self, method: str, count: int = 1, timeout: float = 5.0) -> None:
        """Wait until ``method`` succeeded ``count`` times."""
        deadline = time.monotonic() + timeout
        while len(self.calls_to(method)) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{method} called {len(self.calls_to(method))}/{count} times")
            await asyncio.sleep(0.01)

    # -- the API -------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await self._params(request)
        call = Call(method, params)
        self.calls.append(call)
        status, body = await self._dispatch(request.match_info["token"], method, params)
        call.status, call.response = status, body
        return web.json_response(body, status=status)

    async def _dispatch(
        self, token: str, method: str, params: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        if token != self.token or self.revoked:
            return self._error(401, "Unauthorized")
        if self.outage is not None:
            return self._error(self.outage, _DESCRIPTIONS.get(self.outage, "Error"))
        faults = self._faults.get(method)
        if faults:
            fault = faults[0]
            fault.times -= 1
            if fault.times <= 0:
                faults.pop(0)
            extra: dict[str, Any] = {}
            if fault.retry_after:
                extra["retry_after"] = fault.retry_after
            if fault.migrate_to:
                extra["migrate_to_chat_id"] = fault.migrate_to
            description = fault.description or _DESCRIPTIONS.get(fault.status, "Injected")
            if fault.retry_after:
                description = f"{description}: retry after {fault.retry_after}"
            return self._error(fault.status, description, extra)
        handler = getattr(self, f"_api_{method}", None)
        if handler is None:
            return self._error(404, "Not Found")
        return await handler(params)  # type: ignore[no-any-return]

    async def _api_getMe(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return self._ok(self.bot_user)

    async def _api_deleteWebhook(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return self._ok(True)

    @property
    def outage(self) -> int | None:
        """An HTTP status every call gets while set (e.g. 502); in-flight long polls end with it
        too, as they do when the Bot API's front loses its upstream."""
        return self._outage

    @outage.setter
    def outage(self, status: int | None) -> None:
        self._outage = status
        if status is not None:
            self._notify()

    async def _api_getUpdates(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        offset = int(params.get("offset") or 0)
        timeout = float(params.get("timeout") or 0)
        limit = int(params.get("limit") or 100)
        state = self._state
        if offset:
            state.pending = [u for u in state.pending if u["update_id"] >= offset]
        deadline = time.monotonic() + timeout
        async with self._changed:
            while not state.pending and not state.redeliver and not self._closing:
                if self._outage is not None:
                    return self._error(self._outage, _DESCRIPTIONS.get(self._outage, "Error"))
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), remaining)
        batch = (state.redeliver + state.pending)[:limit]
        state.redeliver = []
        return self._ok(batch)

    async def _api_sendMessage(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        chat_id = params.get("chat_id")
        chat = self._chats.get(chat_id) if isinstance(chat_id, int) else None
        if chat is None:
            return self._error(400, "Bad Request: chat not found")
        if chat_id in self.blocked_chats:
            return self._error(403, "Forbidden: bot was blocked by the user")
        text = str(params.get("text", ""))
        if not text.strip():
            return self._error(400, "Bad Request: message text is empty")
        if _utf16_len(text) > MAX_TEXT:
            return self._error(400, "Bad Request: message is too long")
        message = self._message(chat, self.bot_user, text, entities=False)
        if "message_thread_id" in params:
            message["message_thread_id"] = params["message_thread_id"]
        if params.get("reply_markup"):
            message["reply_markup"] = params["reply_markup"]
        self.messages[(chat["id"], message["message_id"])] = message
        return self._ok(message)

    async def _api_editMessageText(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        message = self.messages.get((params.get("chat_id"), params.get("message_id")))  # type: ignore[arg-type]
        if message is None:
            return self._error(400, "Bad Request: message to edit not found")
        markup = params.get("reply_markup") or None
        if message["text"] == params.get("text") and message.get("reply_markup") == markup:
            return self._error(400, "Bad Request: message is not modified")
        message["text"] = params.get("text")
        message["edit_date"] = int(time.time())
        message.pop("reply_markup", None)  # an edit without reply_markup drops the keyboard
        if markup and markup.get("inline_keyboard"):
            message["reply_markup"] = markup
        return self._ok(message)

    async def _api_editMessageReplyMarkup(
        self, params: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        message = self.messages.get((params.get("chat_id"), params.get("message_id")))  # type: ignore[arg-type]
        if message is None:
            return self._error(400, "Bad Request: message to edit not found")
        markup = params.get("reply_markup") or None
        message.pop("reply_markup", None)
        if markup and markup.get("inline_keyboard"):
            message["reply_markup"] = markup
        return self._ok(message)

    async def _api_answerCallbackQuery(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return self._ok(True)

    # -- helpers -------------------------------------------------------------------------------

    @staticmethod
    async def _params(request: web.Request) -> dict[str, Any]:
        if request.content_type == "application/json":
            body = await request.json()
            return dict(body) if isinstance(body, dict) else {}
        form = await request.post() if request.can_read_body else request.query
        params: dict[str, Any] = {}
        for key, value in form.items():
            if not isinstance(value, str):
                continue  # file uploads are not part of this fake
            if key in _STRING_FIELDS:
                params[key] = value
                continue
            try:
                params[key] = json.loads(value)
            except ValueError:
                params[key] = value
        return params

    def _message(
        self, chat: dict[str, Any], user: dict[str, Any], text: str, *, entities: bool = True
    ) -> dict[str, Any]:
        message: dict[str, Any] = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": chat,
            "from": user,
            "text": text,
        }
        if entities and (found := _entities(text)):
            message["entities"] = found
        return message

    @staticmethod
    def _user(user_id: int, first_name: str, username: str, is_bot: bool = False) -> dict[str, Any]:
        return {"id": user_id, "is_bot": is_bot, "first_name": first_name, "username": username}

    @staticmethod
    def _ok(result: Any) -> tuple[int, dict[str, Any]]:
        return 200, {"ok": True, "result": result}

    @staticmethod
    def _error(
        status: int, description: str, parameters: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]]:
        body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
        if parameters:
            body["parameters"] = parameters
        return status, body

    def _notify(self) -> None:
        async def wake() -> None:
            async with self._changed:
                self._changed.notify_all()

        with contextlib.suppress(RuntimeError):  # no running loop: the next poll sees it anyway
            task = asyncio.get_running_loop().create_task(wake())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
