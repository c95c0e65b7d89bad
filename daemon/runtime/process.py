"""Builds components from config, runs them under the supervisor; signals and systemd."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
from datetime import datetime, time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from daemon import __version__
from daemon.agent import sandbox
from daemon.agent.build import build_agent, build_llm
from daemon.agent.executor import ToolExecutor
from daemon.agent.lazy_llm import LazyLlmClient
from daemon.agent.sandbox import SandboxStatus
from daemon.agent.services import ToolServices
from daemon.agent.tools.registry import default_registry
from daemon.alerting.alertmanager import WebhookStats
from daemon.alerting.pipeline import AlertPipeline
from daemon.chat.access import AccessControl, actor_roles
from daemon.chat.approvals import ApprovalBroker
from daemon.chat.conversations import ChatService
from daemon.chat.hub import ChannelHub
from daemon.chat.pairing import PairingCodes
from daemon.config import Settings, load_settings
from daemon.core.clock import Clock, SystemClock
from daemon.core.errors import (
    EXIT_CONFIG,
    AlreadyRunningError,
    ConfigError,
    StoreError,
)
from daemon.incidents.commands import IncidentCommands
from daemon.incidents.manager import IncidentManager
from daemon.incidents.poster import IncidentPoster
from daemon.incidents.routing import Router
from daemon.incidents.runbooks import RunbookLibrary
from daemon.runtime import status as report
from daemon.runtime.api import ApiServer
from daemon.runtime.channels import ChannelSet, build_channels
from daemon.runtime.housekeeping import Housekeeping
from daemon.runtime.sdnotify import SystemdNotifier
from daemon.runtime.supervisor import Supervisor
from daemon.runtime.swarm_owner import SwarmOwner
from daemon.tasks import tools as task_tools
from daemon.tasks.commands import TaskCommands
from daemon.watchers import build_watchers
from daemon.watchers.base import Watcher
from daemon.watchers.host import HostMetricsWatcher
from integrations.console import ConsoleChannel
from memory.alerts import AlertRepo
from memory.audit import AuditRepo
from memory.channels import ChannelStateRepo, InboundRepo
from memory.components import ComponentEventRepo
from memory.conversations import ConversationRepo
from memory.facts import FactRepo
from memory.incident_records import IncidentRecordRepo
from memory.incidents import IncidentRepo, SilenceRepo
from memory.outbox import OutboxRepo
from memory.recall import RecallRepo
from memory.retention import RetentionRepo
from memory.runs import RunRepo
from memory.store import SqliteStore
from memory.swarm import SwarmRepo
from memory.usage import UsageRepo

if TYPE_CHECKING:
    from daemon.agent.llm import LlmClient
    from daemon.agent.swarm import Swarm
    from daemon.chat.progress import SwarmProgress

log = logging.getLogger(__name__)

LOCK_NAME = "nightshift.lock"
RELOADABLE = ("agent", "policy", "runtime", "incidents", "scheduler", "memory")


class StateLock:
    """One daemon per state directory: an flock held for the life of the process."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_NAME
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise AlreadyRunningError(
                f"nightshift is already running on {self.path.parent} (pid {holder}); "
                "stop it first, or use another --state-dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def prepare_state_dir(path: Path) -> None:
    """Create the state directory (0700) or explain why it is unusable."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ConfigError(
            f"state directory {path} cannot be created: {exc.strerror}; "
            "choose another with --state-dir or fix its permissions"
        ) from None
    if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
        raise ConfigError(
            f"state directory {path} is not readable and writable by this user "
            f"(uid {os.getuid()}); fix its owner/permissions or use --state-dir"
        )


class Runtime:
    """The whole running daemon."""

    def __init__(
        self,
        settings: Settings,
        *,
        config_path: Path | None = None,
        clock: Clock | None = None,
        environ: dict[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.config_path = config_path
        self.clock = clock or SystemClock()
        self.notifier = SystemdNotifier(environ if environ is not None else os.environ)
        self.supervisor = Supervisor(
            self.clock,
            initial_backoff=settings.runtime.restart_initial_seconds,
            max_backoff=settings.runtime.restart_max_seconds,
        )
        self.approvals = ApprovalBroker(self.clock)
        self.console = ConsoleChannel()
        self.started_at = self.clock.now()
        self.stopping = False
        self.llm: LazyLlmClient | None = None
        self.swarm: Swarm | None = None
        self.swarm_progress: SwarmProgress | None = None
        self.agent_reason = ""
        self.sandbox = SandboxStatus(False, "not probed yet")
        self._stop_event = asyncio.Event()
        self._lock = StateLock(settings.state_dir)
        self._resuming: asyncio.Task[list[dict[str, Any]]] | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    async def run(self) -> int:
        """Start everything, wait for SIGTERM/SIGINT, drain, and return the exit code."""
        prepare_state_dir(self.settings.state_dir)
        self._lock.acquire()
        try:
            await self._start()
            self._install_signals()
            self.notifier.ready(self._status_line())
            log.info("nightshift %s ready (%s)", __version__, self._status_line())
            if self.swarm is not None:
                owner = SwarmOwner(self.runs, self.conversations, self.outbox, self.channel_set)
                self._resuming = asyncio.create_task(self.swarm.resume(owner.tell))
            await self._stop_event.wait()
            await self._drain()
            return 0
        finally:
            await self._close()
            self._lock.release()

    def request_stop(self) -> None:
        self._stop_event.set()

    async def _start(self) -> None:
        settings = self.settings
        self.store = await SqliteStore.open(
            settings.database_path, busy_timeout_ms=settings.state.busy_timeout_ms
        )
        self.conversations = ConversationRepo(self.store, self.clock)
        self.runs = RunRepo(self.store, self.clock)
        self.audit = AuditRepo(self.store, self.clock)
        self.usage = UsageRepo(self.store, self.clock)
        self.outbox = OutboxRepo(self.store, self.clock)
        self.facts = FactRepo(self.store, self.clock, caps=lambda: self.settings.memory.fact_caps())
        self.recall = RecallRepo(self.store, self.clock)
        await self.facts.check_caps()  # a kind near its cap is said at start too
        self.events = ComponentEventRepo(self.store, self.clock)
        self.supervisor._events = self.events
        interrupted = await self.runs.mark_interrupted()
        if interrupted:
            log.warning("%d agent run(s) were interrupted by the last shutdown", interrupted)

        self.channel_state = ChannelStateRepo(self.store, self.clock)
        self.channel_set = ChannelSet(
            build_channels(settings.channels, self.console, self.channel_state),
            self.outbox,
            self.clock,
        )
        self.host_watcher: HostMetricsWatcher | None = None
        self.access = access = AccessControl.from_settings(settings.channels)
        for channel_name, key, role in await self.channel_state.items(prefix="role:"):
            access.grant(channel_name, key.removeprefix("role:"), role)
        self._build_alerting()
        self._build_tasks()
        self._build_agent()
        if self.swarm is None:  # no swarm to resume them: unfinished sub-agents are unknown
            await SwarmRepo(self.store, self.clock).mark_unknown()
        self._build_incidents()
        self.pairing = PairingCodes(self.clock)
        self.hub = ChannelHub(
            access=access,
            chat=self.chat,
            approvals=self.approvals,
            outbox=self.outbox,
            audit=self.audit,
            inbound=InboundRepo(self.store, self.clock),
            state=self.channel_state,
            pairing=self.pairing,
            store=self.store,
            clock=self.clock,
            status_text=self.status_text,
            commands=self.commands,
            task_commands=self.task_commands,
        )
        for name, channel in self.channel_set.channels.items():
            self.hub.register(channel, self.channel_set.workers[name])
        if self.swarm is not None:
            from daemon.chat.progress import SwarmProgress

            self.swarm_progress = SwarmProgress(
                channels=self.channel_set.channels,
                repo=self.swarm.repo,
                every=lambda: self.settings.agent.swarm.progress_edit_seconds,
            )
            self.swarm.observers.append(self.swarm_progress.observe)
        self.channel_set.start(self.supervisor, self.hub)
        await self.alerting.restore()
        self.supervisor.start("alerting", self.alerting.run)
        self.supervisor.start("incidents", self.incident_manager.run)
        self.housekeeping = Housekeeping(
            RetentionRepo(self.store, self.clock),
            lambda: self.settings.memory,
            state_dir=settings.state_dir,
            clock=self.clock,
            emit=self.alerting.emit,
        )
        self.supervisor.start("housekeeping", self.housekeeping.run)
        self.supervisor.start("recall.runbooks", lambda: self.runbooks.run_index(self.recall))
        if settings.scheduler.enabled:
            self.supervisor.start("scheduler", lambda: self.scheduler.run(self._config_tasks))
        else:
            self.supervisor.mark("scheduler", "off", "[scheduler] enabled = false")
        if settings.watchers.host.enabled:
            self.host_watcher = HostMetricsWatcher(settings.watchers.host, self.clock)
            self._start_watcher(self.host_watcher)
        for watcher in build_watchers(settings.watchers, self.clock):
            self._start_watcher(watcher)
        if self.notifier.watchdog_interval():
            self.supervisor.start("systemd.watchdog", self.notifier.run_watchdog)
        self.api = ApiServer(self, settings.socket_path)
        await self.api.start()
        self.supervisor.mark("api", "running", str(settings.socket_path))

    def _build_alerting(self) -> None:
        """The alert and incident stores and where an incident's messages go (the response,
        built with the agent, posts through the same poster)."""
        settings = self.settings
        self.alert_repo = AlertRepo(self.store)
        self.incidents = IncidentRepo(self.store, self.clock)
        self.silences = SilenceRepo(self.store, self.clock)
        self.runbooks = RunbookLibrary(
            settings.incidents.runbooks_dir or settings.state_dir / "runbooks"
        )
        self.incident_poster = IncidentPoster(
            store=self.store,
            incidents=self.incidents,
            outbox=self.outbox,
            router=Router(settings.routes, settings.default_route),
            clock=self.clock,
            wake_outbox=self.channel_set.wake_all,
        )

    def _build_incidents(self) -> None:
        """Incidents from alert events, told to the response built before them."""
        settings = self.settings
        self.incident_manager = IncidentManager(
            settings.incidents,
            store=self.store,
            alerts=self.alert_repo,
            incidents=self.incidents,
            silences=self.silences,
            poster=self.incident_poster,
            runbooks=self.runbooks,
            clock=self.clock,
            responder=self.responder,
        )
        self.alerting = AlertPipeline(
            settings.rules,
            self.alert_repo,
            self.clock,
            on_events=self.incident_manager.wake,
            storage_alert_percent=settings.memory.storage_alert_percent,
        )
        self.commands = IncidentCommands(
            self.incidents,
            self.silences,
            self.clock,
            self.incident_manager.silences_changed,
            records=IncidentRecordRepo(self.store, self.clock),
        )
        self.webhook_stats = WebhookStats()

    def _start_watcher(self, watcher: Watcher) -> None:
        emit = self.alerting.emit
        name = watcher.name if watcher.name.startswith("watcher.") else f"watcher.{watcher.name}"
        self.supervisor.start(name, lambda: watcher.run(emit))

    def _build_agent(self) -> None:
        self.sandbox = sandbox.status_for(self.settings)  # probed once; the tools reuse it
        if not self.sandbox.available:
            log.warning("sandbox %s", self.sandbox.describe())
        available, reason = self.settings.agent_available
        if available:
            self.llm = LazyLlmClient(self._make_llm)
            self.supervisor.mark("agent", "running", f"model {self.settings.llm.model}")
        else:
            self.agent_reason = reason
            self.supervisor.mark("agent", "off", reason)
            log.warning("agent off: %s", reason)
        services = ToolServices(
            facts=self.facts,
            recall=self.recall,
            outbox=self.outbox,
            channels=self.channel_set.names,
            wake_outbox=self.channel_set.wake_all,
            tasks=self.task_commands.service if self.task_commands else None,
            role_of=actor_roles(self.access),
        )
        self.agent = build_agent(
            registry=default_registry(task_tools.TOOLS),
            settings=self.settings,
            store=self.store,
            clock=self.clock,
            llm=self.llm,
            approvals=self.approvals,
            audit=self.audit,
            conversations=self.conversations,
            runs=self.runs,
            services=services,
            disabled_reason=reason if not available else "",
        )
        if self.llm is not None and self.settings.agent.swarm.enabled:
            from daemon.agent.swarm import attach_swarm

            self.swarm = attach_swarm(
                self.agent, settings=self.settings, llm=self.llm, store=self.store, clock=self.clock
            )
        self.chat = ChatService(self.agent, self.conversations)
        self._build_response(reason if not available else "")
        self._build_task_runner()

    def _build_tasks(self) -> None:
        """The task store, scheduler and commands (the runner needs the agent: built later)."""
        from daemon.tasks.quiet_hours import QuietHours
        from daemon.tasks.scheduler import TaskScheduler
        from memory.tasks import TaskRepo

        scheduler = self.settings.scheduler
        quiet = QuietHours(scheduler.quiet_hours, scheduler.timezone)
        self.outbox.hold_until = quiet.hold_until
        self.task_repo = TaskRepo(self.store, self.clock)
        self.scheduler = TaskScheduler(
            repo=self.task_repo,
            runner=None,
            clock=self.clock,
            timezone=lambda: self.settings.scheduler.timezone,
            misfire_grace_seconds=scheduler.misfire_grace_seconds,
            keep_runs_days=lambda: self.settings.scheduler.keep_runs_days,
            drain_timeout=lambda: self.settings.runtime.drain_timeout_seconds,
            freeze_gc=True,
        )
        self.task_commands: TaskCommands | None = None
        if scheduler.enabled:
            enabled = self.settings.enabled_channels
            self.task_commands = TaskCommands(self.scheduler, self.task_repo, self.clock, enabled)

    def _build_task_runner(self) -> None:
        from daemon.tasks import digest
        from daemon.tasks.runner import TaskRunner

        async def compose_digest(now: datetime) -> str:
            return await digest.compose(
                now, incidents=self.incidents, tasks=self.task_repo, usage=self.usage,
                events=self.events,
            )  # fmt: skip

        self.scheduler.runner = TaskRunner(
            repo=self.task_repo,
            outbox=self.outbox,
            conversations=self.conversations,
            agent=self.agent if self.llm is not None else None,
            clock=self.clock,
            wake_outbox=self.channel_set.wake_all,
            builtins={"digest": compose_digest},
        )

    def _config_tasks(self) -> list[Any]:
        """Tasks from config, plus the digest when it is enabled."""
        from daemon.tasks.digest import digest_task

        scheduler = self.settings.scheduler
        tasks: list[Any] = list(scheduler.tasks)
        if scheduler.digest.enabled:
            digest = scheduler.digest
            tasks.append(digest_task(digest.time, digest.deliver_to, scheduler.timezone))
        return tasks

    def _build_response(self, disabled_reason: str) -> None:
        """Investigations (read-only agent), remediation (approved tools) and postmortems."""
        from daemon.agent.tools.registry import evidence_tools, remediation_registry
        from daemon.response.investigation import InvestigationServices, investigation_registry
        from daemon.response.remediation import Remediator
        from daemon.response.responder import IncidentResponder

        remediation_tools = remediation_registry()
        services = InvestigationServices(
            facts=self.facts,
            recall=self.recall,
            outbox=self.outbox,
            channels=self.channel_set.names,
            wake_outbox=self.channel_set.wake_all,
            host_history=lambda: tuple(self.host_watcher.history) if self.host_watcher else (),
            remediation_tools=tuple(remediation_tools.names()),
        )
        investigator = build_agent(
            settings=self.settings,
            store=self.store,
            clock=self.clock,
            llm=self.llm,
            registry=investigation_registry(evidence_tools()),
            audit=self.audit,
            conversations=self.conversations,
            runs=self.runs,
            services=services,
            disabled_reason=disabled_reason,
        )
        remediator = Remediator(
            lambda: self.settings,
            executor=ToolExecutor(remediation_tools, audit=self.audit, approvals=self.approvals),
            approvals=self.approvals,
            incidents=self.incidents,
            poster=self.incident_poster,
            clock=self.clock,
        )
        self.responder = IncidentResponder(
            lambda: self.settings.incidents,
            poster=self.incident_poster,
            runbooks=self.runbooks,
            incidents=self.incidents,
            conversations=self.conversations,
            facts=self.facts,
            agent=investigator if self.llm is not None else None,
            services=services,
            remediator=remediator,
            clock=self.clock,
            records=IncidentRecordRepo(self.store, self.clock),
        )

    def _make_llm(self) -> LlmClient:
        return build_llm(self.settings, usage=self.usage, clock=self.clock)  # openai: at first use

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(self.reload()))

    async def _drain(self) -> None:
        self.stopping = True
        timeout = self.settings.runtime.drain_timeout_seconds
        self.notifier.stopping()
        self.notifier.status(f"draining (up to {timeout:g}s)")
        log.info("stopping: draining in-flight work (up to %.0fs)", timeout)
        if self.swarm is not None:  # paused now, resumed at the next start (not drained)
            self.swarm.suspend("nightshift is stopping")
        denied = self.approvals.deny_all(by="shutdown")
        cancelled = await self.chat.drain(timeout)
        await self.responder.drain(timeout=5.0)
        await self.scheduler.stop(timeout=5.0)
        await self.hub.drain(timeout=5.0)
        if denied or cancelled:
            log.warning("shutdown denied %d approval(s), cancelled %d run(s)", denied, cancelled)
        sent = await self.channel_set.flush()
        log.info("stopped cleanly (flushed %d outbox message(s))", sent)

    async def _close(self) -> None:
        with contextlib.suppress(Exception):
            await self.supervisor.stop()
        if getattr(self, "api", None) is not None:
            with contextlib.suppress(Exception):
                await self.api.stop()
        resuming = getattr(self, "_resuming", None)
        if resuming is not None and not resuming.done():
            resuming.cancel()
            with contextlib.suppress(BaseException):
                await resuming
        swarm: Swarm | None = getattr(self, "swarm", None)
        if swarm is not None:
            with contextlib.suppress(Exception):
                await swarm.close()
        progress: SwarmProgress | None = getattr(self, "swarm_progress", None)
        if progress is not None:
            with contextlib.suppress(Exception):
                await progress.close()
        if self.llm is not None:
            with contextlib.suppress(Exception):
                await self.llm.close()
        if getattr(self, "store", None) is not None:
            await self.store.close()

    # -- reload --------------------------------------------------------------------------------

    async def reload(self) -> dict[str, Any]:
        """SIGHUP: re-read the config; apply what is safe, report what needs a restart."""
        self.notifier.reloading()
        try:
            fresh = load_settings(self.config_path, state_dir=self.settings.state.dir)
        except ConfigError as exc:
            log.error("reload rejected, keeping the running config: %s", exc)
            self.notifier.ready(self._status_line())
            return {"ok": False, "error": str(exc)}
        old, new = self.settings.model_dump(), fresh.model_dump()
        changed = sorted(key for key in new if new[key] != old[key])
        needs_restart = [key for key in changed if key not in RELOADABLE]
        applied = [key for key in changed if key in RELOADABLE]
        for key in applied:
            setattr(self.settings, key, getattr(fresh, key))
        if "incidents" in applied:
            self.incident_manager.configure(self.settings.incidents)
        if "scheduler" in applied and self.settings.scheduler.enabled:
            from daemon.tasks.quiet_hours import QuietHours

            scheduler = self.settings.scheduler
            self.outbox.hold_until = QuietHours(
                scheduler.quiet_hours, scheduler.timezone
            ).hold_until
            tasks_report = await self.scheduler.reconcile(self._config_tasks())
            log.info("reload: tasks %s", tasks_report)
        if self.llm is not None and "agent" in applied:
            self.llm.set_budget(self.settings.agent.budget)
            if self.swarm is not None:
                self.swarm.apply_settings()
        logging.getLogger().setLevel(self.settings.runtime.log_level)
        if needs_restart:
            log.warning("reload: %s changed and need a restart", ", ".join(needs_restart))
        log.info("reload: applied %s", ", ".join(applied) or "nothing (no changes)")
        self.notifier.ready(self._status_line())
        return {"ok": True, "applied": applied, "needs_restart": needs_restart}

    # -- reporting -----------------------------------------------------------------------------

    def _status_line(self) -> str:
        agent = f"agent on ({self.settings.llm.model})" if self.llm else "agent off"
        return f"{agent}; {len(self.supervisor.health)} components"

    def health(self) -> dict[str, Any]:
        """ok, degraded (a component failing, or a chat channel not up: people may not hear
        from us) or stopping; ``unhealthy`` names what is wrong."""
        states = {h.name: h.state for h in self.supervisor.health.values()}
        bad = [name for name, state in states.items() if state in ("backoff", "failed")]
        bad += [
            f"channel.{name}"
            for name, info in self.channel_set.health().items()
            if info["state"] in ("down", "stopped") and f"channel.{name}" not in bad
        ]
        overall = "stopping" if self.stopping else ("degraded" if bad else "ok")
        return {"status": overall, "unhealthy": bad}

    async def budget(self) -> tuple[int, int]:
        if self.llm is not None and self.llm.built:
            return await self.llm.budget_status()
        budget = self.settings.agent.budget
        midnight = start_of_day(self.clock.now(), budget.timezone)
        return await self.usage.tokens_since(midnight), budget.daily_tokens

    async def status(self) -> dict[str, Any]:
        return await report.status(self)

    async def status_text(self) -> str:
        """A short status for the `status` chat command."""
        return await report.status_text(self)

    async def refresh_metrics(self) -> None:
        await report.refresh_metrics(self)


def start_of_day(now: datetime, zone: str) -> datetime:
    """Midnight of ``now``'s day in ``zone``, as an aware datetime."""
    local = now.astimezone(ZoneInfo(zone))
    return datetime.combine(local.date(), time(0), tzinfo=local.tzinfo)


async def run_daemon(settings: Settings, config_path: Path | None) -> int:
    """Entry point used by `nightshift run`."""
    runtime = Runtime(settings, config_path=config_path)
    try:
        return await runtime.run()
    except StoreError as exc:
        log.error("%s", exc)
        return EXIT_CONFIG  # permanent: restarting would not help (RestartPreventExitStatus)
    except AlreadyRunningError as exc:
        log.error("%s", exc)
        return 1
