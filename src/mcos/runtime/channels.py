"""The agent's channel accounts: receiving into its inbox, each under its one-poller lease.

What a channel receives is handed to Mission Control first (``POST /v1/channels/NAME/inbound``)
and only then confirmed to the service, so a crash between the two loses nothing; the item
comes back to this agent as a message fenced as untrusted, and wakes it like any other.

A service that cannot wait for that confirmation (Discord's gateway pushes each message once)
has its items *held* in the agent's durable spool (``.mcos/channels.sqlite``) first; the
spool's drainer posts them to Mission Control in order, retrying with backoff while it is
unreachable, and deletes each only once stored — on start it drains what a previous run left.
Posts to Telegram and Discord go through the same file's outbox (:mod:`mcos.channels.outbox`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from pathlib import Path

from pydantic import ValidationError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_exponential_jitter

from mcos.api_models import ChannelInboundIn
from mcos.channels.base import Channel, Deliver, Inbound
from mcos.channels.outbox import Outbox, OutboxedChannel
from mcos.channels.runner import ChannelRunner, Report
from mcos.channels.spool import Held, Spool, SpoolError, SpoolFull
from mcos.client import AsyncClient, Calls
from mcos.exceptions import IdempotencyConflict, InvalidRequest, McosError

log = logging.getLogger(__name__)

OUTBOXED_KINDS = frozenset({"telegram", "discord"})
"""Kinds whose posts go through the durable outbox (a mock post is a local append already;
an e-mail is authorized by Mission Control right before its one SMTP send)."""


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
        self,
        agent: str,
        channels: dict[str, Channel],
        client: AsyncClient,
        report: Report,
        *,
        spool: Path | Spool | None = None,
        settle: float = 10.0,
        backoff: tuple[float, float] = (0.5, 30.0),
    ) -> None:
        """``spool``: the durable spool file (or one opened already); ``None``: in memory only
        (tests of receiving alone). ``settle``: how long a post waits for its service before
        the tool answers "queued"; ``backoff``: the spool drainer's retry waits (first, most)."""
        self.agent = agent
        self.channels = channels
        self.client = client
        self.report = report
        self.spool = (
            spool
            if isinstance(spool, Spool)
            else Spool(spool if spool is not None else Path(":memory:"))
        )
        self.backoff = backoff
        self.outbox = Outbox(self.spool, {}, report, settle=settle)
        self.posting: dict[str, Channel] = {}
        """The channels as tools use them: posts to Telegram and Discord through the outbox."""
        for name, channel in channels.items():
            if channel.kind in OUTBOXED_KINDS:
                self.outbox.channels[name] = channel
                self.posting[name] = OutboxedChannel(channel, self.outbox)
            else:
                self.posting[name] = channel
        self._held = asyncio.Event()
        self.drainer: asyncio.Task[None] | None = None
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
        """What a channel calls for each item: into Mission Control, or raise (kept) — or, for a
        channel whose service does not offer items again, into the durable spool first."""

        async def deliver(item: Inbound) -> None:
            await self.client.do(Calls.channel_inbound(name, inbound_body(item)))

        async def hold(item: Inbound) -> None:
            body = inbound_body(item)
            try:
                fresh = self.spool.hold(name, body.ref, body.model_dump(mode="json"))
            except SpoolFull as e:
                await self.report("spool_full", e.message)
                raise
            if fresh:
                self._held.set()
                self._start_drainer()

        channel = self.channels.get(name)
        return hold if channel is not None and not channel.redelivers else deliver

    def start(self) -> None:
        """Drain what a previous run held and left unsent, then start every receiver. (An
        agent without Discord, Telegram or another spooled channel never opens the file.)"""
        if any(not c.redelivers for c in self.channels.values()):
            self._start_drainer()
        if self.outbox.channels:
            self.outbox.start()
        self.tasks = [
            asyncio.create_task(runner.run(), name=f"{self.agent}-channel-{name}")
            for name, runner in self.runners.items()
        ]

    def _start_drainer(self) -> None:
        if self.drainer is None or self.drainer.done():
            self._held.set()
            self.drainer = asyncio.create_task(self._drain(), name=f"{self.agent}-channel-spool")

    async def _drain(self) -> None:
        """Post every held item to Mission Control in order, waiting out its outages (and the
        spool file's own trouble: a full or read-only disk is reported and tried again)."""
        failures = 0
        while True:
            await self._held.wait()
            self._held.clear()
            try:
                while held := self.spool.waiting():
                    for item in held:
                        await self._take(item)
                failures = 0
            except SpoolError as e:
                failures += 1
                await self.report("spool_failed", e.message)
                self._held.set()
                await asyncio.sleep(
                    min(self.backoff[1], self.backoff[0] * 2.0 ** min(failures, 16))
                )

    async def _take(self, item: Held) -> None:
        """One held item into Mission Control; retried until it is stored or refused."""
        try:
            body = ChannelInboundIn.model_validate(json.loads(item.body))
        except (ValueError, ValidationError) as e:
            why = f"channel {item.channel}: spooled item {item.ref} is unreadable; set aside"
            self.spool.set_inbound(item.id, "corrupt", str(e))
            await self.report("spool_corrupt", why)
            return
        low, high = self.backoff
        said: list[str] = []

        async def waiting(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome is not None else None
            reason = error.message if isinstance(error, McosError) else repr(error)
            self.spool.attempted(item.id, reason)
            if not said:
                said.append(reason)
                await self.report(
                    "spool_waiting",
                    f"channel {item.channel}: item {item.ref} held in the spool until Mission "
                    f"Control takes it ({reason})",
                )

        retrying = AsyncRetrying(
            retry=retry_if_exception(
                lambda e: not isinstance(e, InvalidRequest | IdempotencyConflict)
            ),
            wait=wait_exponential_jitter(multiplier=low, max=high),
            before_sleep=waiting,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    await self.client.do(Calls.channel_inbound(item.channel, body))
        except IdempotencyConflict as e:  # stored before, under this ref: taken all the same
            log.warning("channel %s: item %s was stored before (%s)", item.channel, item.ref, e)
        except InvalidRequest as e:
            self.spool.set_inbound(item.id, "refused", e.message)
            await self.report(
                "spool_refused", f"channel {item.channel}: Mission Control refused item "
                f"{item.ref}: {e.message}; set aside in the spool"
            )  # fmt: skip
            return
        self.spool.taken(item.id)
        if said:
            log.info("channel %s: held item %s stored by Mission Control", item.channel, item.ref)

    def spooled(self) -> dict[str, int]:
        """The spool's counts (``inbound_waiting``, ``outbound_queued``…)."""
        return self.spool.counts()

    async def stop(self) -> None:
        """Stop receiving, send what the outbox holds (briefly), release the leases; what is
        held or unsent stays in the spool for the next start."""
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, McosError):
                await task
        self.tasks = []
        await self.outbox.stop()
        if self.drainer is not None:
            self.drainer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.drainer
            self.drainer = None
        for channel in self.channels.values():
            try:
                await channel.aclose()
            except (McosError, OSError) as e:
                log.warning("channel %s: closing: %s", channel.name, e)
        self.spool.close()  # and its lock: the next instance of this agent sends from it

    def receiving(self) -> dict[str, bool]:
        """Which channels are receiving now (for the state report)."""
        return {name: r.receiving for name, r in self.runners.items()}

    def misconfigured(self) -> dict[str, str]:
        """The channels that stopped as misconfigured, and why (for the state report)."""
        return {n: r.misconfigured for n, r in self.runners.items() if r.misconfigured}
