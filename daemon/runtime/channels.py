"""The configured chat channels, each with its outbox worker, run under the supervisor."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from daemon.config import ChannelsSettings
from daemon.core.clock import Clock
from daemon.runtime.supervisor import Supervisor
from integrations.base import Channel, InboundSink
from integrations.console import ConsoleChannel
from integrations.outbox import OutboxWorker
from memory.channels import ChannelStateRepo
from memory.outbox import OutboxRepo

log = logging.getLogger(__name__)

FLUSH_TIMEOUT_SECONDS = 10.0


class StoredSyncToken:
    """Keeps a channel's sync position (Matrix ``next_batch``) in the database."""

    def __init__(self, state: ChannelStateRepo, channel: str) -> None:
        self._state = state
        self._channel = channel

    async def load(self) -> str | None:
        return await self._state.get(self._channel, "sync_token")

    async def save(self, token: str) -> None:
        await self._state.set(self._channel, "sync_token", token)


def build_channels(
    settings: ChannelsSettings, console: ConsoleChannel, state: ChannelStateRepo
) -> list[Channel]:
    """The console plus every enabled platform; platform libraries are imported only if used."""
    channels: list[Channel] = [console]
    if settings.slack.enabled:
        from integrations.slack.channel import SlackChannel

        channels.append(SlackChannel(settings.slack))
    if settings.telegram.enabled:
        from integrations.telegram.channel import TelegramChannel

        channels.append(TelegramChannel(settings.telegram))
    if settings.matrix.enabled:
        from integrations.matrix.channel import MatrixChannel

        store = StoredSyncToken(state, "matrix")
        channels.append(MatrixChannel(settings.matrix, sync_token_store=store))
    return channels


class ChannelSet:
    """Starts channels and their outbox workers; flushes the outbox at shutdown."""

    def __init__(self, channels: list[Channel], outbox: OutboxRepo, clock: Clock) -> None:
        self.channels = {channel.name: channel for channel in channels}
        self.workers = {channel.name: OutboxWorker(outbox, channel, clock) for channel in channels}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.channels)

    def wake(self, name: str) -> None:
        worker = self.workers.get(name)
        if worker is not None:
            worker.wake()

    def wake_all(self) -> None:
        for worker in self.workers.values():
            worker.wake()

    def start(self, supervisor: Supervisor, sink: InboundSink) -> None:
        for name, channel in self.channels.items():
            supervisor.start(f"channel.{name}", _keep_connected(channel, sink))
            supervisor.start(f"outbox.{name}", self.workers[name].run)

    async def flush(self) -> int:
        """Deliver what can be delivered now; what cannot stays queued for the next start."""
        sent = 0
        for name, worker in self.workers.items():
            try:
                sent += await asyncio.wait_for(worker.flush(), FLUSH_TIMEOUT_SECONDS)
            except Exception as exc:  # noqa: BLE001 - shutdown goes on; rows stay pending
                log.warning("outbox flush for %s stopped: %s", name, exc)
        return sent

    def health(self) -> dict[str, dict[str, Any]]:
        return {
            name: {"state": channel.health().state, "detail": channel.health().detail}
            for name, channel in self.channels.items()
        }


def _keep_connected(channel: Channel, sink: InboundSink) -> Any:
    async def run() -> None:
        await channel.start(sink)
        try:
            await asyncio.Event().wait()  # channels run their own receive loops
        finally:
            with contextlib.suppress(Exception):
                await channel.stop()

    return run
