"""Swarm runs in chat: one progress message per run, edited as it goes, ending with the summary.

A coordinator's ``delegate`` call that came from a chat conversation (its origin names a channel
we have) posts one message there ("swarm #12: 40 sub-agents — 12 done, 25 running, 3 queued;
210 steps, 81k tokens") and edits it at most once every ``agent.swarm.progress_edit_seconds``.
Edits coalesce: each one shows the state when it is made, so no backlog of stale edits builds
up, and the final summary (counts, with the reasons of what did not finish) always lands. The
agent's consolidated answer stays the normal reply. A failing edit is logged once and never
touches the run; a channel that cannot edit gets no progress message. A run from a turn
someone waits on without a chat (the console chat over the local API) gets each update as an
interim ``progress`` event on that turn's stream instead. Runs without either (tasks,
incidents) log their progress.

The message's id is stored with the run: a run resumed after a restart edits that same message
(marked "resumed after a restart"; its time counts from the resume), or posts a fresh one when
the old one cannot be edited any more.

The message is sent and edited directly, not through the outbox: it is a view of live state,
worth nothing once stale, so a channel outage skips it rather than queueing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from daemon.core.background import BackgroundTasks
from daemon.core.errors import PermanentDeliveryError
from integrations.base import Channel, OutgoingMessage

if TYPE_CHECKING:
    from daemon.agent.swarm import RunBudget
    from daemon.agent.tools.base import ToolContext
    from memory.swarm import SwarmRepo, SwarmTask

__all__ = ["SwarmProgress", "render"]

log = logging.getLogger(__name__)

KEEP_RUNS = 64  # runs remembered after their delegate call ended (a retry edits the same message)
LOG_SECONDS = 30.0  # runs without a conversation: a progress line at most this often
EDIT_FAILURES = 3  # consecutive failed edits after which a run's message is left alone
REASONS = 3  # distinct reasons shown per unfinished status in the final summary
REASON_CHARS = 80
CLOSE_WAIT = 5.0  # seconds at shutdown for the last edits
ORDER = ("done", "running", "queued", "failed", "stalled", "cancelled", "unknown")


@dataclass(slots=True, eq=False)
class _Run:
    budget: RunBudget
    started: float
    channel: Channel | None = None
    room: str = ""
    thread: str | None = None
    platform_id: str | None = None
    inherited: bool = False  # platform_id is the message of the run before a restart
    sink: Callable[[dict[str, Any]], Awaitable[None]] | None = None  # the turn's event stream
    failures: int = 0
    warned: bool = False
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    shown: str = ""


class SwarmProgress:
    """A :data:`daemon.agent.swarm.RunObserver` that keeps each chat run's progress message."""

    def __init__(
        self,
        *,
        channels: Mapping[str, Channel],
        repo: SwarmRepo,
        every: Callable[[], float],
    ) -> None:
        self._channels = channels
        self._repo = repo
        self._every = every
        self._runs: OrderedDict[int, _Run] = OrderedDict()
        self._tasks = BackgroundTasks("swarm progress")
        self.edits = 0  # edits made (all runs)

    def observe(self, event: str, budget: RunBudget, ctx: ToolContext) -> Awaitable[None] | None:
        """Called by the swarm when a coordinator's delegate call starts and ends; at the end of
        a console turn's run, returns the wait for its final line (it precedes the answer)."""
        run = self._runs.get(budget.run_id)
        if event == "end":
            if run is None:
                return None
            run.ended.set()
            if run.sink is None or run.task is None or run.task.done():
                return None
            return asyncio.shield(run.task)  # the caller's timeout leaves the follower alone
        loop = asyncio.get_running_loop()
        if run is None:
            run = _Run(budget=budget, started=loop.time())
            self._where(run, ctx.origin)
            self._runs[budget.run_id] = run
            while len(self._runs) > KEEP_RUNS:
                self._runs.popitem(last=False)
        if not ctx.origin and ctx.events is not None:  # a console turn: its stream shows it
            run.sink = ctx.events
        self._runs.move_to_end(budget.run_id)
        run.ended.clear()
        if run.task is None or run.task.done():
            run.task = self._tasks.spawn(self._follow(run), f"swarm #{budget.run_id} progress")
        return None

    def _where(self, run: _Run, origin: str | None) -> None:
        if not origin or origin.count("|") != 2:
            return
        name, room, thread = origin.split("|")
        channel = self._channels.get(name)
        if channel is None or not callable(getattr(channel, "edit", None)):
            return  # no chat, or a chat that cannot edit: no progress message (never spam)
        run.channel, run.room, run.thread = channel, room, thread or None

    async def _follow(self, run: _Run) -> None:
        """Show the run's state now, then at most once every ``every`` seconds until it ends."""
        loop = asyncio.get_running_loop()
        last_log = float("-inf")
        if run.budget.resumed and run.channel is not None and run.platform_id is None:
            with contextlib.suppress(Exception):  # none kept: a fresh message
                run.platform_id = (await self._repo.get_run(run.budget.run_id)).progress_message
                run.inherited = run.platform_id is not None
        while True:
            final = run.ended.is_set()
            try:
                text = await self._text(run, final=final)
            except Exception:  # noqa: BLE001 - the store closing at shutdown: the run goes on
                log.warning("swarm #%d: progress not readable; no more updates", run.budget.run_id)
                return
            if run.channel is not None and text != run.shown:
                await self._show(run, text)
            elif run.sink is not None and text != run.shown:
                await self._tell(run, text)
            now = loop.time()
            if final or now - last_log >= max(self._every(), LOG_SECONDS):
                if final or run.channel is None:
                    log.info("%s", text.replace("\n", "; "))
                last_log = now
            if final and run.ended.is_set():
                return
            until = now + self._every()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(run.ended.wait(), timeout=self._every())
            # a chat message's end is shown at once only if the throttle allows; else when it
            # does (a console stream or a log line has no rate limit: the end shows at once)
            if run.channel is not None and (left := until - loop.time()) > 0:
                await asyncio.sleep(left)

    async def _text(self, run: _Run, *, final: bool) -> str:
        tasks = await self._repo.tasks(run.budget.run_id)
        elapsed = asyncio.get_running_loop().time() - run.started
        return render(
            run.budget.run_id,
            tasks,
            steps=run.budget.steps,
            tokens=run.budget.tokens,
            seconds=elapsed,
            final=final,
            stopped=run.budget.stopped,
            resumed=run.budget.resumed,
            paused=run.budget.paused,
        )

    async def _show(self, run: _Run, text: str) -> None:
        """Post the message (the first time) or edit it; failures are logged once per run."""
        channel = run.channel
        assert channel is not None
        try:
            if run.platform_id is None:
                first = OutgoingMessage(outbox_id=0, target=run.room, text=text, thread=run.thread)
                run.platform_id = await channel.send(first)
                await self._keep(run)
            else:
                await channel.edit(run.room, run.platform_id, text)
                self.edits += 1
        except Exception as exc:  # noqa: BLE001 - progress is a courtesy: the run goes on
            if run.inherited:  # the message from before the restart is gone: post a new one
                run.inherited, run.platform_id = False, None
                await self._show(run, text)
                return
            run.failures += 1
            if not run.warned:
                run.warned = True
                log.warning(
                    "swarm #%d: progress message on %s not updated (%s: %s); the run goes on",
                    run.budget.run_id, channel.name, type(exc).__name__, exc,
                )  # fmt: skip
            give_up = run.platform_id is None or isinstance(exc, PermanentDeliveryError)
            if give_up or run.failures >= EDIT_FAILURES:
                run.channel = None  # deleted, refused or down: leave it alone from now on
            return
        run.failures = 0
        run.shown = text

    async def _keep(self, run: _Run) -> None:
        """Store the message's id with the run, for a resume after a restart."""
        assert run.platform_id is not None
        try:
            await self._repo.set_progress_message(run.budget.run_id, run.platform_id)
        except Exception as exc:  # noqa: BLE001 - a resumed run would post a new message
            log.info("swarm #%d: progress message id not kept (%s)", run.budget.run_id, exc)

    async def _tell(self, run: _Run, text: str) -> None:
        """One interim line on the waiting turn's stream; a failure ends them for the run."""
        assert run.sink is not None
        try:
            await run.sink({"type": "progress", "text": text, "swarm_run": run.budget.run_id})
        except Exception as exc:  # noqa: BLE001 - the listener left: the run goes on
            log.info("swarm #%d: progress not streamed (%s); the run goes on",
                     run.budget.run_id, exc)  # fmt: skip
            run.sink = None
            return
        run.shown = text

    async def close(self) -> None:
        """Stop following runs (at shutdown): the final word of runs that ended (paused by
        the shutdown) gets a moment to land, within the edit throttle."""
        await self._tasks.drain(timeout=min(self._every(), CLOSE_WAIT) + 0.5)


