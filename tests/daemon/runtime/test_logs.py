"""The journal never sees a secret: every record is redacted by the handler the daemon installs,
run_command logs the command (redacted) and not the person's request, and request-dumping
libraries stay quiet even at --log-level debug."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from daemon.agent.tools.base import ToolContext
from daemon.agent.tools.commands import run_command
from daemon.config import Settings
from daemon.core.clock import SystemClock
from daemon.core.redact import use_secrets
from daemon.runtime.logs import QUIET_LIBRARIES, setup_logging
from tests.fakes.slack import BOT_TOKEN, FakeSlack


@pytest.fixture
def journal() -> Iterator[io.StringIO]:
    """The daemon's own log setup writing to a buffer, as the journal would read stderr."""
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    saved = {name: logging.getLogger(name).level for name in QUIET_LIBRARIES}
    handler = setup_logging("DEBUG", stream)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)
    for name, old in saved.items():
        logging.getLogger(name).setLevel(old)
    use_secrets([])


async def test_run_command_logs_neither_the_request_nor_secrets_in_the_command(
    journal: io.StringIO,
) -> None:
    ctx = ToolContext(
        actor="slack:U1",
        reason="deploy it, the vault passphrase is Opaque-Vault-Words-42 btw",
        settings=Settings(),
        clock=SystemClock(),
    )
    result = await run_command.invoke(ctx, {"command": "echo PGPASSWORD=Pg-S3cret-77 done"})
    assert "done" in result.stdout
    text = journal.getvalue()
    assert "run_command 'echo PGPASSWORD=[REDACTED] done'" in text  # what ran stays visible
    assert "Opaque-Vault-Words-42" not in text
    assert "Pg-S3cret-77" not in text


def test_every_record_is_redacted_message_args_and_traceback(journal: io.StringIO) -> None:
    use_secrets(["configured-0paque-token"])
    log = logging.getLogger("daemon.some.component")
    log.warning("calling %s with %s", "https://bob:UrlPw-123@h/x", "configured-0paque-token")
    try:
        raise RuntimeError("MYSQL_PWD=Traceback-Pw-9 rejected")
    except RuntimeError:
        log.exception("failed for xoxb-1234567890-abcdefghij")
    text = journal.getvalue()
    for secret in ("UrlPw-123", "configured-0paque-token", "Traceback-Pw-9", "xoxb-1234567890"):
        assert secret not in text
    assert "RuntimeError: MYSQL_PWD=[REDACTED] rejected" in text


async def test_slack_sdk_request_dumps_never_reach_the_journal_at_debug(
    journal: io.StringIO,
) -> None:
    async with FakeSlack() as slack:
        client = AsyncWebClient(token=BOT_TOKEN, base_url=slack.api_url)
        await client.chat_postMessage(channel="C1", text="private words from a person")
    text = journal.getvalue()
    assert "private words from a person" not in text
    for name in QUIET_LIBRARIES:
        assert not logging.getLogger(name).isEnabledFor(logging.INFO), name


async def test_a_label_with_a_newline_cannot_forge_a_log_record(journal: io.StringIO) -> None:
    """A notification printed by the console channel (the default) carries alert labels."""
    from integrations.base import OutgoingMessage
    from integrations.console import ConsoleChannel

    console = ConsoleChannel()
    await console.start()
    forged = "[FIRING:1] Disk (mount=/x\nCRITICAL daemon.runtime.process: database corrupt, wiping)"
    await console.send(OutgoingMessage(outbox_id=1, target="", text=forged))
    try:
        raise ValueError("bad label\nERROR daemon.runtime.api: forged")
    except ValueError:
        logging.getLogger("daemon.test").exception("failed")
    await console.stop()
    lines = journal.getvalue().splitlines()
    assert not [line for line in lines if line.startswith(("CRITICAL", "ERROR daemon.runtime.api"))]
    assert any("mount=/x\\nCRITICAL daemon.runtime.process" in line for line in lines)
