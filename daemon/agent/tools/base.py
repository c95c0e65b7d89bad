"""The tool contract: typed async functions whose JSON schema comes from their signature.

A tool is declared with ``@tool(tier=Tier.READ_ONLY)`` on ``async def name(ctx, arg: T = ...)``.
The first parameter is always the :class:`ToolContext`; the rest become the JSON schema the model
sees, with descriptions taken from the docstring's ``Args:`` section. Tools return data (str,
dict, list, dataclass or pydantic model) and never post to chat themselves.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, get_type_hints

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from daemon.core.errors import ToolError

if TYPE_CHECKING:
    from daemon.agent.settings import AgentConfig
    from daemon.core.clock import Clock

__all__ = ["Tier", "Tool", "ToolContext", "ToolRegistry", "Verdict", "Verifier", "tool"]


class Tier(StrEnum):
    """How much a tool call may change the world."""

    READ_ONLY = "read-only"
    WRITE = "write"
    PRIVILEGED = "privileged"


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolContext:
    """Who is calling a tool, why, and the services tools may use."""

    actor: str
    reason: str
    settings: AgentConfig
    clock: Clock
    run_id: int | None = None
    unattended: bool = False
    origin: str | None = None  # "channel|room|thread" the request came from (approvals go there)
    services: Any = None  # daemon.agent.services.ToolServices; loose to keep tools testable
    # the turn's interim events for whoever waits on it (the console chat); None: nobody does
    events: Callable[[dict[str, Any]], Awaitable[None]] | None = None


ToolFunc = Callable[..., Awaitable[Any]]
Classifier = Callable[[dict[str, Any], "AgentConfig"], Tier]


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a read-only probe found about a side effect whose outcome was not recorded:
    ``happened`` True (it took effect), False (it did not: it may be run again), None (the probe
    cannot tell: a person decides)."""

    happened: bool | None
    detail: str


# verify(ctx, arguments, since): did the call with these arguments, started at ``since`` (wall
# clock), take effect? Read-only: it must never change the world itself.
Verifier = Callable[[ToolContext, dict[str, Any], datetime], Awaitable[Verdict]]


@dataclass(frozen=True, slots=True)
class Tool:
    """A callable tool with its schema and policy tier."""

    name: str
    description: str
    tier: Tier
    func: ToolFunc
    args_model: type[BaseModel]
    classify: Classifier | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    timeout_seconds: float | None = None  # None: agent.tool_timeout_seconds
    verify: Verifier | None = None  # a read-only probe for an interrupted call (see Verdict)

    def with_verify(self, verify: Verifier) -> Tool:
        """This tool with ``verify`` as its probe."""
        return replace(self, verify=verify)

    def schema(self) -> dict[str, Any]:
        """The OpenAI/Kimi ``tools`` entry for this tool."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }

    def tier_for(self, arguments: dict[str, Any], settings: AgentConfig) -> Tier:
        """The tier of one concrete call (some tools, like run_command, depend on arguments)."""
        return self.classify(arguments, settings) if self.classify else self.tier

    def validate(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """Check arguments against the schema; raise ToolError with a message for the model."""
        try:
            model = self.args_model.model_validate(arguments)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'arguments'}: {err['msg']}"
                for err in exc.errors()
            )
            raise ToolError(f"invalid arguments for {self.name}: {problems}") from None
        return {name: getattr(model, name) for name in type(model).model_fields}

    async def invoke(self, ctx: ToolContext, arguments: dict[str, Any]) -> Any:
        """Validate and run the tool."""
        return await self.func(ctx, **self.validate(arguments))


def tool(
    *,
    tier: Tier,
    name: str | None = None,
    classify: Classifier | None = None,
    timeout_seconds: float | None = None,
) -> Callable[[ToolFunc], Tool]:
    """Turn ``async def f(ctx, ...)`` into a :class:`Tool`."""

    def decorate(func: ToolFunc) -> Tool:
        summary, arg_docs = _parse_docstring(inspect.getdoc(func) or "")
        hints = get_type_hints(func)
        fields: dict[str, Any] = {}
        params = list(inspect.signature(func).parameters.values())[1:]
        for param in params:
            annotation = hints.get(param.name, str)
            default = ... if param.default is inspect.Parameter.empty else param.default
            from pydantic import Field

            fields[param.name] = (
                annotation,
                Field(default=default, description=arg_docs.get(param.name)),
            )
        model = create_model(
            f"{func.__name__}_args", __config__=ConfigDict(extra="forbid"), **fields
        )
        schema = model.model_json_schema()
        schema.pop("title", None)
        for prop in schema.get("properties", {}).values():
            prop.pop("title", None)
        schema.setdefault("properties", {})
        return Tool(
            name=name or func.__name__,
            description=summary,
            tier=tier,
            func=func,
            args_model=model,
            classify=classify,
            parameters=schema,
            timeout_seconds=timeout_seconds,
        )

    return decorate


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """Split a Google-style docstring into its summary and per-argument descriptions."""
    parts = re.split(r"^Args:\s*$", doc, maxsplit=1, flags=re.MULTILINE)
    summary = " ".join(parts[0].split())
    args: dict[str, str] = {}
    if len(parts) == 2:
        current = None
        for line in parts[1].splitlines():
            match = re.match(r"^\s{0,8}(\w+)(?:\s*\([^)]*\))?:\s*(.*)$", line)
            if match:
                current = match.group(1)
                args[current] = match.group(2).strip()
            elif current and line.strip():
                args[current] += " " + line.strip()
    return summary, args


class ToolRegistry:
    """The set of tools offered to the model, in a stable order (so prompts cache well)."""

    def __init__(self, tools: list[Tool] | None = None) -> None:
        self._tools: dict[str, Tool] = {}
        for item in tools or []:
            self.add(item)

    def add(self, item: Tool) -> None:
        if item.name in self._tools:
            raise ValueError(f"duplicate tool name {item.name!r}")
        self._tools[item.name] = item

    def get(self, name: str) -> Tool:
        try:
            return self._tools[name]
        except KeyError:
            known = ", ".join(sorted(self._tools))
            raise ToolError(f"unknown tool {name!r}; available tools: {known}") from None

    def names(self) -> list[str]:
        return list(self._tools)

    def schemas(self, *, max_tier: Tier | None = None) -> list[dict[str, Any]]:
        order = [Tier.READ_ONLY, Tier.WRITE, Tier.PRIVILEGED]
        allowed = order if max_tier is None else order[: order.index(max_tier) + 1]
        return [t.schema() for t in self._tools.values() if t.tier in allowed or t.classify]

    def __len__(self) -> int:
        return len(self._tools)


def render_result(value: Any) -> str:
    """Turn a tool's return value into the text the model sees."""
    if isinstance(value, str):
        return value
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    return json.dumps(value, default=str, ensure_ascii=False, indent=None)
