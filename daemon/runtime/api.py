"""The local HTTP API: a unix socket (mode 0600) for the CLI, and optionally TCP for probes."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import pwd
import socket
import stat
import struct
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from daemon.alerting.alertmanager import BODY_TIMEOUT_SECONDS
from daemon.core.background import BackgroundTasks
from daemon.core.errors import ConfigError, DrainingError, TaskConflict, TaskRejected
from daemon.core.messages import ApprovalRequest
from daemon.core.redact import redact_data
from daemon.runtime.http_guard import (
    ConnectionGate,
    QuietRequestHandler,
    connection_cap,
    install_accept_guard,
    server_logger,
)
from daemon.tasks.commands import SCHEDULER_OFF, TASK_WORDS

if TYPE_CHECKING:
    from daemon.runtime.process import Runtime

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
    from daemon.alerting.alertmanager import alertmanager_routes

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
            max_bytes=runtime.settings.api.webhook_max_bytes,
            clock=runtime.clock,
            stats=runtime.webhook_stats,
        )
    )
    return app


class ApiServer:
    """Starts and stops the listeners, behind the guards of daemon.runtime.http_guard."""

    def __init__(self, runtime: Runtime, socket_path: Path) -> None:
        self._runtime = runtime
        self._socket_path = socket_path
        self._runners: list[web.AppRunner] = []
        self._socket_id: tuple[int, int] | None = None  # (st_dev, st_ino) of the socket we made
        self._servers: list[asyncio.AbstractServer] = []
        self._restore_handler: Callable[[], None] | None = None
        self.gate = ConnectionGate(connection_cap(runtime.settings.api.max_connections))

    async def start(self) -> None:
        """Listen, or raise ConfigError naming the api key that stops us (path, host, port)."""
        loop = asyncio.get_running_loop()
        self._restore_handler = install_accept_guard(loop)
        local = await self._runner(
            build_local_app(
                self._runtime, body_timeout=self._runtime.settings.api.body_timeout_seconds
            )
        )
        await remove_stale_socket(self._socket_path)
        old_umask = os.umask(0o177)
        try:
            self._servers.append(
                await loop.create_unix_server(self._factory(local), str(self._socket_path))
            )
        except OSError as exc:
            raise ConfigError(
                f"api.socket: cannot listen on {self._socket_path}: {exc.strerror or exc}; "
                "fix the state directory's permissions or set api.socket to another path"
            ) from None
        finally:
            os.umask(old_umask)
        os.chmod(self._socket_path, 0o600)
        made = os.lstat(self._socket_path)
        self._socket_id = (made.st_dev, made.st_ino)
        api = self._runtime.settings.api
        if api.tcp_port:
            probe = await self._runner(build_probe_app(self._runtime))
            try:
                self._servers.append(
                    await loop.create_server(self._factory(probe), api.tcp_host, api.tcp_port)
                )
            except OSError as exc:
                raise _listen_error(api.tcp_host, api.tcp_port, exc) from None
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
        try:  # only the socket this server made: never a file someone put there since
            now = os.lstat(self._socket_path)
        except OSError:
            return
        if self._socket_id == (now.st_dev, now.st_ino) and stat.S_ISSOCK(now.st_mode):
            with contextlib.suppress(FileNotFoundError):
                self._socket_path.unlink()
        self._socket_id = None


async def remove_stale_socket(path: Path) -> None:
    """Delete ``path`` only if it is a unix socket nobody answers on; else raise ConfigError."""
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError(f"api.socket: cannot inspect {path}: {exc.strerror}") from None
    if not stat.S_ISSOCK(found.st_mode):
        kind = "a directory" if stat.S_ISDIR(found.st_mode) else "not a socket"
        raise ConfigError(
            f"api.socket: {path} exists and is {kind}; nightshift will not delete it. Move it "
            "away, or set api.socket to another name"
        )
    try:
        _, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), 5.0)
    except (ConnectionRefusedError, FileNotFoundError):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # left by a process that died: nobody listens any more
        log.info("removed the stale socket %s", path)
        return
    except (OSError, TimeoutError) as exc:
        reason = "it did not answer in time" if isinstance(exc, TimeoutError) else exc.strerror
        raise ConfigError(
            f"api.socket: {path} is a socket nightshift cannot check ({reason}); remove it if "
            "no other program uses it, or set api.socket to another name"
        ) from None
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    raise ConfigError(
        f"api.socket: another program is listening on {path}; stop it, or set api.socket "
        "to another name"
    )


def _listen_error(host: str, port: int, exc: OSError) -> ConfigError:
    """The TCP listener's failure, told as the setting to change."""
    if exc.errno == errno.EADDRINUSE:
        return ConfigError(
            f"api.tcp_port: port {port} on {host} is already in use; stop the program holding "
            f"it (see `ss -ltnp 'sport = :{port}'`) or choose another api.tcp_port"
        )
    return ConfigError(
        f"api.tcp_host: cannot listen on {host}:{port}: {exc.strerror or exc}; use an address "
        "of this host (127.0.0.1, ::1, or 0.0.0.0 for every interface)"
    )


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
    answer = await _llm_free(_runtime(request), text, f"console:{peer_name(request)}")
    if answer is None:
        raise web.HTTPBadRequest(text=f"unknown command {text.split()[0]!r}")
    reply, ok = answer
    return web.json_response({"text": reply, "ok": ok})


async def _llm_free(runtime: Runtime, text: str, actor: str) -> tuple[str, bool] | None:
    """Answer a command that needs no model (help, status, incidents, silences, tasks), as in
    every chat channel; None when ``text`` is not one (a question for the agent)."""
    from daemon.chat.hub import HELP_TEXT

    word, _, rest = text.strip().partition(" ")
    word = word.lower()
    if word == "help":
        return HELP_TEXT, True
    if word == "status":
        return await runtime.status_text(), True
    if word in TASK_WORDS:
        task_commands = getattr(runtime, "task_commands", None)
        if task_commands is None:
            return SCHEDULER_OFF, False
        answer = await task_commands.reply(word, rest, actor)
        return answer.text, answer.ok
    if runtime.commands.required(word) is None:
        return None
    return await runtime.commands.run(word, rest, actor), True


async def add_task(request: web.Request) -> web.Response:
    """`nightshift tasks add`: a JSON TaskSpec; 400 names what is wrong, 409 a name clash."""
    from pydantic import ValidationError

    from daemon.core.tasks import TaskSpec
    from daemon.tasks.text import added, explain

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
    answer = await _llm_free(runtime, text, f"console:{user}")
    if answer is not None:  # answered like in every channel, with or without the agent
        await send({"type": "reply", "text": answer[0], "status": "ok" if answer[1] else "error"})
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response
    pending_sends = BackgroundTasks("console chat")

    def show_approval(item: ApprovalRequest) -> None:
        pending_sends.spawn(send({"type": "approval", **item.as_dict()}), f"approval {item.id}")

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


def _ndjson_writer(
    response: web.StreamResponse,
) -> Callable[[dict[str, Any]], Coroutine[Any, Any, None]]:
    async def send(event: dict[str, Any]) -> None:
        with contextlib.suppress(ConnectionResetError):
            line = json.dumps(redact_data(event), default=str)  # CLI output: secrets masked
            await response.write((line + "\n").encode())

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
