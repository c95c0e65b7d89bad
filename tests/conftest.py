"""Shared fixtures."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.fakes.chat_completions import FakeChatServer


@pytest.fixture
async def fake_llm() -> AsyncIterator[FakeChatServer]:
    """A started loopback Chat Completions server enforcing Kimi K2.6's rules."""
    async with FakeChatServer() as fake:
        yield fake
