"""Runs one tool call under policy: tier check, approval, timeout, audit with secrets redacted."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from daemon.agent import policy, sandbox
from daemon.agent.tools._shared import TOOL_DEADLINE
from daemon.agent.tools.base import Tier, ToolContext, ToolRegistry, render_result
from daemon.core.abc import Approver
from daemon.core.errors import PolicyDeniedError, ToolError, ToolTimeoutError
from daemon.core.redact import redact, redact_data
from memory.audit import AuditEntry, AuditRepo

log = logging.getLogger(__name__)

AUDIT_RESULT_CHARS = 4000


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolOutcome:
    """What a tool call produced, as the model will see it."""

    text: str
    ok: bool
    duration_ms: float
    tier: str


class ToolExecutor:
    """The single door through which every tool call passes."""

    def __init__(
        self,
        registry: ToolRegistry,
        *,
        audit: AuditRepo | None,
        approvals: Approver | None,
    ) -> None:
        self.registry = registry
        self._audit = audit
        self._approvals = approvals

    @property
    def approvals(self) -> Approver | None:
        """Who asks a person (None: nobody can be asked)."""
        return self._approvals

    async def execute(
        self,
        name: str,
        raw_arguments: str,
        ctx: ToolContext,
        *,
        approved_by: str | None = None,
        on_authorised: Callable[[], Awaitable[None]] | None = None,
    ) -> ToolOutcome:
        """Run a call the model asked for; errors come back as text for the model, never raise.

        ``approved_by`` names who already approved exactly this call (remediation asks before
        it calls); the policy is then not asked again. ``on_authorised`` is awaited once the
        call is let through, just before the tool acts (a durable run records it).
        """
        started = ctx.clock.monotonic()
        arguments: dict[str, Any] = {}
        tier = "unknown"
        try:
            arguments = _parse_arguments(raw_arguments)
            tool = self.registry.get(name)
            arguments = tool.validate(arguments)
            tier = tool.tier_for(arguments, ctx.settings).value
            if approved_by is None:
                await self._authorise(name, tier, arguments, ctx)
            if on_authorised is not None:
                await on_authorised()
            # The timeout covers the tool's work; a wait for one of its slots is lifted out of
            # it (see ToolGate), so callers queued behind a capped tool wait, not fail.
            limit = tool.timeout_seconds or ctx.settings.agent.tool_timeout_seconds
            async with asyncio.timeout(limit) as deadline:
                token = TOOL_DEADLINE.set(deadline)
                try:
                    result = await tool.invoke(ctx, arguments)
                finally:
                    TOOL_DEADLINE.reset(token)
            text, ok = render_result(result), True
        except TimeoutError:
            limit = ctx.settings.agent.tool_timeout_seconds
            if name in self.registry.names():
                limit = self.registry.get(name).timeout_seconds or limit
            text, ok = (
                str(ToolTimeoutError(f"{name} timed out after {limit:g}s and was cancelled")),
                False,
            )
        except ToolError as exc:
            text, ok = f"ERROR: {exc}", False
        except asyncio.CancelledError:
            await self._record(ctx, name, tier, arguments, "cancelled", False, started)
            raise
        except Exception as exc:  # noqa: BLE001 - a tool bug goes back to the model, not up
            log.exception("tool %s raised", name)
            text, ok = f"ERROR: {name} failed: {type(exc).__name__}: {exc}", False
        if not ok and not text.startswith("ERROR"):
            text = f"ERROR: {text}"
        text = redact(text, ctx.settings.policy.redact_patterns)
        duration_ms = await self._record(ctx, name, tier, arguments, text, ok, started)
        return ToolOutcome(text=text, ok=ok, duration_ms=duration_ms, tier=tier)

    async def _authorise(
        self, name: str, tier: str, arguments: dict[str, Any], ctx: ToolContext
    ) -> None:
        command = arguments.get("command")
        auto = isinstance(command, str) and policy.is_auto_approved(command, ctx.settings.policy)
        box = await sandbox.current(ctx.settings)
        decision = policy.decide(
            Tier(tier), unattended=ctx.unattended, auto_approved=auto, sandboxed=box.available
        )
        if decision is policy.Decision.ALLOW:
            return
        unsandboxed = Tier(tier) is Tier.READ_ONLY and not box.available
        if decision is policy.Decision.DENY:
            what = (
                f"{name} is read-only but the sandbox is {box.describe()}"
                if unsandboxed
                else f"{name} is privileged"
            )
            raise PolicyDeniedError(
                f"{what}, and this run is unattended, so it was denied at once. "
                "To allow exactly this action without a person, add it to [policy] auto_approve."
            )
        if self._approvals is None:
            raise PolicyDeniedError(f"{name} needs a person's approval and no channel can ask")
        given = {key: value for key, value in arguments.items() if value not in (None, "")}
        shown = redact_data(given, ctx.settings.policy.redact_patterns)
        answer = await self._approvals.request(
            tool=name,
            arguments=shown,
            actor=ctx.actor,
            reason=ctx.reason,
            ttl_seconds=ctx.settings.policy.approval_timeout_seconds,
            conversation=ctx.origin,
        )
        if not answer.approved:
            why = f" ({answer.note})" if answer.note else ""
            raise PolicyDeniedError(f"{name} was not approved: denied by {answer.by}{why}")

    async def _record(
        self,
        ctx: ToolContext,
        name: str,
        tier: str,
        arguments: dict[str, Any],
        result: str,
        ok: bool,
        started: float,
    ) -> float:
        duration_ms = (ctx.clock.monotonic() - started) * 1000
        if self._audit is not None:
            patterns = ctx.settings.policy.redact_patterns
            entry = AuditEntry(
                actor=ctx.actor,
                action="tool_call",
                tool=name,
                tier=tier,
                reason=redact(ctx.reason, patterns)[:500],
                arguments=redact_data(arguments, patterns),
                result=redact(result, patterns)[:AUDIT_RESULT_CHARS],
                ok=ok,
                duration_ms=duration_ms,
                run_id=ctx.run_id,
            )
            try:
                await asyncio.shield(self._audit.record(entry))
            except Exception:  # noqa: BLE001 - log loudly, but the answer still goes back
                log.exception("could not write audit row for %s", name)
        return duration_ms


def _parse_arguments(raw: str) -> dict[str, Any]:
    if not raw or not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ToolError(
            f"the arguments were not valid JSON ({exc.msg} at position {exc.pos}); "
            "send a JSON object matching the tool's parameters"
        ) from None
    if not isinstance(value, dict):
        raise ToolError("the arguments must be a JSON object")
    return value
