"""An agent stops itself when its lease may have passed to another host.

The supervisor kills an agent whose lease it could not renew in time — unless the supervisor
itself cannot run (starved on a loaded host, stopped): then the agent lived on while another
host took the lease and started it there, two processes of one agent at once (the old one
fenced out by Mission Control, so no double action through it, but alive). So the agent keeps
its own copy of the deadline: with every confirmed grant or renewal, the supervisor writes the
new deadline — the moment it would kill the agent itself, on the host's monotonic clock, which
both processes share — into the agent's liveness socket (the same socket the agent beats on),
and the agent checks it when it falls due. A deadline that passes with no later one written
stops the agent at once, whatever its supervisor is doing.

The agent reads the socket only when its deadline falls due (a renewal costs it no wake-up);
a supervisor that never writes a deadline (an agent run by hand) arms nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable

_PREFIX = b"lease-deadline "


def deadline_message(deadline: float) -> bytes:
    """What the supervisor writes: the monotonic instant (``time.monotonic()``) by which the
    agent must be gone unless a later deadline follows."""
    return _PREFIX + repr(float(deadline)).encode() + b"\n"


def latest_deadline(data: bytes) -> tuple[float | None, bytes]:
    """The last complete deadline in ``data`` (None if none) and the unfinished tail to keep;
    other lines are ignored."""
    *lines, tail = data.split(b"\n")
    latest: float | None = None
    for line in lines:
        if line.startswith(_PREFIX):
            with contextlib.suppress(ValueError):
                latest = float(line[len(_PREFIX) :])
    return latest, tail


class LeaseWatch:
    """The agent's end: arms a timer at the deadline read from ``fd``, and at that moment calls
    ``on_expired`` unless a later deadline has been written meanwhile."""

    def __init__(self, fd: int, on_expired: Callable[[], None]) -> None:
        self.fd = fd
        self.on_expired = on_expired
        self.deadline: float | None = None
        self.expired = False
        """The deadline passed with no later one written (``on_expired`` was called)."""
        self._tail = b""
        self._timer: asyncio.TimerHandle | None = None
        self._readable = True

    def start(self) -> bool:
        """Read the deadline the supervisor wrote before the agent started, and arm the timer;
        False (nothing armed) when there is none."""
        self._read()
        self._arm()
        return self._timer is not None

    def close(self) -> None:
        """Disarm (the agent is stopping anyway)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _read(self) -> None:
        """Take in what the supervisor wrote since the last look (never blocks)."""
        while self._readable:
            try:
                data = os.read(self.fd, 4096)
            except BlockingIOError:
                return
            except OSError:  # not a socket we can read (a plain pipe's write end): no deadlines
                self._readable = False
                return
            if not data:  # the supervisor is gone (its death ends us by other means)
                self._readable = False
                return
            latest, self._tail = latest_deadline(self._tail + data)
            if latest is not None and (self.deadline is None or latest > self.deadline):
                self.deadline = latest

    def _arm(self) -> None:
        if self.deadline is None:
            return
        loop = asyncio.get_running_loop()
        # The loop's clock is time.monotonic(), the supervisor's clock for the deadline.
        self._timer = loop.call_at(loop.time() + (self.deadline - time.monotonic()), self._due)

    def _due(self) -> None:
        self._timer = None
        self._read()
        assert self.deadline is not None
        if time.monotonic() < self.deadline:
            self._arm()  # renewed meanwhile: wait for the new deadline
            return
        self.expired = True
        self.on_expired()
