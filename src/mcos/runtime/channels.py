"""The agent's channel accounts: receiving into its inbox, each under its one-poller lease.

What a channel receives is handed to Mission Control first (``POST /v1/channels/NAME/inbound``)
and only then confirmed to the service, so a crash between the two loses nothing; the item
comes back to this agent as a message fenced as untrusted, and wakes it like any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket

from mcos.api_models import ChannelInboundIn
from mcos.channels.base import Channel, Deliver, Inbound
from mcos.channels.runner import ChannelRunner, Report
from mcos.client import AsyncClient, Calls
from mcos.exceptions import McosError

log = logging.getLogger(__name__)


class HttpLeases:
    """Channel leases through Mission Control's API, as the agent."""

    def __init__(self, client: AsyncClient, channel: str, host: str) -> None:
        self.client = client
        self.channel = channel
        self.host = host

    async def acquire(self, key: str, holder: str, ttl: float) -> int:
        """A grant or renewal; ``LeaseHeld`` while another process holds it."""
        lease = await self.client.do(
            Calls.acquire_channel_lease(self.channel, key, holder, self.host, ttl)
        )
        return lease.fence

    async def renew(self, key: str, holder: str, fence: int, ttl: float) -> None:
        """Extend; ``LeaseLost`` when it passed on."""
        await self.client.do(Calls.renew_channel_lease(self.channel, key, holder, fence, ttl))

    async def release(self, key: str, holder: str, fence: int) -> None:
        """Give it up."""
        await self.client.do(Calls.release_channel_lease(self.channel, key, holder, fence))


def inbound_body(item: Inbound) -> ChannelInboundIn:
    """An inbound item as Mission Control's API takes it (over-long fields cut, not refused)."""
    return ChannelInboundIn(
        sender=item.sender[:300],
        sender_id=item.sender_id[:300],
        text=item.text[:100_000],
        at=item.at,
        ref=(item.ref or f"{item.at.timestamp():.6f}")[:200],
        reply_to=item.reply_to[:300],
        subject=item.subject[:500],
        urgent=item.urgent,
        labels=list(item.labels)[:20],
        action=item.action[:64],
    )


class AgentChannels:
    """Runs the receivers of one agent's channels while the agent runs."""

    def __init__(
        self, agent: str, channels: dict[str, Channel], client: AsyncClient, report: Report
    ) -> None:
        self.agent = agent
        self.channels = channels
        self.client = client
        self.host = socket.gethostname()
        fence = getattr(client, "fence", None)
        # Under a supervisor the agent's fence names this instance of it: a restart by the same
        # supervisor (the old process group already killed) takes its channels back at once,
        # while a takeover elsewhere (a new fence) waits for the old lease to end.
        self.holder = (
            f"{agent}@{self.host}/fence-{fence}"
            if fence is not None
            else f"{agent}@{self.host}:{os.getpid()}"
        )
        self.runners = {
            name: ChannelRunner(
                channel, self.deliver_to(name), HttpLeases(client, name, self.host), self.holder,
                report,
            )
            for name, channel in channels.items()
        }  # fmt: skip
        self.tasks: list[asyncio.Task[None]] = []

    def deliver_to(self, name: str) -> Deliver:
        """What a channel calls for each item: into Mission Control, or raise (kept)."""

        async def deliver(item: Inbound) -> None:
            await self.client.do(Calls.channel_inbound(name, inbound_body(item)))

        return deliver

    def start(self) -> None:
        """Start every receiver."""
        self.tasks = [
            asyncio.create_task(runner.run(), name=f"{self.agent}-channel-{name}")
            for name, runner in self.runners.items()
        ]

    async def stop(self) -> None:
        """Stop receiving, flush what channels have queued, release their leases."""
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, McosError):
                await task
        self.tasks = []
        for channel in self.channels.values():
            try:
                await channel.aclose()
            except (McosError, OSError) as e:
                log.warning("channel %s: closing: %s", channel.name, e)

    def receiving(self) -> dict[str, bool]:
        """Which channels are receiving now (for the state report)."""
        return {name: r.receiving for name, r in self.runners.items()}
