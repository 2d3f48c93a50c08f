"""Keep one channel receiving: under its account's lease, restarted with backoff, reported.

The field's duplicate-poller incident had two processes long-polling one Telegram token; here a
receiver runs only while it holds Mission Control's lease keyed by the account's hash, gives the
account up the moment renewal fails, and treats the service's own "someone else polls" answer
(Telegram's 409) as fenced out: stop, report, and try again only after the lease could pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from mcos.channels.base import Channel, Deliver
from mcos.exceptions import (
    ChannelFenced,
    ChannelMisconfigured,
    ChannelRefused,
    LeaseHeld,
    LeaseLost,
    McosError,
)

log = logging.getLogger(__name__)

Report = Callable[[str, str], Awaitable[None]]
"""``(what, detail)``: ``fenced``, ``refused``, ``misconfigured``, ``lease_lost``, ``failed``,
``receiving``."""


class LeaseOps(Protocol):
    """Mission Control's leases, over HTTP (agents) or the store (Mission Control itself)."""

    async def acquire(self, key: str, holder: str, ttl: float) -> int:
        """The fence of a new or renewed grant; ``LeaseHeld`` while another holds it."""
        ...

    async def renew(self, key: str, holder: str, fence: int, ttl: float) -> None:
        """Extend; ``LeaseLost`` when it passed on."""
        ...

    async def release(self, key: str, holder: str, fence: int) -> None:
        """Give it up."""
        ...


class ChannelRunner:
    """One channel's receiving loop; ``run`` until cancelled."""

    def __init__(
        self,
        channel: Channel,
        deliver: Deliver,
        leases: LeaseOps,
        holder: str,
        report: Report,
        *,
        ttl: float = 15.0,
        backoff: tuple[float, float] = (1.0, 300.0),
        fenced_pause: float = 60.0,
        misconfigured_pause: float = 3600.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.channel = channel
        self.deliver = deliver
        self.leases = leases
        self.holder = holder
        self.report = report
        self.ttl = ttl
        self.backoff = backoff
        self.fenced_pause = fenced_pause
        self.misconfigured_pause = misconfigured_pause
        """Seconds before a misconfigured channel looks again (a person may have fixed it)."""
        self.misconfigured: str | None = None
        """Why the channel is misconfigured, while it is (None once it receives again)."""
        self.sleep = sleep
        self.receiving = False
        self.failures = 0

    async def run(self) -> None:
        """Receive whenever this process may; never two receivers of one account."""
        key = self.channel.exclusive_key()
        said_held = False
        while True:
            fence = 0
            if key is not None:
                try:
                    fence = await self.leases.acquire(key, self.holder, self.ttl)
                except LeaseHeld as e:
                    if not said_held:
                        log.info("channel %s: another process receives (%s)", self.channel.name, e)
                        said_held = True
                    await self.sleep(self.ttl / 3)  # a dead holder's lease ends within its TTL
                    continue
                except McosError as e:
                    await self.sleep(await self._failed(f"lease: {e.message}"))
                    continue
            said_held = False
            try:
                pause = await self._receive(key, fence)
            finally:
                if key is not None:
                    with contextlib.suppress(McosError, OSError):
                        await asyncio.shield(self.leases.release(key, self.holder, fence))
            await self.sleep(pause)

    async def _receive(self, key: str | None, fence: int) -> float:
        """Receive until the channel stops or the lease goes; how long to pause after."""
        receiver = asyncio.create_task(
            self.channel.run(self.deliver), name=f"{self.channel.name}-receive"
        )
        keeper = (
            asyncio.create_task(self._keep(key, fence), name=f"{self.channel.name}-lease")
            if key is not None
            else None
        )
        self.receiving = True
        self.misconfigured = None
        await self.report("receiving", f"{self.channel.kind} channel {self.channel.name} receiving")
        waits: set[asyncio.Task[None]] = {receiver} | ({keeper} if keeper else set())
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.receiving = False
            for task in waits:
                task.cancel()
            for task in waits:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if keeper is not None and keeper in done:
            await self.report(
                "lease_lost", f"channel {self.channel.name}: lease lost, stopped receiving"
            )
            return 0.0
        error = receiver.exception() if not receiver.cancelled() else None
        if isinstance(error, ChannelFenced):
            await self.report(
                "fenced",
                f"channel {self.channel.name}: {error.message} — stopped receiving; another "
                "process polls this account",
            )
            return self.fenced_pause
        if isinstance(error, ChannelMisconfigured):
            self.misconfigured = error.message
            await self.report("misconfigured", f"channel {self.channel.name}: {error.message}")
            return self.misconfigured_pause
        if isinstance(error, ChannelRefused):
            await self.report("refused", f"channel {self.channel.name}: {error.message}")
            return self.backoff[1]
        return await self._failed(
            f"{error.__class__.__name__}: {error}" if error else "receiver stopped"
        )

    async def _failed(self, why: str) -> float:
        self.failures += 1
        low, high = self.backoff
        pause = min(high, low * float(2 ** min(self.failures - 1, 16)))
        await self.report("failed", f"channel {self.channel.name}: {why}; again in {pause:.0f} s")
        return pause

    async def _keep(self, key: str, fence: int) -> None:
        """Renew every third of the TTL; return (ending the receiver) when renewal fails.

        A channel whose service does not offer items again (Discord) keeps receiving into the
        agent's durable spool while Mission Control does not answer — stopping would lose what
        arrives meanwhile, and nobody can be granted the lease from an unreachable Mission
        Control; it stops once Mission Control answers that the lease passed on.
        """
        unanswered = False
        while True:
            await self.sleep(self.ttl / 3)
            try:
                await self.leases.renew(key, self.holder, fence, self.ttl)
            except LeaseLost:
                return
            except McosError as e:
                if self.channel.redelivers or getattr(e, "status", None) not in (0, 502, 503, 504):
                    log.warning(
                        "channel %s: lease renewal failed: %s", self.channel.name, e.message
                    )
                    return
                if not unanswered:
                    unanswered = True
                    await self.report(
                        "unconfirmed",
                        f"channel {self.channel.name}: Mission Control does not answer "
                        f"({e.message}); still receiving, items held in the spool",
                    )
                continue
            if unanswered:
                unanswered = False
                log.info("channel %s: lease renewed again", self.channel.name)
            self.failures = 0
