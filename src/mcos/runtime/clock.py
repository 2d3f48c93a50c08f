"""Time for the runtime, passed in: Mission Control's clock in production, virtual in a simulation.

No runtime logic reads the machine's clock directly. ``MissionClock`` adds the offset to
Mission Control's authoritative clock (measured with round-trip correction), so a skewed local
clock never dates a log entry or judges a deadline; ``VirtualClock`` lets a whole fleet-day run
in seconds.

The offset is measured at start and every few minutes; a host clock stepped in between (NTP
catching up, an operator's ``date -s``) leaves the cached offset wrong until the next
measurement. So nothing is *flagged* on time from the cache: ``MissionClock.live`` asks Mission
Control again first, and the judgement is made on that fresh answer.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from tenacity import AsyncRetrying, RetryCallState, retry_if_result, stop_after_attempt


class Clock(Protocol):
    """Aware UTC instants and sleeping."""

    def now(self) -> datetime:
        """The current instant, aware, UTC."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...


@dataclass(frozen=True)
class OffsetSample:
    """One measurement of Mission Control's clock against ours."""

    offset: timedelta
    """Mission Control's time minus the local time, at the midpoint of the round trip."""
    round_trip: timedelta


MAX_ROUND_TRIP = timedelta(seconds=5)
"""A measurement whose round trip took longer (or went backwards) is not trusted: the host
clock stepped while the request was in flight, or the answer was stalled."""


def trustworthy(sample: OffsetSample, max_round_trip: timedelta = MAX_ROUND_TRIP) -> bool:
    """Whether a measurement's round trip is short and forward, so its offset can be judged on."""
    return timedelta(0) <= sample.round_trip <= max_round_trip


def offset_from(sent: datetime, server: datetime, received: datetime) -> OffsetSample:
    """The offset given when a request left, the server's answer, and when the answer came.

    The server read its clock somewhere in the round trip; the midpoint is the best guess, and
    the error is at most half the round trip.
    """
    round_trip = received - sent
    return OffsetSample(server - (sent + round_trip / 2), round_trip)


class MissionClock:
    """The local clock corrected by the measured offset to Mission Control's."""

    def __init__(self, wall: Callable[[], datetime] | None = None) -> None:
        self._wall = wall or (lambda: datetime.now(UTC))
        self.offset = timedelta(0)
        self.measured_at: datetime | None = None

    def local(self) -> datetime:
        """The machine's own clock (only for measuring the offset)."""
        return self._wall()

    def now(self) -> datetime:
        """Mission Control's time, as best known."""
        return self._wall() + self.offset

    def adopt(self, sample: OffsetSample) -> None:
        """Use a fresh measurement (never one cached across a restart)."""
        self.offset = sample.offset
        self.measured_at = self._wall()

    async def sleep(self, seconds: float) -> None:
        """A real sleep."""
        await asyncio.sleep(max(seconds, 0))

    async def measure(self, server_time: Callable[[], Awaitable[datetime]]) -> OffsetSample:
        """Ask Mission Control for its time and adopt the offset."""
        sample = await self._sample(server_time)
        self.adopt(sample)
        return sample

    async def _sample(self, server_time: Callable[[], Awaitable[datetime]]) -> OffsetSample:
        sent = self._wall()
        server = await server_time()
        return offset_from(sent, server, self._wall())

    async def live(
        self,
        server_time: Callable[[], Awaitable[datetime]],
        *,
        attempts: int = 3,
        max_round_trip: timedelta = MAX_ROUND_TRIP,
    ) -> OffsetSample | None:
        """A fresh measurement to judge on, adopted; None if no trustworthy one came.

        Asked before anything is flagged on time. A sample whose round trip went backwards or
        took too long (the host clock stepped mid-flight) is asked again, up to ``attempts``
        times; errors reaching Mission Control propagate.
        """

        def untrusted(state: RetryCallState) -> None:
            return None

        retrying = AsyncRetrying(
            stop=stop_after_attempt(attempts),
            retry=retry_if_result(lambda s: not trustworthy(s, max_round_trip)),
            retry_error_callback=untrusted,
            reraise=True,
        )
        sample: OffsetSample | None = await retrying(self._sample, server_time)
        if sample is not None:
            self.adopt(sample)
        return sample


class VirtualClock:
    """Simulated time: sleepers wake in order as ``advance`` moves the clock."""

    def __init__(self, start: datetime) -> None:
        self._now = start
        self._sleepers: list[tuple[datetime, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> datetime:
        """The simulated instant."""
        return self._now

    async def sleep(self, seconds: float) -> None:
        """Wait until ``advance`` passes ``now + seconds``."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(
            self._sleepers, (self._now + timedelta(seconds=seconds), next(self._order), wake)
        )
        await wake

    def next_wake(self) -> datetime | None:
        """When the earliest sleeper wakes."""
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)
        return self._sleepers[0][0] if self._sleepers else None

    async def advance(self, to: datetime) -> None:
        """Move to ``to``, waking each sleeper at its own instant, and let them run."""
        while (wake := self.next_wake()) is not None and wake <= to:
            _, _, future = heapq.heappop(self._sleepers)
            self._now = max(self._now, wake)
            future.set_result(None)
            for _ in range(20):  # let woken tasks reach their next await
                await asyncio.sleep(0)
        self._now = max(self._now, to)


def monotonic() -> float:
    """Seconds for measuring durations (never for dating anything)."""
    return time.monotonic()
