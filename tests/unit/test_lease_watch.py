"""An agent's own copy of its lease deadline: stop when it passes unrenewed, whatever the
supervisor is doing (a starved supervisor once let two processes of one agent overlap)."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Iterator

import pytest

from mcos.runtime.lease_watch import LeaseWatch, deadline_message, latest_deadline
from tests.waiting import astays, eventually

RENEW_EVERY = 0.1
"""How often the test, as the supervisor, renews a 0.3 s lease."""


@pytest.fixture
def pair() -> Iterator[tuple[int, int]]:
    """(supervisor's end, agent's end) of a liveness socket, both non-blocking."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.setblocking(False)
    yield ours.fileno(), theirs.fileno()
    ours.close()
    theirs.close()


class TestWire:
    """The supervisor writes lines; the agent takes the last complete deadline."""

    def test_round_trip(self) -> None:
        """A deadline comes back exactly, with nothing left over."""
        assert latest_deadline(deadline_message(12345.678901)) == (12345.678901, b"")

    def test_the_last_complete_line_wins_and_a_partial_one_is_kept(self) -> None:
        """Several renewals read at once: the last counts; half a line waits for its end."""
        data = deadline_message(10.0) + deadline_message(20.0) + b"lease-deadline 3"
        assert latest_deadline(data) == (20.0, b"lease-deadline 3")
        assert latest_deadline(b"lease-deadline 3" + b"0.5\n") == (30.5, b"")

    def test_other_lines_are_ignored(self) -> None:
        """Garbage or another message is not a deadline."""
        assert latest_deadline(b"hello\nlease-deadline soon\n") == (None, b"")


class TestLeaseWatch:
    """Armed by the deadline written before the agent starts; renewed by later ones."""

    async def test_an_unrenewed_deadline_stops_the_agent(self, pair: tuple[int, int]) -> None:
        """No later deadline: the agent is told to stop — at the deadline, never before."""
        ours, theirs = pair
        stopped: list[float] = []
        deadline = time.monotonic() + 0.3
        os.write(ours, deadline_message(deadline))
        watch = LeaseWatch(theirs, lambda: stopped.append(time.monotonic()))
        assert watch.start()
        await eventually("the agent to stop itself", lambda: stopped, timeout=10)
        assert stopped[0] >= deadline
        assert watch.expired

    async def test_renewals_keep_it_running(self, pair: tuple[int, int]) -> None:
        """Each renewal moves the deadline; once they stop, the agent stops."""
        ours, theirs = pair
        stopped: list[float] = []
        os.write(ours, deadline_message(time.monotonic() + 0.3))
        watch = LeaseWatch(theirs, lambda: stopped.append(time.monotonic()))
        watch.start()

        written: list[float] = []

        async def renew() -> None:  # the supervisor's part: a renewal every third of the TTL
            while True:
                written.append(time.monotonic() + 0.3)
                os.write(ours, deadline_message(written[-1]))
                await asyncio.sleep(RENEW_EVERY)  # a cadence it keeps, not a wait for state

        renewing = asyncio.create_task(renew(), name="renew")
        try:
            await astays("the agent running while renewed", lambda: not stopped, duration=1.5)
        finally:
            renewing.cancel()
        await eventually("the agent to stop once renewals stop", lambda: stopped, timeout=10)
        assert stopped[0] >= written[-1]  # the last renewal counted

    async def test_no_deadline_arms_nothing(self, pair: tuple[int, int]) -> None:
        """An agent whose starter writes no deadline (run by hand) is never stopped by it."""
        _, theirs = pair
        watch = LeaseWatch(theirs, lambda: pytest.fail("stopped without a deadline"))
        assert not watch.start()

    async def test_a_pipe_arms_nothing(self) -> None:
        """A plain pipe's write end (an older starter's liveness pipe) cannot be read: no
        deadlines, no error."""
        read_end, write_end = os.pipe()
        try:
            watch = LeaseWatch(write_end, lambda: pytest.fail("stopped without a deadline"))
            assert not watch.start()
        finally:
            os.close(read_end)
            os.close(write_end)

    async def test_a_closed_timer_never_fires(self, pair: tuple[int, int]) -> None:
        """A stopping agent disarms the watch."""
        ours, theirs = pair
        os.write(ours, deadline_message(time.monotonic() + 0.2))
        watch = LeaseWatch(theirs, lambda: pytest.fail("stopped after close"))
        watch.start()
        watch.close()
        await astays("no stop after close", lambda: not watch.expired, duration=0.5)
