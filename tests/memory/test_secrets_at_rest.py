"""Every repository write of free text masks secrets: what lands in the SQLite file, read back
directly, never holds one (the model's text, tool arguments and results, chat, errors)."""

from __future__ import annotations

from pathlib import Path

from daemon.core.clock import ManualClock
from memory.audit import AuditEntry, AuditRepo
from memory.conversations import ConversationRepo
from memory.facts import FactRepo
from memory.outbox import OutboxRepo
from memory.runs import RunRepo
from memory.store import SqliteStore
from tests.support import every_stored_text

SECRET = "sk_live_AtRest0123456789abc"
SAID = f"use STRIPE={SECRET} for billing"


async def test_no_repository_stores_a_secret(
    store: SqliteStore, clock: ManualClock, db_path: Path
) -> None:
    conversations = ConversationRepo(store, clock)
    conversation = await conversations.get_or_create("slack", "C1")
    arguments = f'{{"command": "{SAID}"}}'
    calls = [{"id": "c1", "type": "function", "function": {"name": "run", "arguments": arguments}}]
    await conversations.append(
        conversation.id, "assistant", SAID, reasoning_content=SAID, tool_calls=calls
    )
    await conversations.append(conversation.id, "tool", SAID, tool_call_id="c1")
    last = await conversations.append(conversation.id, "user", SAID)
    await conversations.mark_summarized(conversation.id, last, SAID)
    runs = RunRepo(store, clock)
    run_id = await runs.start("message", "slack:U1", conversation.id)
    await runs.add_step(run_id, index=1, kind="tool", name="run_command",
                        input={"command": SAID}, output=SAID, error=SAID)  # fmt: skip
    await runs.finish(run_id, "failed", SAID)
    await AuditRepo(store, clock).record(
        AuditEntry(
            actor="slack:U1",
            action="tool",
            tool="run_command",
            tier="privileged",
            reason=SAID,
            arguments={"command": SAID},
            result=SAID,
            ok=True,
            duration_ms=1.0,
            run_id=run_id,
        )
    )
    outbox = OutboxRepo(store, clock)
    message_id = await outbox.enqueue("slack", "C1", SAID)
    await outbox.mark_failed(message_id, SAID)
    await FactRepo(store, clock).remember(SAID)
    await store.close()

    stored = every_stored_text(db_path)
    assert SECRET not in stored
    assert "use STRIPE=[REDACTED] for billing" in stored  # the rest stays readable
