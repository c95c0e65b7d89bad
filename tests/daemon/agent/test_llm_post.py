"""The client skips openai's request transform: the body on the wire must not change."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from openai._utils import async_maybe_transform
from openai.types.chat import completion_create_params

from daemon.agent.llm import LlmClient
from daemon.agent.settings import BudgetSettings, LlmSettings
from tests.fakes.chat_completions import FakeChatServer

KEY = "sk-test-secret-key"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "disk_usage",
            "description": "Disk use.",
            "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
        },
    }
]
CONVERSATION: list[dict[str, Any]] = [
    {"role": "system", "content": "You are an ops agent."},
    {"role": "user", "content": "disk?"},
    {
        "role": "assistant",
        "content": "",
        "reasoning_content": "look at the disk",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "disk_usage", "arguments": '{"path": "/"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": '{"used": "91%"}'},
    {"role": "user", "content": [{"type": "text", "text": "and now?"}]},
]
STYLES = ["moonshot", "vllm", "none"]


def _client(base_url: str, style: str, stream: bool) -> LlmClient:
    settings = LlmSettings.model_validate(
        {"base_url": base_url, "api_key": KEY, "thinking_style": style, "stream": stream,
         "keep_thinking": True}
    )  # fmt: skip
    return LlmClient(settings, BudgetSettings())


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("mode", ["thinking", "instant"])
async def test_transform_is_the_identity_on_our_requests(
    style: str, stream: bool, mode: str
) -> None:
    client = _client("http://127.0.0.1:9/v1", style, stream)
    args = client._request_args("kimi-k2.6", CONVERSATION, TOOLS, mode)  # type: ignore[arg-type]
    body = {key: value for key, value in args.items() if key != "extra_body"}
    params = (
        completion_create_params.CompletionCreateParamsStreaming
        if stream
        else completion_create_params.CompletionCreateParamsNonStreaming
    )
    assert await async_maybe_transform(body, params) == body
    await client.close()


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("style", STYLES)
async def test_wire_body_matches_create(fake_llm: FakeChatServer, style: str, stream: bool) -> None:
    """What complete() sends is what ``chat.completions.create(**args)`` sends."""
    client = _client(fake_llm.base_url, style, stream)
    await client.complete(CONVERSATION, tools=TOOLS, mode="thinking", purpose="test")
    ours = fake_llm.requests[-1]
    args = client._request_args("kimi-k2.6", CONVERSATION, TOOLS, "thinking")
    async with openai.AsyncOpenAI(base_url=fake_llm.base_url, api_key=KEY) as plain:
        made: Any = await plain.chat.completions.create(**args)
        if stream:
            async for _ in made:
                pass
    assert fake_llm.requests[-1] == ours
    await client.close()
