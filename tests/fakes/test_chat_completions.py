"""The fake Chat Completions server, driven by the real openai client: replies and Kimi rules."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.fakes.chat_completions import DEFAULT_TEXT, FakeChatServer, Reply

THINKING_OFF = {"thinking": {"type": "disabled"}}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "disk_usage",
            "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
        },
    }
]


@pytest.fixture
async def client(fake_llm: FakeChatServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=fake_llm.base_url, api_key="k", max_retries=0) as c:
        yield c


def _chat(client: openai.AsyncOpenAI) -> Any:
    """The completions resource, untyped: these tests send what the stubs do not describe."""
    return client.chat.completions


def _tool_exchange(*, with_reasoning: bool) -> list[dict[str, Any]]:
    assistant: dict[str, Any] = {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "functions.disk_usage:0",
                "type": "function",
                "function": {"name": "disk_usage", "arguments": '{"path": "/"}'},
            }
        ],
    }
    if with_reasoning:
        assistant["reasoning_content"] = "check the disk"
    return [
        {"role": "system", "content": "ops"},
        {"role": "user", "content": "disk?"},
        assistant,
        {"role": "tool", "tool_call_id": "functions.disk_usage:0", "content": "91%"},
    ]


async def _rejected(client: openai.AsyncOpenAI, **kwargs: Any) -> str:
    kwargs.setdefault("messages", [{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError) as caught:
        await _chat(client).create(model="kimi-k2.6", **kwargs)
    assert caught.value.status_code == 400
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["type"] == "invalid_request_error"
    return str(caught.value.body["message"])


async def test_default_reply_with_reasoning_and_usage(
    fake_llm: FakeChatServer, client: openai.AsyncOpenAI
) -> None:
    response = await _chat(client).create(
        model="kimi-k2.6", messages=[{"role": "user", "content": "hi"}]
    )
    message = response.choices[0].message
    assert message.content == DEFAULT_TEXT
    assert (message.model_extra or {})["reasoning_content"] == "thinking..."
    assert response.usage is not None and response.usage.total_tokens == 15
    assert fake_llm.calls == 1 and fake_llm.requests[0]["messages"][0]["content"] == "hi"


async def test_scripted_tool_calls_and_cached_tokens(
    fake_llm: FakeChatServer, client: openai.AsyncOpenAI
) -> None:
    fake_llm.script(
        Reply(tool_calls=[("disk_usage", '{"path": "/"}')], prompt_tokens=100, cached_tokens=80)
    )
    response = await _chat(client).create(
        model="kimi-k2.6", messages=[{"role": "user", "content": "disk?"}], tools=TOOLS
    )
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = (choice.message.tool_calls or [])[0]
    assert call.function.name == "disk_usage"
    assert json.loads(call.function.arguments) == {"path": "/"}
    assert response.usage is not None
    assert response.usage.prompt_tokens_details is not None
    assert response.usage.prompt_tokens_details.cached_tokens == 80
    assert (response.usage.model_extra or {})["cached_tokens"] == 80


async def test_missing_reasoning_content_is_rejected_with_index(
    client: openai.AsyncOpenAI,
) -> None:
    message = await _rejected(client, messages=_tool_exchange(with_reasoning=False))
    assert message == (
        "thinking is enabled but reasoning_content is missing in assistant tool call message "
        "at index 2"
    )


async def test_empty_reasoning_content_counts_as_missing(client: openai.AsyncOpenAI) -> None:
    messages = _tool_exchange(with_reasoning=True)
    messages[2]["reasoning_content"] = ""
    message = await _rejected(client, messages=messages)
    assert "reasoning_content is missing in assistant tool call message at index 2" in message


async def test_a_tool_call_left_without_an_answer_is_rejected(
    client: openai.AsyncOpenAI,
) -> None:
    messages = _tool_exchange(with_reasoning=True)[:3] + [{"role": "user", "content": "and?"}]
    message = await _rejected(client, messages=messages)
    assert "(index 2) must be followed by tool messages" in message
    assert "functions.disk_usage:0" in message


async def test_replayed_reasoning_content_is_accepted(client: openai.AsyncOpenAI) -> None:
    await _chat(client).create(model="kimi-k2.6", messages=_tool_exchange(with_reasoning=True))


async def test_instant_mode_needs_no_reasoning_content(
    fake_llm: FakeChatServer, client: openai.AsyncOpenAI
) -> None:
    response = await _chat(client).create(
        model="kimi-k2.6",
        messages=_tool_exchange(with_reasoning=False),
        temperature=0.6,
        extra_body=THINKING_OFF,
    )
    assert "reasoning_content" not in (response.choices[0].message.model_extra or {})


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"temperature": 0.7}, "temperature"),
        ({"temperature": 1.0, "extra_body": THINKING_OFF}, "temperature"),
        ({"top_p": 0.9}, "top_p"),
        ({"n": 2}, "n"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"frequency_penalty": 0.1}, "frequency_penalty"),
        ({"tool_choice": "required", "tools": TOOLS}, "required"),
    ],
)
async def test_fixed_sampling_values_are_enforced(
    fake_llm: FakeChatServer, client: openai.AsyncOpenAI, kwargs: dict[str, Any], word: str
) -> None:
    fake_llm.script(Reply(content="scripted"))
    assert word in await _rejected(client, **kwargs)
    assert fake_llm.pending == 1  # a rejected request consumes no scripted reply


async def test_allowed_values_and_required_tools_without_thinking(
    client: openai.AsyncOpenAI,
) -> None:
    await _chat(client).create(
        model="kimi-k2.6",
        messages=[{"role": "user", "content": "hi"}],
        temperature=1.0,
        top_p=0.95,
        n=1,
        presence_penalty=0,
        frequency_penalty=0,
    )
    await _chat(client).create(
        model="kimi-k2.6",
        messages=[{"role": "user", "content": "hi"}],
        temperature=0.6,
        tools=TOOLS,
        tool_choice="required",
        extra_body=THINKING_OFF,
    )
    await _chat(client).create(  # vLLM's switch is honoured too
        model="kimi-k2.6",
        messages=[{"role": "user", "content": "hi"}],
        temperature=0.6,
        extra_body={"chat_template_kwargs": {"thinking": False}},
    )


async def test_unknown_tool_call_id_is_rejected(client: openai.AsyncOpenAI) -> None:
    messages = _tool_exchange(with_reasoning=True)
    messages[-1]["tool_call_id"] = "functions.other:9"
    assert "functions.other:9" in await _rejected(client, messages=messages)


async def test_scripted_error_status_body_and_headers(
    fake_llm: FakeChatServer, client: openai.AsyncOpenAI
) -> None:
    fake_llm.script(Reply(status=429, headers={"Retry-After": "3"}))
    with pytest.raises(openai.RateLimitError) as caught:
        await _chat(client).create(model="kimi-k2.6", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.response.headers["retry-after"] == "3"
    fake_llm.script(
        Reply(status=503, error_body={"error": {"message": "overloaded", "type": "server_error"}})
    )
    with pytest.raises(openai.InternalServerError, match="overloaded"):
        await _chat(client).create(model="kimi-k2.6", messages=[{"role": "user", "content": "hi"}])


async def test_responder_answers_when_script_is_empty(
    fake_llm: FakeChatServer, client: openai.AsyncOpenAI
) -> None:
    fake_llm.responder = lambda body: Reply(content=f"echo {body['messages'][-1]['content']}")
    fake_llm.script(Reply(content="first"))
    contents = []
    for text in ("a", "b"):
        response = await _chat(client).create(
            model="kimi-k2.6", messages=[{"role": "user", "content": text}]
        )
        contents.append(response.choices[0].message.content)
    assert contents == ["first", "echo b"]


async def test_streaming_splits_reasoning_content_and_tool_calls(
    fake_llm: FakeChatServer, client: openai.AsyncOpenAI
) -> None:
    fake_llm.script(
        Reply(
            content="looking",
            reasoning="the disk may be full",
            tool_calls=[("disk_usage", '{"path": "/var"}'), ("uptime", "{}")],
            cached_tokens=4,
        )
    )
    stream = await _chat(client).create(
        model="kimi-k2.6",
        messages=[{"role": "user", "content": "disk?"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    reasoning, content, args, chunks, usage = [], [], {0: "", 1: ""}, 0, None
    async with stream:
        async for chunk in stream:
            chunks += 1
            usage = chunk.usage or usage
            for choice in chunk.choices:
                delta = choice.delta
                reasoning.append((delta.model_extra or {}).get("reasoning_content") or "")
                content.append(delta.content or "")
                for call in delta.tool_calls or []:
                    args[call.index] += (call.function and call.function.arguments) or ""
    assert "".join(reasoning) == "the disk may be full" and "".join(content) == "looking"
    assert args == {0: '{"path": "/var"}', 1: "{}"}
    assert chunks > 10
    assert usage is not None and usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 4


async def test_models_and_api_key() -> None:
    async with FakeChatServer(api_key="right") as fake:
        async with openai.AsyncOpenAI(base_url=fake.base_url, api_key="right") as good:
            page = await good.models.list()
            assert [model.id for model in page.data] == ["kimi-k2.6"]
        async with openai.AsyncOpenAI(
            base_url=fake.base_url, api_key="wrong", max_retries=0
        ) as bad:
            with pytest.raises(openai.AuthenticationError):
                await bad.models.list()


async def test_delay_and_in_flight_count(
    fake_llm: FakeChatServer, client: openai.AsyncOpenAI
) -> None:
    fake_llm.responder = lambda body: Reply(content="slow", delay=0.05)

    async def one() -> None:
        await _chat(client).create(model="kimi-k2.6", messages=[{"role": "user", "content": "hi"}])

    await asyncio.gather(*(one() for _ in range(3)))
    assert fake_llm.max_in_flight == 3 and fake_llm.in_flight == 0


async def test_standalone_process_serves_a_script(tmp_path: Path) -> None:
    script = tmp_path / "script.json"
    script.write_text(json.dumps([{"content": "from file", "tool_calls": [["uptime", "{}"]]}]))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.fakes.chat_completions",
        "--port",
        "0",
        "--script",
        str(script),
        stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).parents[2],
    )
    try:
        assert process.stdout is not None
        url = (await asyncio.wait_for(process.stdout.readline(), 10)).decode().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        async with openai.AsyncOpenAI(base_url=url, api_key="k", max_retries=0) as client:
            response = await _chat(client).create(
                model="kimi-k2.6", messages=[{"role": "user", "content": "hi"}]
            )
        assert response.choices[0].message.content == "from file"
        assert (response.choices[0].message.tool_calls or [])[0].function.name == "uptime"
    finally:
        process.terminate()
        assert await asyncio.wait_for(process.wait(), 10) == 0