def render(
    run_id: int,
    tasks: list[SwarmTask],
    *,
    steps: int,
    tokens: int,
    seconds: float,
    final: bool,
    stopped: str | None = None,
    resumed: bool = False,
    paused: str | None = None,
) -> str:
    """The progress line, or (``final``) the summary with the reasons of what did not finish;
    ``resumed``: the run was taken up again after a restart (``seconds`` count from then);
    ``paused``: why it stopped part way, to go on at the next start."""
    counts = Counter(task.status for task in tasks)
    parts = [f"{counts[s]} {s}" for s in ORDER if counts.get(s)]
    parts += [f"{n} {s}" for s, n in sorted(counts.items()) if s not in ORDER]
    reassigned = sum(max(task.attempt - 1, 0) for task in tasks)
    head = f"swarm #{run_id}" + (" (resumed after a restart)" if resumed else "")
    if final:
        head += f" {'paused after' if paused else 'finished in'} {_duration(seconds)}"
    text = (
        f"{head}: {len(tasks)} sub-agent{'s' if len(tasks) != 1 else ''} — "
        f"{', '.join(parts) or 'none yet'}; {steps} steps, {_tokens(tokens)} tokens"
    )
    if reassigned:
        text += f"; {reassigned} reassigned"
    if not final:
        return text
    if paused:
        text += f"\npaused: {paused}; it resumes when nightshift starts again"
    if stopped:
        text += f"\nstopped: {stopped}"
    for status in ORDER[3:]:
        reasons = Counter(
            _short(task.reason or "no reason given") for task in tasks if task.status == status
        )
        if not reasons:
            continue
        shown = [f"{why} (×{n})" if n > 1 else why for why, n in reasons.most_common(REASONS)]
        more = len(reasons) - REASONS
        tail = f"; +{more} other reasons" if more > 0 else ""
        text += f"\n{status} {sum(reasons.values())}: {'; '.join(shown)}{tail}"
    return text


def _short(reason: str) -> str:
    reason = " ".join(reason.split())
    return reason if len(reason) <= REASON_CHARS else reason[: REASON_CHARS - 1] + "…"


def _tokens(count: int) -> str:
    if count >= 1_000_000:
        return f"{count / 1_000_000:.1f}M"
    if count >= 1_000:
        return f"{count / 1_000:.0f}k"
    return str(count)


def _duration(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"
