"""A loopback Chat Completions server that plays scripted replies and enforces Kimi K2.6's rules.

Use it as ``async with FakeChatServer() as fake:`` and point a client at ``fake.base_url``.
Replies come from ``fake.script(...)`` first, then ``fake.responder(request_json)``, else a
default text. Every request body is recorded in ``fake.requests``. Requests the official API
refuses (missing ``reasoning_content``, fixed sampling values, ``tool_choice="required"`` with
thinking, unknown ``tool_call_id``) get its HTTP 400 ``invalid_request_error`` shape, so a client
that would break against Moonshot breaks here too. K2.6 counts an empty ``reasoning_content`` as
missing (seen by earendil-works/pi#4251), and so does the fake.

Faults a server or a proxy in front of it commits are scripted with ``Reply(fault=...)``:
``"cut"`` ends a stream cleanly before its ``finish_reason`` and ``[DONE]`` (tool calls already
sent), ``"drop"`` closes the connection mid-stream, ``"not_json"`` answers 200 with an HTML page,
``"bad_json"`` with truncated JSON, ``"wrong_shape"`` with JSON that is no completion,
``"hang"`` never answers (a stream sends its first chunk, then nothing) until the server stops.

Sub-agents of a swarm are scripted by :class:`SwarmScript`: each names its behaviour in its
goal (``behave=stall steps=3``), so every lifecycle path runs end to end through the real client.

``FakeChatServer(prefix_cache=True)`` counts prompt tokens (about four characters each) and
reports ``usage.prompt_tokens_details.cached_tokens`` as a real prefix cache does: the longest
prefix, in whole blocks of the rendered prompt (tools first, then each message), shared with any
earlier request it saw (:class:`PrefixCache`).

Standalone (benchmarks, subprocess tests)::

    python -m tests.fakes.chat_completions --port 8765 [--script replies.json]

prints its base URL and serves until interrupted; the script file is a JSON list of objects with
:class:`Reply` field names (``tool_calls`` as ``[[name, arguments_json], ...]``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import inspect
import itertools
import json
import re
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from aiohttp import web

__all__ = [
    "DEFAULT_TEXT",
    "SUBAGENT_MARK",
    "SwarmScript",
    "FakeChatServer",
    "PrefixCache",
    "Reply",
    "check_kimi_rules",
    "render_prompt",
]

DEFAULT_TEXT = "(no scripted reply)"
Fault = Literal["cut", "drop", "not_json", "bad_json", "wrong_shape", "hang"]
FAULT_BODIES: dict[str, tuple[str, str]] = {
    "not_json": ("text/html", "<html><body><h1>502 Bad Gateway</h1></body></html>"),
    "bad_json": ("application/json", '{"id": "chatcmpl-1", "object": "chat.completion", "choi'),
    "wrong_shape": ("application/json", '{"status": "ok", "result": ["not", "a", "completion"]}'),
}
THINKING_TEMPERATURE = 1.0
INSTANT_TEMPERATURE = 0.6
TOP_P = 0.95


@dataclass(slots=True, kw_only=True)
class Reply:
    """One scripted answer: a completion, or an error when ``status`` is not 200."""

    content: str = ""
    reasoning: str | None = "thinking..."
    tool_calls: list[tuple[str, str]] = field(default_factory=list)
    status: int = 200
    error_body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    prompt_tokens: int = 10
    completion_tokens: int = 5
    cached_tokens: int = 0
    finish_reason: str | None = None
    fault: Fault | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Reply:
        """Build a reply from a script-file object."""
        data = dict(data)
        data["tool_calls"] = [(str(name), str(args)) for name, args in data.get("tool_calls", [])]
        return cls(**data)


Responder = Callable[[dict[str, Any]], "Reply | Awaitable[Reply]"]

CHARS_PER_TOKEN = 4
BLOCK_TOKENS = 16  # vLLM's default KV block; a prefix is reused in whole blocks


def render_prompt(body: dict[str, Any]) -> str:
    """The prompt as a chat template would lay it out: tool list first, then the messages.

    Keys are sorted, as a template reads fields by name and not in JSON order.
    """
    parts = [json.dumps(body.get("tools") or [], sort_keys=True, ensure_ascii=False)]
    parts += [json.dumps(m, sort_keys=True, ensure_ascii=False) for m in body["messages"]]
    return "\n".join(parts)


class PrefixCache:
    """Automatic prefix caching: chained block hashes of every prompt seen, as vLLM keeps them.

    :meth:`lookup` returns (prompt tokens, cached tokens) for a prompt and remembers its blocks;
    cached tokens are the longest prefix of whole blocks shared with any earlier prompt.
    """

    def __init__(self, block_tokens: int = BLOCK_TOKENS) -> None:
        self.block_chars = block_tokens * CHARS_PER_TOKEN
        self._seen: set[bytes] = set()
        self.lookups: list[tuple[int, int]] = []  # (prompt, cached) tokens of each prompt seen

    def lookup(self, prompt: str) -> tuple[int, int]:
        data = prompt.encode()
        size = self.block_chars
        digest = b""
        hit, matching = 0, True
        for start in range(0, len(data) - size + 1, size):
            digest = hashlib.blake2b(digest + data[start : start + size], digest_size=16).digest()
            if matching and digest in self._seen:
                hit += 1
            else:
                matching = False
                self._seen.add(digest)
        result = -(-len(data) // CHARS_PER_TOKEN), hit * size // CHARS_PER_TOKEN
        self.lookups.append(result)
        return result


class FakeChatServer:
    """An aiohttp Chat Completions server on 127.0.0.1 with a random port."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        models: tuple[str, ...] = ("kimi-k2.6",),
        api_key: str | None = None,
        prefix_cache: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.models = models
        self.api_key = api_key
        self.requests: list[dict[str, Any]] = []
        self.responder: Responder | None = None
        self.in_flight = 0
        self.max_in_flight = 0
        self.cache = PrefixCache() if prefix_cache else None
        self._script: deque[Reply] = deque()
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._hangup = asyncio.Event()  # set at stop(): requests scripted to hang end then

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        self._hangup.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeChatServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- scripting -------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def calls(self) -> int:
        """Chat completion requests received (rejected ones included)."""
        return len(self.requests)

    def script(self, *replies: Reply) -> None:
        """Queue replies, answered in order to the next valid requests."""
        self._script.extend(replies)

    @property
    def pending(self) -> int:
        """Scripted replies not yet played."""
        return len(self._script)

    # -- handlers --------------------------------------------------------------------------

    async def _models(self, request: web.Request) -> web.Response:
        if (denied := self._check_auth(request)) is not None:
            return denied
        data = [
            {"id": model, "object": "model", "created": 1_760_000_000, "owned_by": "moonshot"}
            for model in self.models
        ]
        return web.json_response({"object": "list", "data": data})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._answer(request)
        finally:
            self.in_flight -= 1

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return _error(400, "request body is not valid JSON")
        if not isinstance(body, dict):
            return _error(400, "request body must be a JSON object")
        self.requests.append(body)
        if (denied := self._check_auth(request)) is not None:
            return denied
        problem = check_kimi_rules(body)
        if problem is not None:
            return _error(400, problem)
        reply = await self._next_reply(body)
        if self.cache is not None and reply.status == 200 and reply.fault is None:
            prompt, cached = self.cache.lookup(render_prompt(body))
            reply = dataclasses.replace(reply, prompt_tokens=prompt, cached_tokens=cached)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.fault == "hang" and not body.get("stream"):
            await self._hangup.wait()
            return _error(503, "the server is stopping")
        if reply.status != 200:
            payload = reply.error_body or {
                "error": {"message": f"scripted HTTP {reply.status}", "type": _kind(reply.status)}
            }
            return web.json_response(payload, status=reply.status, headers=reply.headers)
        if reply.fault in FAULT_BODIES:
            content_type, text = FAULT_BODIES[reply.fault]
            return web.Response(text=text, content_type=content_type, headers=reply.headers)
        thinking = _thinking_on(body)
        calls = [
            (f"functions.{name}:{next(self._ids)}", name, args) for name, args in reply.tool_calls
        ]
        if body.get("stream"):
            return await self._stream(request, body, reply, calls, thinking)
        message: dict[str, Any] = {"role": "assistant", "content": reply.content}
        if thinking and reply.reasoning is not None:
            message["reasoning_content"] = reply.reasoning
        if calls:
            message["tool_calls"] = [
                {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}
                for cid, name, args in calls
            ]
        payload = self._envelope(body, "chat.completion")
        payload["choices"] = [
            {"index": 0, "message": message, "finish_reason": _finish(reply, calls)}
        ]
        payload["usage"] = _usage(reply)
        return web.json_response(payload, headers=reply.headers)

    async def _stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        reply: Reply,
        calls: list[tuple[str, str, str]],
        thinking: bool,
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                **reply.headers,
            }
        )
        await response.prepare(request)
        base = self._envelope(body, "chat.completion.chunk")

        async def send(delta: dict[str, Any], finish: str | None = None) -> None:
            chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

        await send({"role": "assistant", "content": ""})
        if reply.fault == "hang":  # the stream starts, then nothing more ever comes
            await self._hangup.wait()
            return response
        if thinking and reply.reasoning:
            for piece in _pieces(reply.reasoning):
                await send({"reasoning_content": piece})
        for piece in _pieces(reply.content):
            await send({"content": piece})
        for index, (cid, name, args) in enumerate(calls):
            await send(
                {
                    "tool_calls": [
                        {
                            "index": index,
                            "id": cid,
                            "type": "function",
                            "function": {"name": name, "arguments": ""},
                        }
                    ]
                }
            )
            for piece in _pieces(args, 3):
                await send({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
        if reply.fault == "cut":  # a clean end of the body, but no finish_reason, usage, [DONE]
            await response.write_eof()
            return response
        if reply.fault == "drop":  # the connection goes away without ending the chunked body
            assert request.transport is not None
            request.transport.abort()
            return response
        await send({}, _finish(reply, calls))
        usage_chunk = {**base, "choices": [], "usage": _usage(reply)}
        await response.write(f"data: {json.dumps(usage_chunk)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _next_reply(self, body: dict[str, Any]) -> Reply:
        if self._script:
            return self._script.popleft()
        if self.responder is not None:
            result = self.responder(body)
            return await result if inspect.isawaitable(result) else result
        return Reply(content=DEFAULT_TEXT)

    def _envelope(self, body: dict[str, Any], obj: str) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-{next(self._ids)}",
            "object": obj,
            "created": int(time.time()),
            "model": str(body.get("model", "kimi-k2.6")),
        }

    def _check_auth(self, request: web.Request) -> web.Response | None:
        if self.api_key is None or request.headers.get("Authorization") == f"Bearer {self.api_key}":
            return None
        return _error(401, "Invalid Authentication", kind="invalid_authentication_error")


# -- sub-agents ------------------------------------------------------------------------------

SUBAGENT_MARK = "You are a sub-agent"
_OPTION = re.compile(r"\b(behave|steps|delay|tool|id|subtools|keyed)=(\S+)")


class SwarmScript:
    """A responder for a coordinator and its sub-agents.

    Requests whose system prompt is not a sub-agent's get ``coordinator`` replies in order
    (then a plain text). A sub-agent's behaviour and options are words in its goal:
    ``behave=NAME steps=N delay=S tool=NAME id=X``. Behaviours:

    - ``ok``: N calls of ``tool`` (``{"text": "<i>"}``, or ``"X:<i>"`` with ``keyed=1``), then
      ``{"status": "ok", "id": X, "steps": N}``; ``slow`` is ``ok`` with every reply after
      ``delay`` seconds (so is any behaviour given a delay, or the script's ``latency``)
    - ``stall``: its first attempt hangs (no answer ever), later attempts are ``ok``;
      ``stall_always`` hangs every time
    - ``fail``: HTTP 500 on every call
    - ``loop``: the same tool call on every step
    - ``malformed``: prose, never JSON; ``malformed_once``: prose, then JSON once corrected
    - ``tokens``: like ``ok`` but every reply costs 10,000 completion tokens
    - ``nest``: delegates one ``behave=ok`` subtask with the tools ``subtools`` (comma
      separated), then answers ``ok`` with what the delegate call returned as ``"delegated"``
    """

    def __init__(self, coordinator: list[Reply] | None = None, *, latency: float = 0.0) -> None:
        self.coordinator: deque[Reply] = deque(coordinator or [])
        self.latency = latency
        self.starts: dict[str, int] = {}  # fresh sub-agent conversations seen, by goal
        self.calls: dict[str, int] = {}  # sub-agent requests seen, by behaviour

    def __call__(self, body: dict[str, Any]) -> Reply:
        messages = body["messages"]
        system = messages[0].get("content") or ""
        if not str(system).startswith(SUBAGENT_MARK):
            return self.coordinator.popleft() if self.coordinator else Reply(content="(done)")
        goal = str(messages[1].get("content") or "")
        options = dict(_OPTION.findall(goal))
        behave = options.get("behave", "ok")
        self.calls[behave] = self.calls.get(behave, 0) + 1
        delay = float(options.get("delay", self.latency))
        fresh = not any(m.get("role") == "assistant" for m in messages)
        if fresh:
            self.starts[goal] = self.starts.get(goal, 0) + 1
        reply = self._reply(behave, options, messages, self.starts.get(goal, 1))
        reply.delay = delay
        return reply

    def _reply(
        self, behave: str, options: dict[str, str], messages: list[dict[str, Any]], start: int
    ) -> Reply:
        steps = int(options.get("steps", "1"))
        tool = options.get("tool", "echo")
        done = sum(1 for m in messages if m.get("role") == "tool")
        if behave == "fail":
            return Reply(status=500)
        if behave == "stall_always" or (behave == "stall" and start == 1):
            return Reply(fault="hang")
        if behave == "nest":
            if done == 0:
                tools = [t for t in options.get("subtools", "echo").split(",") if t]
                sub = {
                    "goal": f"behave=ok steps=0 id={options.get('id', '')}-child",
                    "tools": tools,
                }
                return Reply(tool_calls=[("delegate", json.dumps({"tasks": [sub]}))])
            result = {"status": "ok", "steps": done, "delegated": messages[-1].get("content")}
            return Reply(content=json.dumps(result))
        if behave == "loop":
            return Reply(tool_calls=[(tool, json.dumps({"text": "same"}))])
        cost = 10_000 if behave == "tokens" else 5
        if done < steps:
            text = f"{options.get('id', '')}:{done}" if options.get("keyed") else str(done)
            return Reply(tool_calls=[(tool, json.dumps({"text": text}))], completion_tokens=cost)
        corrected = messages[-1].get("role") == "user" and len(messages) > 2
        if behave == "malformed" or (behave == "malformed_once" and not corrected):
            return Reply(content="All good, nothing to report!")
        result = {"status": "ok", "id": options.get("id", ""), "steps": done}
        return Reply(content=json.dumps(result), completion_tokens=cost)


# -- the rules -------------------------------------------------------------------------------


def _thinking_on(body: dict[str, Any]) -> bool:
    """Thinking is on unless switched off Moonshot's way or vLLM's way."""
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "disabled":
        return False
    template = body.get("chat_template_kwargs")
    return not (isinstance(template, dict) and template.get("thinking") is False)


def check_kimi_rules(body: dict[str, Any]) -> str | None:
    """The official API's complaint about a request body, or None when it would be accepted."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages must be a non-empty list"
    if not body.get("model"):
        return "model is required"
    thinking = _thinking_on(body)
    expected = THINKING_TEMPERATURE if thinking else INSTANT_TEMPERATURE
    fixed: list[tuple[str, float]] = [
        ("temperature", expected),
        ("top_p", TOP_P),
        ("n", 1),
        ("presence_penalty", 0.0),
        ("frequency_penalty", 0.0),
    ]
    for key, value in fixed:
        if body.get(key) is not None and body[key] != value:
            mode = "thinking" if thinking else "non-thinking"
            return f"invalid {key} {body[key]!r}: only {value} is allowed in {mode} mode"
    if thinking and body.get("tool_choice") == "required":
        return "tool_choice 'required' is incompatible with thinking enabled; use 'auto'"
    known_ids: set[str] = set()
    unanswered: tuple[int, list[str]] = (0, [])  # the last tool-call message and its open ids
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            return f"message at index {index} must be an object"
        role = message.get("role")
        if role != "tool" and unanswered[1]:
            return _unanswered(*unanswered)
        if role == "assistant" and message.get("tool_calls"):
            if thinking and not message.get("reasoning_content"):
                return (
                    "thinking is enabled but reasoning_content is missing in assistant tool "
                    f"call message at index {index}"
                )
            ids = [str(call.get("id")) for call in message["tool_calls"]]
            known_ids.update(ids)
            unanswered = (index, ids)
        elif role == "tool":
            if message.get("tool_call_id") not in known_ids:
                return (
                    f"tool_call_id {message.get('tool_call_id')!r} at index {index} is not found "
                    "in any previous assistant tool call"
                )
            if message.get("tool_call_id") in unanswered[1]:
                unanswered[1].remove(str(message.get("tool_call_id")))
    return _unanswered(*unanswered) if unanswered[1] else None


def _unanswered(index: int, ids: list[str]) -> str:
    return (
        f"an assistant message with 'tool_calls' (index {index}) must be followed by tool "
        f"messages responding to each 'tool_call_id'; no response for: {', '.join(ids)}"
    )


# -- payload helpers -------------------------------------------------------------------------


def _usage(reply: Reply) -> dict[str, Any]:
    return {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        "cached_tokens": reply.cached_tokens,
        "prompt_tokens_details": {"cached_tokens": reply.cached_tokens},
    }


def _finish(reply: Reply, calls: list[tuple[str, str, str]]) -> str:
    return reply.finish_reason or ("tool_calls" if calls else "stop")


def _pieces(text: str, parts: int = 4) -> list[str]:
    """Split text into a few chunks, as a streaming server would."""
    if not text:
        return []
    size = max(1, -(-len(text) // parts))
    return [text[i : i + size] for i in range(0, len(text), size)]


def _kind(status: int) -> str:
    return {
        401: "invalid_authentication_error",
        403: "permission_denied_error",
        404: "resource_not_found_error",
        429: "rate_limit_reached_error",
    }.get(status, "invalid_request_error" if status < 500 else "server_error")


def _error(status: int, message: str, *, kind: str = "invalid_request_error") -> web.Response:
    return web.json_response({"error": {"message": message, "type": kind}}, status=status)


# -- standalone ------------------------------------------------------------------------------


async def _serve(port: int, replies: list[Reply], swarm: SwarmScript | None = None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with FakeChatServer(port=port) as fake:
        fake.script(*replies)
        fake.responder = swarm
        print(fake.base_url, flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake Kimi K2.6 Chat Completions server")
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: any)")
    parser.add_argument("--script", type=Path, help="JSON list of scripted replies")
    parser.add_argument(
        "--swarm",
        type=Path,
        help='sub-agents answer as SwarmScript: {"coordinator": [replies], "latency": seconds}',
    )
    args = parser.parse_args(argv)
    items = json.loads(args.script.read_text()) if args.script else []
    swarm = None
    if args.swarm:
        spec = json.loads(args.swarm.read_text())
        coordinator = [Reply.from_json(item) for item in spec.get("coordinator", [])]
        swarm = SwarmScript(coordinator, latency=float(spec.get("latency", 0.0)))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.port, [Reply.from_json(item) for item in items], swarm))


if __name__ == "__main__":
    main()
