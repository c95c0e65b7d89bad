"""Secrets never reach SQLite or the prompt: a conversation through the fake Kimi server in
which the person, the model's text, its reasoning and its tool arguments all carry secrets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.core.redact import use_secrets
from tests.daemon.agent.test_loop import harness_factory  # noqa: F401 - the fixture
from tests.fakes.chat_completions import FakeChatServer, Reply
from tests.support import every_stored_text

SECRETS = {
    "person's message": "PersonPw-Hunter-42",
    "tool argument": "ModelArgPw-77",
    "model text": "sk_live_ModelText0123456789",
    "reasoning": "glpat-Reasoning0123456789abcd",
    "tool result": "ToolResultPw-55",
}


@pytest.fixture(autouse=True)
def no_registered_secrets() -> Iterator[None]:
    yield
    use_secrets([])


async def test_secrets_in_a_conversation_never_reach_sqlite_or_the_prompt(
    harness_factory: Any,  # noqa: F811
    fake_llm: FakeChatServer,
    tmp_path: Path,
) -> None:
    h = await harness_factory()
    arguments = json.dumps(
        {"text": "MYSQL_PWD=ModelArgPw-77 and the result holds password=ToolResultPw-55"}
    )
    fake_llm.script(
        Reply(
            content="Checking with PGPASSWORD=PersonPw-Hunter-42",
            reasoning="the token is glpat-Reasoning0123456789abcd",
            tool_calls=[("echo", arguments)],
        ),
        Reply(content="Done; your Stripe key sk_live_ModelText0123456789 works."),
    )
    result = await h.ask("log in with PGPASSWORD=PersonPw-Hunter-42 please")
    assert result.status == "ok"
    await h.store.close()

    stored = every_stored_text(tmp_path / "db0.sqlite")
    assert "[REDACTED]" in stored
    for where, secret in SECRETS.items():
        assert secret not in stored, f"{where} stored in SQLite"
    prompts = json.dumps(fake_llm.requests)
    for where in ("person's message", "tool argument", "tool result", "reasoning"):
        assert SECRETS[where] not in prompts, f"{where} sent back to the model"
