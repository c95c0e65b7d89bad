"""StreamAggregate reads chunks as plain JSON exactly as it reads ChatCompletionChunk models."""

from __future__ import annotations

from typing import Any

import pytest
from openai.types.chat import ChatCompletionChunk

from daemon.agent._stream import MalformedAnswer, StreamAggregate


def _chunk(choice: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "kimi-k2.6",
            "choices": [{"index": 0, **choice}], **extra}  # fmt: skip


STREAM = [
    _chunk({"delta": {"role": "assistant", "reasoning_content": "think "}}),
    _chunk({"delta": {"reasoning_content": "more", "content": "Disk "}}),
    _chunk(
        {
            "delta": {
                "content": "is full.",
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "disk_", "arguments": '{"pa'},
                    }
                ],
            }
        }
    ),  # fmt: skip
    _chunk(
        {
            "delta": {
                "tool_calls": [
                    {"index": 0, "function": {"name": "usage", "arguments": 'th": "/"}'}}
                ]
            }
        }
    ),
    _chunk(
        {
            "delta": {},
            "finish_reason": "tool_calls",
            "usage": {
                "prompt_tokens": 50,
                "completion_tokens": 7,
                "total_tokens": 57,
                "cached_tokens": 32,
            },
        }
    ),  # fmt: skip
    {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "kimi-k2.6",
        "choices": [],
        "usage": {
            "prompt_tokens": 50,
            "completion_tokens": 7,
            "total_tokens": 57,
            "prompt_tokens_details": {"cached_tokens": 40},
        },
    },  # fmt: skip
]


def test_json_chunks_read_as_the_models_do() -> None:
    as_json, as_models = StreamAggregate(), StreamAggregate()
    for chunk in STREAM:
        as_json.feed(chunk)
        as_models.feed(ChatCompletionChunk.construct(**chunk))
    answer = as_json.answer()
    assert answer == as_models.answer()
    assert answer.tool_calls == [("call_1", "disk_usage", '{"path": "/"}')]
    assert (answer.content, answer.reasoning_content) == ("Disk is full.", "think more")
    assert answer.usage == (50, 7, 40, 57)


@pytest.mark.parametrize(
    "chunk",
    [
        [1, 2],
        "text",
        {"choices": []},  # no model
        {"model": "m", "choices": [{"delta": {}}]},  # no index
        {"model": "m", "choices": "nope"},
        {"model": "m", "choices": [{"index": 0, "delta": "nope"}]},
    ],
)
def test_a_chunk_that_is_not_a_completion_chunk_is_malformed(chunk: Any) -> None:
    with pytest.raises(MalformedAnswer):
        StreamAggregate().feed(chunk)
