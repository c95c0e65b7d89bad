"""The model client: Kimi K2.6 (or any OpenAI-compatible server) behind one narrow call.

:meth:`LlmClient.complete` sends the sampling values the official API fixes for the mode, replays
``reasoning_content`` through :meth:`Completion.as_message`, retries transient failures with
jittered backoff (honouring ``Retry-After``), falls back to ``fallback_models``, caps concurrency,
and refuses to call at all once the hard daily token budget is spent.

Errors raised (from ``daemon.core.errors``):

    BudgetExhaustedError  the day's budget is spent; no request was sent
    AgentDisabledError    no API key, or the API refused it (401/403: key or region)
    LlmUnavailableError   retries and fallbacks exhausted (429/5xx/network retried, and so is a
                          200 that is not a usable completion: not JSON, the wrong shape, a
                          stream cut before its finish_reason; 404 skips to the next model),
                          or the request was rejected (other 4xx: not retried, no fallback);
                          ``__cause__`` is the last openai error
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, time
from types import TracebackType
from typing import Any, Literal, Protocol
from zoneinfo import ZoneInfo

import openai
from openai._base_client import make_request_options
from openai.types.chat import ChatCompletion

from daemon.agent._stream import (
    Answer,
    MalformedAnswer,
    StreamAggregate,
    describe,
    read_response,
    retry_after,
)
from daemon.agent.model import (
    REASONING_PLACEHOLDER,
    Completion,
    ToolCall,
    Usage,
    model_progress,
)
from daemon.agent.settings import BudgetSettings, LlmSettings
from daemon.core.clock import Clock, SystemClock
from daemon.core.errors import (
    AgentDisabledError,
    BudgetExhaustedError,
    LlmUnavailableError,
    NightshiftError,
)
from daemon.core.redact import redact_messages
from memory.usage import LlmUsage

__all__ = ["LlmClient", "Mode", "UsageSink"]

log = logging.getLogger(__name__)

Mode = Literal["thinking", "instant"]
TEMPERATURE: dict[str, float] = {"thinking": 1.0, "instant": 0.6}
TOP_P = 0.95
RETRY_AFTER_STATUSES = frozenset({429, 503})
_CHUNKS = openai.AsyncStream[object]  # each chunk's JSON as it came (StreamAggregate reads it)


class UsageSink(Protocol):
    """Where usage rows go (``memory.usage.UsageRepo``)."""

    async def record(self, usage: LlmUsage) -> int:
        """Store one row; returns its id."""
        ...

    async def tokens_since(self, since: datetime) -> int:
        """Total tokens recorded at or after ``since``."""
        ...


class _ModelFailed(NightshiftError):
    """One model failed for good (retries spent, or not found); the next fallback may work."""


class LlmClient:
    """Chat Completions with mode-fixed sampling, retries, fallbacks, concurrency and budget."""

    def __init__(
        self,
        settings: LlmSettings,
        budget: BudgetSettings,
        *,
        usage: UsageSink | None = None,
        clock: Clock | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._settings = settings
        self._budget = budget
        self._usage = usage
        self._clock = clock or SystemClock()
        self._sleep = sleep
        self._zone = ZoneInfo(budget.timezone)
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._day_lock = asyncio.Lock()
        self._day: date | None = None
        self._used = 0
        self._random = random.Random()
        key = settings.api_key.get_secret_value() if settings.api_key else ""
        self._client: openai.AsyncOpenAI | None = None
        if key:
            self._client = openai.AsyncOpenAI(
                base_url=settings.base_url,
                api_key=key,
                max_retries=0,
                timeout=openai.Timeout(
                    settings.timeout_seconds, connect=settings.connect_timeout_seconds
                ),
            )

    async def __aenter__(self) -> LlmClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP connections."""
        if self._client is not None:
            await self._client.close()

    # -- public calls ----------------------------------------------------------------------

    async def complete(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        mode: Mode,
        purpose: str,
        run_id: int | None = None,
    ) -> Completion:
        """One completion from the primary model, else from each fallback in turn."""
        client = self._require_client()
        # The last stop before the prompt leaves the host: messages redacted as they entered the
        # conversation (redact_message) are not walked again.
        messages = redact_messages(messages)
        models = list(dict.fromkeys([self._settings.model, *self._settings.fallback_models]))
        causes: list[str] = []
        last: BaseException | None = None
        for model in models:
            args = self._request_args(model, messages, tools, mode)
            try:
                return await self._try_model(client, args, mode, purpose, run_id)
            except _ModelFailed as exc:
                causes.append(f"{model}: {exc}")
                last = exc.__cause__
                if model != models[-1]:
                    log.warning("model %s failed (%s); falling back", model, exc)
        raise LlmUnavailableError(
            f"the model API at {self._settings.base_url} kept failing: {'; '.join(causes)}"
        ) from last

    async def ping(self) -> str:
        """List the models once (no retries); a one-line description for ``nightshift doctor``."""
        client = self._require_client()
        try:
            page = await client.models.list()
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            raise self._give_up(self._settings.model, exc, False) from exc
        except openai.APIStatusError as exc:
            raise LlmUnavailableError(f"{self._settings.base_url}: {describe(exc)}") from exc
        except openai.APIError as exc:
            raise LlmUnavailableError(f"cannot reach {self._settings.base_url}: {exc}") from exc
        ids = [model.id for model in page.data]
        model = self._settings.model
        found = "available" if model in ids else "NOT listed (check [llm] model)"
        return f"{self._settings.base_url}: {len(ids)} model(s), {model} {found}"

    async def budget_status(self) -> tuple[int, int]:
        """(tokens used today, daily limit)."""
        return await self._used_today(), self._budget.daily_tokens

    # -- one model, with retries -----------------------------------------------------------

    async def _try_model(
        self,
        client: openai.AsyncOpenAI,
        args: dict[str, Any],
        mode: Mode,
        purpose: str,
        run_id: int | None,
    ) -> Completion:
        model, attempts = args["model"], self._settings.max_retries + 1
        started = self._clock.monotonic()
        for attempt in range(attempts):
            try:
                async with self._slots:
                    await self._check_budget()
                    completion = await self._request(client, args, mode)
            except (openai.APIError, MalformedAnswer) as exc:  # HTTP, network, timeout, bad 200
                status = getattr(exc, "status_code", None)
                retryable = status is None or status == 429 or status >= 500
                delay = self._backoff(attempt, exc) if attempt + 1 < attempts else None
                if not retryable or delay is None:
                    latency_ms = (self._clock.monotonic() - started) * 1000
                    await self._record(model, purpose, run_id, Usage(), latency_ms, describe(exc))
                    raise self._give_up(model, exc, retryable) from exc
                log.info(
                    "model %s attempt %d/%d failed (%s); retrying in %.1fs",
                    model,
                    attempt + 1,
                    attempts,
                    describe(exc),
                    delay,
                )
                await self._sleep(delay)
            else:
                await self._record(
                    model, purpose, run_id, completion.usage, completion.latency_ms, None
                )
                return completion
        raise AssertionError("unreachable")  # pragma: no cover

    async def _request(
        self, client: openai.AsyncOpenAI, args: dict[str, Any], mode: Mode
    ) -> Completion:
        started = self._clock.monotonic()
        answer: Answer
        progress = model_progress.get()
        if progress is not None:
            progress("start")
        try:
            if args.get("stream"):
                aggregate = StreamAggregate()
                async with await _post(client, args) as stream:
                    async for chunk in stream:
                        aggregate.feed(chunk)
                        if progress is not None:
                            progress("chunk")
                answer = aggregate.answer()
            else:
                answer = read_response(await _post(client, args))
        except json.JSONDecodeError as exc:  # a 200 body, or one SSE event, that is not JSON
            raise MalformedAnswer(f"HTTP 200 with invalid JSON ({exc.msg})") from exc
        finally:
            if progress is not None:
                progress("end")
        reasoning = answer.reasoning_content
        if (
            answer.tool_calls
            and not reasoning
            and (mode == "thinking" and self._settings.thinking_style != "none")
        ):
            reasoning = REASONING_PLACEHOLDER  # the replay must carry one, or thinking mode 400s
        prompt, completion, cached, total = answer.usage
        return Completion(
            content=answer.content,
            reasoning_content=reasoning,
            tool_calls=tuple(ToolCall(id=i, name=n, arguments=a) for i, n, a in answer.tool_calls),
            finish_reason=answer.finish_reason,
            model=answer.model or args["model"],
            usage=Usage(
                prompt_tokens=prompt,
                completion_tokens=completion,
                cached_tokens=cached,
                total_tokens=total,
            ),
            latency_ms=(self._clock.monotonic() - started) * 1000,
        )

    def _request_args(
        self,
        model: str,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        mode: Mode,
    ) -> dict[str, Any]:
        settings = self._settings
        thinking = mode == "thinking"
        args: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "max_tokens": settings.max_tokens_thinking if thinking else settings.max_tokens_instant,
        }
        if settings.thinking_style != "none":
            args["temperature"] = TEMPERATURE[mode]
            args["top_p"] = TOP_P
        if tools:
            args["tools"] = tools
            args["tool_choice"] = "auto"
        if settings.thinking_style == "moonshot":
            switch: dict[str, str] = {"type": "enabled" if thinking else "disabled"}
            if thinking and settings.keep_thinking:
                switch["keep"] = "all"
            args["extra_body"] = {"thinking": switch}
        elif settings.thinking_style == "vllm":
            args["extra_body"] = {"chat_template_kwargs": {"thinking": thinking}}
        if settings.stream:
            args["stream"] = True
            args["stream_options"] = {"include_usage": True}
        return args

    def _backoff(self, attempt: int, failure: Exception) -> float | None:
        """Seconds to wait before the next attempt; None when Retry-After exceeds our cap."""
        settings = self._settings
        if isinstance(failure, openai.APIStatusError) and (
            failure.status_code in RETRY_AFTER_STATUSES
        ):
            after = retry_after(failure.response.headers.get("retry-after"), self._clock.now())
            if after is not None:
                return after if after <= settings.retry_max_seconds else None
        ceiling = min(settings.retry_max_seconds, settings.retry_initial_seconds * 2**attempt)
        return self._random.uniform(0, ceiling)

    # -- budget and usage ------------------------------------------------------------------

    async def _used_today(self) -> int:
        today = self._clock.now().astimezone(self._zone).date()
        if self._day != today:
            async with self._day_lock:
                if self._day != today:
                    used = 0
                    if self._usage is not None:
                        midnight = datetime.combine(today, time(), tzinfo=self._zone)
                        used = await self._usage.tokens_since(midnight.astimezone(UTC))
                    self._day, self._used = today, used
        return self._used

    def set_budget(self, budget: BudgetSettings) -> None:
        """Apply a reloaded budget (SIGHUP); today's usage is re-read for the new time zone."""
        self._budget = budget
        self._zone = ZoneInfo(budget.timezone)
        self._day = None

    async def _check_budget(self) -> None:
        used, limit = await self._used_today(), self._budget.daily_tokens
        if used >= limit:
            raise BudgetExhaustedError(used, limit)

    async def _record(
        self,
        model: str,
        purpose: str,
        run_id: int | None,
        usage: Usage,
        latency_ms: float,
        error: str | None,
    ) -> None:
        log.debug(
            "llm call model=%s purpose=%s prompt=%d cached=%d completion=%d latency=%.0fms ok=%s",
            model,
            purpose,
            usage.prompt_tokens,
            usage.cached_tokens,
            usage.completion_tokens,
            latency_ms,
            error is None,
        )
        if self._day == self._clock.now().astimezone(self._zone).date():
            self._used += usage.total_tokens  # on a new day the store is re-read instead
        if self._usage is None:
            return
        row = LlmUsage(
            run_id=run_id,
            model=model,
            purpose=purpose,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cached_tokens=usage.cached_tokens,
            total_tokens=usage.total_tokens,
            cost_usd=self._cost(usage),
            latency_ms=latency_ms,
            ok=error is None,
            error=error,
        )
        try:
            await self._usage.record(row)
        except Exception:  # a broken usage store must not lose the answer
            log.warning("could not record LLM usage for %s", purpose, exc_info=True)

    def _cost(self, usage: Usage) -> float:
        settings = self._settings
        fresh = max(usage.prompt_tokens - usage.cached_tokens, 0)
        return (
            fresh * settings.price_input_per_mtok
            + usage.cached_tokens * settings.price_cached_input_per_mtok
            + usage.completion_tokens * settings.price_output_per_mtok
        ) / 1_000_000

    # -- helpers ---------------------------------------------------------------------------

    def _require_client(self) -> openai.AsyncOpenAI:
        if self._client is None:
            raise AgentDisabledError(
                "no LLM API key: set NIGHTSHIFT_LLM__API_KEY, [llm] api_key, or a credential "
                "file llm__api_key"
            )
        return self._client

    def _give_up(self, model: str, exc: Exception, retryable: bool) -> Exception:
        """The error for a failure not worth retrying on this model."""
        status, base = getattr(exc, "status_code", None), self._settings.base_url
        if status == 401:
            return AgentDisabledError(
                f"{base} rejected the API key ({describe(exc)}). Moonshot keys are "
                "bound to their region: a key from platform.moonshot.ai works only with "
                "https://api.moonshot.ai/v1, one from platform.moonshot.cn only with "
                "https://api.moonshot.cn/v1; check [llm] api_key and [llm] base_url"
            )
        if status == 403:
            return AgentDisabledError(
                f"{base} refused access ({describe(exc)}); check that "
                "the account may use this model and has balance"
            )
        if retryable or status == 404:
            return _ModelFailed(describe(exc))
        return LlmUnavailableError(f"{model} rejected the request ({describe(exc)}), not retried")


async def _post(client: openai.AsyncOpenAI, args: dict[str, Any]) -> Any:
    """``client.chat.completions.create(**args)`` without its request-parameter transform.

    ``create`` runs the plain JSON body through openai's TypedDict transform (about 4 ms CPU per
    call on a long conversation, a third of a swarm's CPU); for the plain dicts built by
    :meth:`LlmClient._request_args` it is the identity (tests/daemon/agent/test_llm_post.py
    checks that), so the body goes straight to ``client.post`` with the options ``create``
    would give it: ``extra_body`` merged in, bearer auth, the same response type. Stream chunks
    stay plain JSON (``create`` builds a ``ChatCompletionChunk`` model of each, about as costly
    again); the stream's own error handling (an ``error`` event raises APIError) is unchanged.
    """
    body = dict(args)
    extra = body.pop("extra_body", None)
    stream = bool(body.get("stream"))
    return await client.post(
        "/chat/completions",
        body=body,
        options=make_request_options(extra_body=extra, security={"bearer_auth": True}),
        cast_to=ChatCompletion,
        stream=stream,
        stream_cls=_CHUNKS,
    )
