"""End to end: secrets in a person's message, the model's tool arguments and its reply never
reach the journal (the daemon's stderr at --log-level DEBUG), SQLite or `nightshift chat`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fakes.chat_completions import FakeChatServer, Reply
from tests.support import DaemonProcess, every_stored_text, write_config

WEBHOOK_TOKEN = "opaque-webhook-value-9"  # configured; a format no pattern knows
SECRETS = {
    "person's message": "UserPw-e2e-1",
    "tool argument": "ArgPw-e2e-2",
    "reply, a known format": "sk_live_ReplyE2E0123456789",
    "reply, the configured webhook token": WEBHOOK_TOKEN,
}


@pytest.fixture
async def daemon(tmp_path: Path, fake_llm: FakeChatServer) -> AsyncIterator[DaemonProcess]:
    config = write_config(
        tmp_path / "config.toml",
        fake_llm.base_url,
        runtime={"log_level": "DEBUG"},
        api={"webhook_token": WEBHOOK_TOKEN},
    )
    process = DaemonProcess(config, tmp_path / "state")
    await process.start()
    yield process
    await process.stop()


async def test_secrets_never_reach_the_journal_sqlite_or_the_cli(
    daemon: DaemonProcess, fake_llm: FakeChatServer
) -> None:
    arguments = {"command": "uptime", "reason": "as asked; MYSQL_PWD=ArgPw-e2e-2 is set"}
    fake_llm.script(
        Reply(tool_calls=[("run_command", json.dumps(arguments))]),
        Reply(content=f"Done. Keys: sk_live_ReplyE2E0123456789 and {WEBHOOK_TOKEN}."),
    )

    code, out, err = await daemon.cli("chat", "-m", "connect with PGPASSWORD=UserPw-e2e-1 pls")

    assert code == 0, err
    assert "Done. Keys: [REDACTED] and [REDACTED]." in out
    journal = daemon.log_path.read_text(errors="replace")
    assert "run_command 'uptime'" in journal  # the command is logged, the request is not
    assert " aiosqlite:" not in journal  # its DEBUG lines would carry every stored value
    stored = every_stored_text(daemon.state_dir / "nightshift.db")
    prompts = json.dumps(fake_llm.requests)
    for where, secret in SECRETS.items():
        assert secret not in out + err, f"{where} shown by nightshift chat"
        assert secret not in journal, f"{where} in the journal"
        assert secret not in stored, f"{where} stored in SQLite"
    assert SECRETS["person's message"] not in prompts
