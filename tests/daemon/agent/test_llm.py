"""LlmClient against the loopback fake and the real openai client."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest

from daemon.agent.llm import LlmClient
from daemon.agent.model import REASONING_PLACEHOLDER, Completion, ToolCall, Usage
from daemon.agent.settings import BudgetSettings, LlmSettings
from daemon.core.clock import ManualClock
from daemon.core.errors import AgentDisabledError, BudgetExhaustedError, LlmUnavailableError
from memory.store import SqliteStore
from memory.usage import LlmUsage, UsageRepo
from tests.fakes.chat_completions import DEFAULT_TEXT, FakeChatServer, Fault, Reply

KEY = "sk-test-secret-key"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "disk_usage",
            "description": "Disk use.",
            "parameters": {"type": "object", "properties": {}},
        },
    }
]
START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class Recorder:
    """An in-memory usage sink."""

    def __init__(self, earlier_today: int = 0) -> None:
        self.rows: list[Any] = []
        self.earlier_today = earlier_today
        self.since: list[datetime] = []

    async def record(self, usage: Any) -> int:
        self.rows.append(usage)
        return len(self.rows)

    async def tokens_since(self, since: datetime) -> int:
        self.since.append(since)
        return self.earlier_today


class Sleeps(list[float]):
    """Records requested delays instead of sleeping."""

    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


MakeClient = Callable[..., LlmClient]


@pytest.fixture
async def make_client(fake_llm: FakeChatServer) -> AsyncIterator[MakeClient]:
    """Builds clients on the fake; closes them at the end."""
    made: list[LlmClient] = []

    def make(
        *,
        budget: BudgetSettings | None = None,
        usage: Recorder | None = None,
        usage_repo: UsageRepo | None = None,
        clock: ManualClock | None = None,
        sleep: Sleeps | None = None,
        **llm: Any,
    ) -> LlmClient:
        llm = {"base_url": fake_llm.base_url, "api_key": KEY, "retry_initial_seconds": 0.5, **llm}
        client = LlmClient(
            LlmSettings(**llm),
            budget or BudgetSettings(),
            usage=usage or usage_repo,
            clock=clock or ManualClock(START),
            sleep=Sleeps() if sleep is None else sleep,
        )
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


def _user(text: str = "disk?") -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": "You are an ops agent."},
        {"role": "user", "content": text},
    ]


# -- reasoning_content and modes --------------------------------------------------------------


async def test_tool_exchange_replays_reasoning_content(
    fake_llm: FakeChatServer, make_client: MakeClient
) -> None:
    fake_llm.script(
        Reply(reasoning="check the root disk", tool_calls=[("disk_usage", '{"path": "/"}')]),
        Reply(content="/ is 91% full", reasoning="summarise"),
    )
    client = make_client()
    messages = _user()
    first = await client.complete(messages, tools=TOOLS, mode="thinking", purpose="chat")
    assert first.finish_reason == "tool_calls"
    assert first.tool_calls == (
        ToolCall(id=first.tool_calls[0].id, name="disk_usage", arguments='{"path": "/"}'),
    )
    messages += [
        first.as_message(),
        {"role": "tool", "tool_call_id": first.tool_calls[0].id, "content": "91%"},
    ]
    second = await client.complete(messages, tools=TOOLS, mode="thinking", purpose="chat")
    assert second.content == "/ is 91% full" and second.reasoning_content == "summarise"
    replayed = fake_llm.requests[1]["messages"][2]
    assert replayed["reasoning_content"] == "check the root disk"
    assert replayed["tool_calls"][0]["function"]["name"] == "disk_usage"


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("reasoning", [None, ""])
async def test_tool_call_without_reasoning_is_replayed_with_a_placeholder(
    fake_llm: FakeChatServer, make_client: MakeClient, reasoning: str | None, stream: bool
) -> None:
    # K2.6 treats an empty reasoning_content like a missing one: 400 on the next request
    fake_llm.script(Reply(reasoning=reasoning, tool_calls=[("disk_usage", "{}")]))
    client = make_client(stream=stream)
    first = await client.complete(_user(), tools=TOOLS, mode="thinking", purpose="chat")
    assert first.reasoning_content == REASONING_PLACEHOLDER
    assert first.as_message()["reasoning_content"] == REASONING_PLACEHOLDER
    messages = [
        *_user(),
        first.as_message(),
        {"role": "tool", "tool_call_id": first.tool_calls[0].id, "content": "ok"},
    ]
    second = await client.complete(messages, tools=TOOLS, mode="thinking", purpose="chat")
    assert second.content == DEFAULT_TEXT


async def test_thinking_mode_request(fake_llm: FakeChatServer, make_client: MakeClient) -> None:
    await make_client(keep_thinking=True).complete(
        _user(), tools=TOOLS, mode="thinking", purpose="chat"
    )
    body = fake_llm.requests[0]
    assert body["thinking"] == {"type": "enabled", "keep": "all"}
    assert (body["temperature"], body["top_p"], body["max_tokens"]) == (1.0, 0.95, 32768)
    assert body["tool_choice"] == "auto" and body["tools"] == TOOLS
    assert not {"n", "presence_penalty", "frequency_penalty", "stream"} & body.keys()


async def test_instant_mode_disables_thinking(
    fake_llm: FakeChatServer, make_client: MakeClient
) -> None:
    fake_llm.script(Reply(content="fine", reasoning=None))
    completion = await make_client().complete(_user(), mode="instant", purpose="triage")
    body = fake_llm.requests[0]
    assert body["thinking"] == {"type": "disabled"}
    assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0.6, 0.95, 8192)
    assert "tools" not in body and "tool_choice" not in body
    assert completion.content == "fine" and completion.reasoning_content is None
    assert completion.as_message() == {"role": "assistant", "content": "fine"}


async def test_vllm_and_plain_thinking_styles(
    fake_llm: FakeChatServer, make_client: MakeClient
) -> None:
    await make_client(thinking_style="vllm").complete(_user(), mode="instant", purpose="t")
    await make_client(thinking_style="none").complete(_user(), mode="thinking", purpose="t")
    vllm, plain = fake_llm.requests
    assert vllm["chat_template_kwargs"] == {"thinking": False} and "thinking" not in vllm
    assert vllm["temperature"] == 0.6
    assert not {"thinking", "chat_template_kwargs", "temperature", "top_p"} & plain.keys()


# -- retries and fallbacks --------------------------------------------------------------------


async def test_429_retry_after_seconds_is_honoured(
    fake_llm: FakeChatServer, make_client: MakeClient
) -> None:
    fake_llm.script(Reply(status=429, headers={"Retry-After": "7"}), Reply(content="ok"))
    sleeps = Sleeps()
    completion = await make_client(sleep=sleeps).complete(_user(), mode="instant", purpose="t")
    assert completion.content == "ok"
    assert sleeps == [7.0] and fake_llm.calls == 2


async def test_503_retry_after_http_date_is_honoured(
    fake_llm: FakeChatServer, make_client: MakeClient
) -> None:
    when = format_datetime(START + timedelta(seconds=12), usegmt=True)
    fake_llm.script(Reply(status=503, headers={"Retry-After": when}), Reply(content="ok"))
    sleeps = Sleeps()
    await make_client(sleep=sleeps).complete(_user(), mode="instant", purpose="t")
    assert sleeps == [12.0]


async def test_retry_after_beyond_the_cap_gives_up_on_the_model(
    fake_llm: FakeChatServer, make_client: MakeClient
) -> None:
    fake_llm.script(Reply(status=429, headers={"Retry-After": "3600"}))
    sleeps = Sleeps()
    with pytest.raises(LlmUnavailableError, match="HTTP 429"):
        await make_client(sleep=sleeps).complete(_user(), mode="instant", purpose="t")
    assert sleeps == [] and fake_llm.calls == 1


async def test_500_then_success_retries_with_jittered_backoff(
    fake_llm: FakeChatServer, make_client: MakeClient
) -> None:
    fake_llm.script(Reply(status=500), Reply(status=502), Reply(content="recovered"))
    sleeps = Sleeps()
    completion = await make_client(sleep=sleeps).complete(_user(), mode="instant", purpose="t")
    assert completion.content == "recovered" and fake_llm.calls == 3
    assert len(sleeps) == 2
    assert 0 <= sleeps[0] <= 0.5 and 0 <= sleeps[1] <= 1.0  # full jitter, doubling ceiling


async def test_400_is_not_retried(fake_llm: FakeChatServer, make_client: MakeClient) -> None:
    fake_llm.script(
        Reply(
            status=400,
            error_body={
                "error": {
                    "message": "Invalid request: context too long",
                    "type": "invalid_request_error",
                }
            },
        )
    )
    sleeps, usage = Sleeps(), Recorder()
    client = make_client(sleep=sleeps, usage=usage, fallback_models=["kimi-k2.5"])
    with pytest.raises(LlmUnavailableError, match="context too long") as caught:
        await client.complete(_user(), mode="instant", purpose="t")
    assert fake_llm.calls == 1 and sleeps == []
    assert caught.value.__cause__ is not None
    assert [(row.ok, row.total_tokens) for row in usage.rows] == [(False, 0)]


async def test_401_names_key_and_region(make_client: MakeClient) -> None:
    async with FakeChatServer(api_key="the-right-key") as fake:
        client = make_client(base_url=fake.base_url, fallback_models=["kimi-k2.5"])
        with pytest.raises(AgentDisabledError, match="api.moonshot.cn") as caught:
            await client.complete(_user(), mode="instant", purpose="t")
        assert fake.calls == 1 and KEY not in str(caught.value)
        with pytest.raises(AgentDisabledError, match="region"):
            await client.ping()


async def test_fallback_model_is_used_when_primary_keeps_failing(
    fake_llm: FakeChatServer, make_client: MakeClient
) -> None:
    fake_llm.responder = lambda body: (
        Reply(status=503) if body["model"] == "kimi-k2.6" else Reply(content="from fallback")
    )
    usage = Recorder()
    client = make_client(max_retries=2, fallback_models=["kimi-k2.5"], usage=usage)
    completion = await client.complete(_user(), mode="instant", purpose="t")
    assert completion.content == "from fallback" and completion.model == "kimi-k2.5"
    assert [body["model"] for body in fake_llm.requests] == ["kimi-k2.6"] * 3 + ["kimi-k2.5"]
    assert [(row.model, row.ok) for row in usage.rows] == [
        ("kimi-k2.6", False),
        ("kimi-k2.5", True),
    ]


async def test_all_models_failing_raises_unavailable_with_last_cause(
    fake_llm: FakeChatServer, make_client: MakeClient
) -> None:
    fake_llm.responder = lambda body: Reply(status=500)
    client = make_client(max_retries=1, fallback_models=["kimi-k2.5"])
    with pytest.raises(LlmUnavailableError, match="kimi-k2.5: HTTP 500") as caught:
        await client.complete(_user(), mode="instant", purpose="t")
    assert fake_llm.calls == 4 and caught.value.__cause__ is not None


async def test_connection_errors_are_retried(make_client: MakeClient) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sleeps = Sleeps()
    client = make_client(base_url=f"http://127.0.0.1:{port}/v1", max_retries=2, sleep=sleeps)
    with pytest.raises(LlmUnavailableError, match="APIConnectionError"):
        await client.complete(_user(), mode="instant", purpose="t")
    assert len(sleeps) == 2
    with pytest.raises(LlmUnavailableError, match="cannot reach"):
        await client.ping()


# -- budget and usage -------------------------------------------------------------------------


async def test_exhausted_budget_never_calls_the_api(
    fake_llm: FakeChatServer, make_client: MakeClient
) -> None:
    usage = Recorder(earlier_today=1_000)
    client = make_client(budget=BudgetSettings(daily_tokens=1_000), usage=usage)
    with pytest.raises(BudgetExhaustedError) as caught:
        await client.complete(_user(), mode="instant", purpose="t")
    assert (caught.value.used, caught.value.limit) == (1_000, 1_000)
    assert fake_llm.calls == 0 and usage.rows == []
    assert usage.since == [datetime(2026, 3, 1, tzinfo=UTC)]


async def test_zero_budget_means_no_calls(
    fake_llm: FakeChatServer, make_client: MakeClient
) -> None:
    client = make_client(budget=BudgetSettings(daily_tokens=0))
    with pytest.raises(BudgetExhaustedError):
        await client.complete(_user(), mode="instant", purpose="t")
    assert fake_llm.calls == 0


async def test_a_reloaded_budget_takes_effect_at_once(
    fake_llm: FakeChatServer, make_client: MakeClient
) -> None:
    client = make_client(budget=BudgetSettings(daily_tokens=0))
    with pytest.raises(BudgetExhaustedError):
        await client.complete(_user(), mode="instant", purpose="t")
    client.set_budget(BudgetSettings(daily_tokens=10_000))
    fake_llm.script(Reply(content="back"))
    assert (await client.complete(_user(), mode="instant", purpose="t")).content == "back"
    assert (await client.budget_status())[1] == 10_000


async def test_budget_is_tracked_and_resets_at_local_midnight(
    fake_llm: FakeChatServer, make_client: MakeClient
) -> None:
    clock = ManualClock(datetime(2026, 3, 1, 22, 0, tzinfo=UTC))  # 23:00 in Berlin
    usage = Recorder(earlier_today=900)
    budget = BudgetSettings(daily_tokens=1_000, timezone="Europe/Berlin")
    client = make_client(budget=budget, usage=usage, clock=clock)
    fake_llm.script(Reply(prompt_tokens=80, completion_tokens=40))
    await client.complete(_user(), mode="instant", purpose="t")
    assert await client.budget_status() == (1_020, 1_000)
    with pytest.raises(BudgetExhaustedError):
        await client.complete(_user(), mode="instant", purpose="t")
    assert fake_llm.calls == 1 and len(usage.since) == 1  # read once, then tracked in memory
    assert usage.since[0] == datetime(2026, 2, 28, 23, 0, tzinfo=UTC)
    clock.advance(3600)  # midnight in Berlin: re-read the new day's total
    usage.earlier_today = 0
    await client.complete(_user(), mode="instant", purpose="t")
    assert usage.since[-1] == datetime(2026, 3, 1, 23, 0, tzinfo=UTC)
    assert await client.budget_status() == (15, 1_000)


async def test_usage_is_recorded_with_cached_tokens_and_cost(
    fake_llm: FakeChatServer, make_client: MakeClient
) -> None:
    fake_llm.script(
        Reply(content="ok", prompt_tokens=2_000, cached_tokens=1_000, completion_tokens=400)
    )
    usage = Recorder()
    completion = await make_client(usage=usage).complete(
        _user(), mode="thinking", purpose="incident", run_id=42
    )
    assert completion.usage == Usage(
        prompt_tokens=2_000, completion_tokens=400, cached_tokens=1_000, total_tokens=2_400
    )
    (row,) = usage.rows
    assert isinstance(row, LlmUsage)
    assert (row.run_id, row.model, row.purpose, row.ok, row.error) == (
        42,
        "kimi-k2.6",
        "incident",
        True,
        None,
    )
    assert (row.prompt_tokens, row.cached_tokens, row.completion_tokens, row.total_tokens) == (
        2_000,
        1_000,
        400,
        2_400,
    )
    # 1000 fresh input at $0.60, 1000 cached at $0.15, 400 output at $2.50 per million
    assert row.cost_usd == pytest.approx(0.00175)
    assert row.latency_ms >= 0


async def test_budget_survives_a_restart_through_the_usage_repo(
    fake_llm: FakeChatServer, make_client: MakeClient, tmp_path: Path
) -> None:
    clock = ManualClock(START)
    budget = BudgetSettings(daily_tokens=100)
    fake_llm.script(Reply(prompt_tokens=90, cached_tokens=30, completion_tokens=20))
    async with await SqliteStore.open(tmp_path / "nightshift.db") as store:
        repo = UsageRepo(store, clock)
        first = make_client(budget=budget, usage_repo=repo, clock=clock)
        await first.complete(_user(), mode="instant", purpose="t")
        assert (await repo.summary_since(START)).cached_tokens == 30
        restarted = make_client(budget=budget, usage_repo=repo, clock=clock)
        assert await restarted.budget_status() == (110, 100)
        with pytest.raises(BudgetExhaustedError):
            await restarted.complete(_user(), mode="instant", purpose="t")
    assert fake_llm.calls == 1


async def test_failed_call_is_recorded_and_usage_store_errors_do_not_fail_the_call(
    fake_llm: FakeChatServer, make_client: MakeClient
) -> None:
    class Broken(Recorder):
        async def record(self, usage: Any) -> int:
            raise RuntimeError("disk full")

    fake_llm.script(Reply(content="still answered"))
    completion = await make_client(usage=Broken()).complete(_user(), mode="instant", purpose="t")
    assert completion.content == "still answered"


async def test_one_debug_line_per_call_without_the_key(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="daemon.agent.llm")
    await make_client().complete(_user(), mode="instant", purpose="heartbeat")
    lines = [r.getMessage() for r in caplog.records if r.name == "daemon.agent.llm"]
    assert len(lines) == 1 and "purpose=heartbeat" in lines[0] and "kimi-k2.6" in lines[0]
    assert KEY not in caplog.text


# -- streaming, concurrency, ping ------------------------------------------------------------


async def test_streaming_aggregates_reasoning_content_and_tool_calls(
    fake_llm: FakeChatServer, make_client: MakeClient
) -> None:
    fake_llm.script(
        Reply(
            content="Checking both.",
            reasoning="disk first, then load",
            tool_calls=[("disk_usage", '{"path": "/var/log"}'), ("uptime", "{}")],
            prompt_tokens=300,
            cached_tokens=256,
            completion_tokens=50,
        ),
    )
    usage = Recorder()
    client = make_client(stream=True, usage=usage)
    completion = await client.complete(_user(), tools=TOOLS, mode="thinking", purpose="chat")
    body = fake_llm.requests[0]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert completion.content == "Checking both."
    assert completion.reasoning_content == "disk first, then load"
    assert [(c.name, c.arguments) for c in completion.tool_calls] == [
        ("disk_usage", '{"path": "/var/log"}'),
        ("uptime", "{}"),
    ]
    assert all(c.id for c in completion.tool_calls)
    assert completion.finish_reason == "tool_calls"
    assert completion.usage == Usage(
        prompt_tokens=300, completion_tokens=50, cached_tokens=256, total_tokens=350
    )
    assert usage.rows[0].cached_tokens == 256
    messages = [
        *_user(),
        completion.as_message(),
        *({"role": "tool", "tool_call_id": c.id, "content": "ok"} for c in completion.tool_calls),
    ]
    await client.complete(messages, tools=TOOLS, mode="thinking", purpose="chat")


async def test_concurrency_limit_is_honoured(
    fake_llm: FakeChatServer, make_client: MakeClient
) -> None:
    fake_llm.responder = lambda body: Reply(content="slow", delay=0.05)
    client = make_client(concurrency=2)
    results = await asyncio.gather(
        *(client.complete(_user(str(i)), mode="instant", purpose="t") for i in range(6))
    )
    assert all(isinstance(r, Completion) for r in results)
    assert fake_llm.calls == 6 and fake_llm.max_in_flight == 2


async def test_ping_describes_the_endpoint(
    fake_llm: FakeChatServer, make_client: MakeClient
) -> None:
    assert "kimi-k2.6 available" in await make_client().ping()
    assert "NOT listed" in await make_client(model="kimi-k9").ping()


async def test_no_api_key_disables_the_agent(fake_llm: FakeChatServer) -> None:
    async with LlmClient(LlmSettings(base_url=fake_llm.base_url), BudgetSettings()) as client:
        with pytest.raises(AgentDisabledError, match="no LLM API key"):
            await client.complete(_user(), mode="instant", purpose="t")
    assert fake_llm.calls == 0


# -- a 200 that is no completion -------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "stream"),
    [(f, s) for f in ("not_json", "bad_json", "wrong_shape") for s in (False, True)]
    + [("cut", True)],
)
async def test_a_200_that_is_no_completion_is_retried_like_a_5xx(
    fake_llm: FakeChatServer, make_client: MakeClient, fault: Fault, stream: bool
) -> None:
    fake_llm.script(
        Reply(tool_calls=[("disk_usage", "{}")], fault=fault),
        Reply(content="recovered"),
    )
    sleeps, usage = Sleeps(), Recorder()
    client = make_client(stream=stream, sleep=sleeps, usage=usage, max_retries=2)
    completion = await client.complete(_user(), tools=TOOLS, mode="thinking", purpose="chat")
    assert (completion.content, completion.tool_calls) == ("recovered", ())
    assert fake_llm.calls == 2 and len(sleeps) == 1  # one backoff, as for a 5xx
    assert [row.ok for row in usage.rows] == [True]


@pytest.mark.parametrize(
    ("fault", "stream", "says"),
    [
        ("not_json", False, "HTTP 200 with a body that is not JSON"),
        ("bad_json", False, "HTTP 200 with invalid JSON"),
        ("wrong_shape", False, "HTTP 200 with no choices"),
        ("cut", True, "without a finish_reason (cut off)"),
        ("drop", True, "APIConnectionError"),
    ],
)
async def test_after_retries_a_bad_200_is_a_clear_error(
    fake_llm: FakeChatServer, make_client: MakeClient, fault: Fault, stream: bool, says: str
) -> None:
    bad = Reply(tool_calls=[("disk_usage", "{}")], fault=fault)
    fake_llm.script(bad, bad, bad)
    usage = Recorder()
    client = make_client(stream=stream, usage=usage, max_retries=2)
    with pytest.raises(LlmUnavailableError) as caught:
        await client.complete(_user(), tools=TOOLS, mode="thinking", purpose="chat")
    message = str(caught.value)
    assert fake_llm.calls == 3 and "kept failing" in message and says in message
    assert [row.ok for row in usage.rows] == [False]
