"""The local HTTP API: a unix socket (mode 0600) for the CLI, and optionally TCP for probes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pwd
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from daemon.approvals import ApprovalRequest
from daemon.chat import DrainingError
from daemon.http_guard import (
    ConnectionGate,
    QuietRequestHandler,
    connection_cap,
    install_accept_guard,
    server_logger,
)
from daemon.task_commands import SCHEDULER_OFF, TASK_WORDS, TaskConflict, TaskRejected
from daemon.webhooks import BODY_TIMEOUT_SECONDS

if TYPE_CHECKING:
    from daemon.runtime import Runtime

log = logging.getLogger(__name__)

RUNTIME_KEY: web.AppKey[Runtime] = web.AppKey("runtime")
BODY_TIMEOUT_KEY: web.AppKey[float] = web.AppKey("body_timeout", float)
MAX_CHAT_BYTES = 64 * 1024
LINGER_SECONDS = 1.0  # after an early answer (408, 413), drain the unread body this long at most


def build_local_app(
    runtime: Runtime, *, body_timeout: float = BODY_TIMEOUT_SECONDS
) -> web.Application:
    """Everything the CLI needs; served only on the owner-only unix socket. A JSON body not
    received within ``body_timeout`` seconds is answered 408."""
    app = web.Application(client_max_size=MAX_CHAT_BYTES * 2)
    app[RUNTIME_KEY] = runtime
    app[BODY_TIMEOUT_KEY] = body_timeout
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_get("/v1/status", status)
    app.router.add_post("/v1/chat", chat)
    app.router.add_get("/v1/approvals", list_approvals)
    app.router.add_post("/v1/approvals/{id}", answer_approval)
    app.router.add_post("/v1/reload", reload)
    app.router.add_post("/v1/pair", pair)
    app.router.add_post("/v1/command", command)
    app.router.add_post("/v1/tasks", add_task)
    return app


def build_probe_app(runtime: Runtime) -> web.Application:
    """/healthz, /metrics and the Alertmanager webhook (bearer token), for the TCP listener."""
    from daemon.webhooks import alertmanager_routes

    app = web.Application()
    app[RUNTIME_KEY] = runtime
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_endpoint)
    token = runtime.settings.api.webhook_token
    app.router.add_routes(
        alertmanager_routes(
            runtime.incident_manager,
            token.get_secret_value() if token else None,
            body_timeout=runtime.settings.api.body_timeout_seconds,
            clock=runtime.clock,
            stats=runtime.webhook_stats,
        )
    )
    return app


class ApiServer:
    """Starts and stops the listeners, behind the guards of daemon.http_guard."""

    def __init__(self, runtime: Runtime, socket_path: Path) -> None:
        self._runtime = runtime
        self._socket_path = socket_path
        self._runners: list[web.AppRunner] = []
        self._servers: list[asyncio.AbstractServer] = []
        self._restore_handler: Callable[[], None] | None = None
        self.gate = ConnectionGate(connection_cap(runtime.settings.api.max_connections))

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._restore_handler = install_accept_guard(loop)
        local = await self._runner(
            build_local_app(
                self._runtime, body_timeout=self._runtime.settings.api.body_timeout_seconds
            )
        )
        with contextlib.suppress(FileNotFoundError):
            self._socket_path.unlink()  # stale from a crash; the state-dir lock proves it is ours
        old_umask = os.umask(0o177)
        try:
            self._servers.append(
                await loop.create_unix_server(self._factory(local), str(self._socket_path))
            )
        finally:
            os.umask(old_umask)
        os.chmod(self._socket_path, 0o600)
        api = self._runtime.settings.api
        if api.tcp_port:
            probe = await self._runner(build_probe_app(self._runtime))
            self._servers.append(
                await loop.create_server(self._factory(probe), api.tcp_host, api.tcp_port)
            )
            log.info("health and metrics on http://%s:%d", api.tcp_host, api.tcp_port)

    async def _runner(self, app: web.Application) -> web.AppRunner:
        runner = web.AppRunner(app, **self._handler_args())
        await runner.setup()
        self._runners.append(runner)
        return runner

    def _handler_args(self) -> dict[str, Any]:
        return {
            "access_log": None,
            "keepalive_timeout": self._runtime.settings.api.header_timeout_seconds,
            "lingering_time": LINGER_SECONDS,
            "logger": server_logger(),
        }

    def _factory(self, runner: web.AppRunner) -> Callable[[], asyncio.BaseProtocol]:
        server = runner.server
        assert server is not None
        loop, args = asyncio.get_running_loop(), self._handler_args()

        def handler() -> web.RequestHandler:
            return QuietRequestHandler(server, loop=loop, **args)

        return self.gate.wrap(handler, lambda: len(server.connections))

    async def stop(self) -> None:
        for listener in self._servers:
            listener.close()
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        for listener in self._servers:
            await listener.wait_closed()
        self._servers.clear()
        if self._restore_handler is not None:
            self._restore_handler()
            self._restore_handler = None
        with contextlib.suppress(FileNotFoundError):
            self._socket_path.unlink()


def _runtime(request: web.Request) -> Runtime:
    return request.app[RUNTIME_KEY]


def peer_name(request: web.Request) -> str:
    """The local user on the other end of the unix socket (SO_PEERCRED)."""
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is None or sock.family != socket.AF_UNIX:
        return "unknown"
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _, uid, _ = struct.unpack("3i", creds)
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid{uid}"


async def healthz(request: web.Request) -> web.Response:
    report = _runtime(request).health()
    return web.json_response(report, status=200 if report["status"] != "stopping" else 503)


async def metrics_endpoint(request: web.Request) -> web.Response:
    await _runtime(request).refresh_metrics()
    body = await asyncio.to_thread(generate_latest)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def status(request: web.Request) -> web.Response:
    return web.json_response(await _runtime(request).status())


async def reload(request: web.Request) -> web.Response:
    return web.json_response(await _runtime(request).reload())


async def pair(request: web.Request) -> web.Response:
    body = await _json_body(request)
    role = body.get("role")
    if role not in ("viewer", "operator", "admin"):
        raise web.HTTPBadRequest(text='body must be {"role": "viewer" | "operator" | "admin"}')
    code = _runtime(request).pairing.issue(role)
    log.info("pairing code issued for role %s by %s", role, peer_name(request))
    return web.json_response(
        {"code": code.code, "role": role, "expires_at": code.expires_at.isoformat()}
    )


async def command(request: web.Request) -> web.Response:
    """A chat command (incidents, silence …) from the local CLI, run as its unix user."""
    body = await _json_body(request)
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        raise web.HTTPBadRequest(text='body must be {"text": "incidents" | "silence …" | …}')
    word, _, rest = text.strip().partition(" ")
    runtime = _runtime(request)
    actor = f"console:{peer_name(request)}"
    if word.lower() in TASK_WORDS:
        task_commands = getattr(runtime, "task_commands", None)
        if task_commands is None:
            return web.json_response({"text": SCHEDULER_OFF, "ok": False})
        answer = await task_commands.reply(word.lower(), rest, actor)
        return web.json_response({"text": answer.text, "ok": answer.ok})
    if runtime.commands.required(word.lower()) is None:
        raise web.HTTPBadRequest(text=f"unknown command {word!r}")
    reply = await runtime.commands.run(word.lower(), rest, actor)
    return web.json_response({"text": reply, "ok": True})


async def add_task(request: web.Request) -> web.Response:
    """`nightshift tasks add`: a JSON TaskSpec; 400 names what is wrong, 409 a name clash."""
    from pydantic import ValidationError

    from daemon._task_settings import TaskSpec
    from daemon.task_text import added, explain

    task_commands = getattr(_runtime(request), "task_commands", None)
    if task_commands is None:
        raise web.HTTPServiceUnavailable(text=SCHEDULER_OFF)
    body = await _json_body(request)
    try:
        spec = TaskSpec.model_validate(body)
    except ValidationError as exc:
        raise web.HTTPBadRequest(text=explain(exc)) from None
    service = task_commands.service
    try:
        task = await service.add(spec, owner=f"console:{peer_name(request)}")
    except TaskConflict as exc:
        raise web.HTTPConflict(text=str(exc)) from None
    except TaskRejected as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    view = await service.view(task)
    return web.json_response(
        {
            "name": task.name,
            "schedule": view.schedule,
            "next_run": view.next_run.isoformat() if view.next_run else None,
            "deliver_to": spec.deliver_to,
            "text": added(view, service.clock.now()),
        }
    )


async def list_approvals(request: web.Request) -> web.Response:
    pending = _runtime(request).approvals.pending()
    return web.json_response([item.as_dict() for item in pending])


async def answer_approval(request: web.Request) -> web.Response:
    body = await _json_body(request)
    approve = body.get("approve")
    if not isinstance(approve, bool):
        raise web.HTTPBadRequest(text='body must be {"approve": true|false}')
    who = f"console:{peer_name(request)}"
    done = _runtime(request).approvals.resolve(
        request.match_info["id"], approved=approve, by=who, note=str(body.get("note", ""))[:200]
    )
    if not done:
        raise web.HTTPNotFound(text="no such pending approval (answered already, or expired)")
    return web.json_response({"ok": True, "approved": approve, "by": who})


async def chat(request: web.Request) -> web.StreamResponse:
    """Run one message through the agent; the reply streams back as NDJSON events."""
    body = await _json_body(request)
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        raise web.HTTPBadRequest(text='body must be {"text": "...", "conversation": "name"}')
    if len(text) > MAX_CHAT_BYTES:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_CHAT_BYTES, actual_size=len(text))
    runtime = _runtime(request)
    user = peer_name(request)
    conversation = str(body.get("conversation") or f"console:{user}")[:200]
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    send = _ndjson_writer(response)
    pending_sends: set[asyncio.Task[None]] = set()

    def show_approval(item: ApprovalRequest) -> None:
        task = asyncio.ensure_future(send({"type": "approval", **item.as_dict()}))
        pending_sends.add(task)
        task.add_done_callback(pending_sends.discard)

    unsubscribe = runtime.approvals.subscribe(show_approval)
    try:
        reply = await runtime.chat.handle(
            channel="console",
            conversation_key=conversation,
            text=text,
            actor=f"console:{user}",
            on_event=send,
        )
        await send(
            {
                "type": "reply",
                "text": reply.text,
                "status": reply.status,
                "run_id": reply.run_id,
                "tokens": reply.tokens,
            }
        )
    except DrainingError as exc:
        await send({"type": "error", "message": str(exc)})
    except Exception as exc:  # noqa: BLE001 - the client gets a message, the daemon keeps going
        log.exception("chat request failed")
        await send({"type": "error", "message": f"{type(exc).__name__}: {exc}"})
    finally:
        unsubscribe()
    with contextlib.suppress(ConnectionResetError):
        await response.write_eof()
    return response


def _ndjson_writer(response: web.StreamResponse) -> Callable[[dict[str, Any]], Awaitable[None]]:
    async def send(event: dict[str, Any]) -> None:
        with contextlib.suppress(ConnectionResetError):
            await response.write((json.dumps(event, default=str) + "\n").encode())

    return send


async def _json_body(request: web.Request) -> dict[str, Any]:
    limit = request.app[BODY_TIMEOUT_KEY]
    try:
        async with asyncio.timeout(limit):
            body = await request.json()
    except TimeoutError:
        raise web.HTTPRequestTimeout(text=f"body not received within {limit:g} s") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise web.HTTPBadRequest(text="body is not valid JSON") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="body must be a JSON object")
    return body
