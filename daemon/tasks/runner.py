"""Runs one claimed task slot: pre-check gate, command or agent, delivery, failure policy.

The LLM is woken only for a prompt task whose pre-check (if any) says there is work; a pure
command task never needs it. A reply that is exactly the task's no-news token is not delivered.
Unattended runs never wait for approval: privileged tools are denied at once (the executor's
policy) unless allowlisted, and the run's answer says what it would have needed.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from daemon.agent.loop import AgentLoop, AgentRequest
from daemon.agent.prompts import fence
from daemon.core.clock import Clock
from daemon.core.errors import NightshiftError
from daemon.watchers.command import run_command
from memory.conversations import ConversationRepo
from memory.outbox import OutboxRepo
from memory.tasks import StoredTask, TaskRepo

log = logging.getLogger(__name__)

PRECHECK_TIMEOUT_SECONDS = 60.0
MAX_DELIVERED_CHARS = 12_000
MAX_BACKOFF_SECONDS = 3600.0


class TaskFailure(NightshiftError):
    """A run that did not work; retried per the task's policy."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    status: str  # ok | nothing_to_do
    text: str = ""
    tokens: int = 0


class TaskRunner:
    def __init__(
        self,
        *,
        repo: TaskRepo,
        outbox: OutboxRepo,
        conversations: ConversationRepo,
        agent: AgentLoop | None,
        clock: Clock,
        wake_outbox: Callable[[], None] = lambda: None,
        sleep: Callable[[float], object] = asyncio.sleep,
        builtins: Mapping[str, Callable[[datetime], Awaitable[str]]] | None = None,
    ) -> None:
        self._repo = repo
        self._outbox = outbox
        self._conversations = conversations
        self._agent = agent
        self._clock = clock
        self._wake_outbox = wake_outbox
        self._sleep = sleep
        self._builtins = dict(builtins or {})
        self.llm_runs = 0

    async def run(self, task: StoredTask, run_id: int, slot: str) -> str:
        """Run with retries; record the outcome and deliver. Returns the final status."""
        spec = task.spec
        attempt = 0
        while True:
            attempt += 1
            try:
                outcome = await self._attempt(task, slot)
                break
            except TaskFailure as exc:
                if attempt > spec.retries:
                    await self._repo.finish(run_id, "failed", error=str(exc)[:2000])
                    await self._failed(task, str(exc))
                    return "failed"
                delay = min(spec.retry_backoff_seconds * 2 ** (attempt - 1), MAX_BACKOFF_SECONDS)
                log.warning("task %s failed (attempt %d), retrying in %.0fs: %s",
                            task.name, attempt, delay, exc)  # fmt: skip
                await self._repo.retry(run_id)
                await self._sleep(delay)  # type: ignore[misc]
        outbox_id = None
        text = outcome.text.strip()
        if outcome.status == "ok" and text and text != spec.no_news_token:
            outbox_id = await self._deliver(task, slot, text)
        await self._repo.finish(
            run_id, outcome.status, tokens=outcome.tokens, output=text[:4000], outbox_id=outbox_id
        )
        if task.consecutive_failures or task.failure_notified_at is not None:
            await self._repo.record_outcome(task.id, failed=False)  # a success resets the count
        return outcome.status

    async def _attempt(self, task: StoredTask, slot: str) -> Outcome:
        spec = task.spec
        context = ""
        env = {"NIGHTSHIFT_TASK": task.name, "NIGHTSHIFT_SLOT": slot}
        if spec.precheck:
            go, context = await self._precheck(spec.precheck, env)
            if not go:
                return Outcome(status="nothing_to_do")
        if spec.builtin:
            text = await self._builtins[spec.builtin](self._clock.now())
            return Outcome(status="ok" if text else "nothing_to_do", text=text)
        if spec.command:
            result = await self._program(spec.command, spec.timeout_seconds, env)
            if result[0] != 0:
                raise TaskFailure(f"{spec.command[0]} exited {result[0]}: {result[1][-500:]}")
            return Outcome(status="ok", text=result[1])
        return await self._ask_agent(task, context)

    async def _precheck(self, argv: list[str], env: dict[str, str]) -> tuple[bool, str]:
        """exit 0 → work (stdout is context), 1 → nothing to do; JSON {"run": bool, …} wins."""
        code, output = await self._program(argv, PRECHECK_TIMEOUT_SECONDS, env)
        try:
            verdict = json.loads(output)
        except ValueError:
            verdict = None
        if isinstance(verdict, dict) and isinstance(verdict.get("run"), bool):
            return verdict["run"], str(verdict.get("context", ""))[:4000]
        if code == 0:
            return True, output[-4000:]
        if code == 1:
            return False, ""
        raise TaskFailure(f"pre-check {argv[0]} exited {code}: {output[-500:]}")

    async def _program(
        self, argv: list[str], timeout: float, env: dict[str, str]
    ) -> tuple[int, str]:
        """Run a program (task name and slot in NIGHTSHIFT_TASK / NIGHTSHIFT_SLOT)."""
        try:
            result = await run_command(argv, timeout, env)
        except OSError as exc:
            raise TaskFailure(f"cannot run {argv[0]!r}: {exc.strerror or exc}") from None
        text = result.output_tail.decode("utf-8", errors="replace")
        if result.timed_out:
            raise TaskFailure(f"{argv[0]} ran past {timeout:g}s and was killed")
        return result.exit_code, text

    async def _ask_agent(self, task: StoredTask, context: str) -> Outcome:
        spec = task.spec
        if self._agent is None or not self._agent.enabled:
            raise TaskFailure("the agent is off (no LLM configured); use a command task instead")
        conversation = await self._conversations.get_or_create(
            "task", f"task:{task.name}", task.name
        )
        text = (
            f"Scheduled task {task.name!r}. {spec.prompt}\n\nIf there is nothing worth telling "
            f"anyone, answer exactly {spec.no_news_token}. Privileged actions are denied in "
            "scheduled runs: if one is needed, say which and why instead."
        )
        if context:
            text += "\n\n" + fence("pre-check", context)
        self.llm_runs += 1
        result = await self._agent.run(
            AgentRequest(
                conversation_id=conversation.id,
                text=text,
                actor=f"task:{task.name}",
                kind="task",
                mode=spec.mode,
                unattended=True,
                tools=spec.tools != "none",
            )
        )
        if result.status in ("budget", "error", "timeout"):
            raise TaskFailure(result.text)
        return Outcome(status="ok", text=result.text, tokens=result.tokens)

    async def _deliver(self, task: StoredTask, slot: str, text: str) -> int:
        channel, _, target = task.spec.deliver_to.partition(":")
        body = text if len(text) <= MAX_DELIVERED_CHARS else text[:MAX_DELIVERED_CHARS] + " …"
        outbox_id = await self._outbox.enqueue(
            channel,
            target,
            f"[{task.name}] {body}",
            thread=task.spec.thread,
            dedupe_key=f"task:{task.id}:{slot}",
            proactive=not task.spec.critical,
        )
        self._wake_outbox()
        return outbox_id

    async def _failed(self, task: StoredTask, error: str) -> None:
        spec = task.spec
        failures = await self._repo.record_outcome(task.id, failed=True)
        if failures >= spec.pause_after_failures:
            await self._repo.set_paused(
                task.name, f"{failures} consecutive failures: {error[:200]}"
            )
            await self._tell(
                task,
                f"Task {task.name!r} failed {failures} times in a row and is now paused "
                f"(last error: {error[:300]}). Fix it, then `nightshift tasks resume {task.name}`.",
            )
        elif failures >= spec.notify_after_failures and task.failure_notified_at is None:
            fresh = await self._repo.get(task.name)
            if fresh.failure_notified_at is None:
                await self._repo.mark_failure_notified(task.id)
                await self._tell(
                    task,
                    f"Task {task.name!r} failed {failures} times in a row (last error: "
                    f"{error[:300]}). It keeps running; after {spec.pause_after_failures} "
                    "failures it will be paused.",
                )

    async def tell_interrupted(self, task: StoredTask, run_id: int, slot: str) -> int:
        """Tell the owner, once, that a run was cut short; its outcome is unknown."""
        when = slot.removeprefix("retry:")
        again = " (its one retry)" if slot.startswith("retry:") else ""
        return await self._tell(
            task,
            f"Task {task.name!r}: the run for {when}{again} was interrupted (the daemon stopped "
            "or crashed during it); its outcome is unknown and its output was not delivered. "
            f"Run it again with `nightshift tasks run {task.name}`.",
            dedupe_key=f"task-interrupted:{run_id}",
        )

    async def _tell(self, task: StoredTask, text: str, *, dedupe_key: str | None = None) -> int:
        channel, _, target = task.spec.deliver_to.partition(":")
        owner = "" if task.owner == "config" else f" (owner {task.owner})"
        outbox_id = await self._outbox.enqueue(channel, target, text + owner, dedupe_key=dedupe_key)
        self._wake_outbox()
        return outbox_id
