"""In-process wake-ups for long-polling consumers.

A store calls :meth:`Waiters.wake` after a send commits (SQLite: directly; PostgreSQL: from the
LISTEN connection, so sends through any server wake waiters on every server). A waiter never
trusts a wake-up: it claims afterwards, and an empty claim simply waits again.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager


class Waiters:
    """Futures of consumers waiting on an inbox, woken together."""

    def __init__(self) -> None:
        self._waiting: defaultdict[str, set[asyncio.Future[None]]] = defaultdict(set)

    async def wait(self, inbox: str, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a wake-up of ``inbox``; True when woken."""
        if timeout <= 0:
            return False
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiting = self._waiting[inbox]
        waiting.add(future)
        try:
            async with asyncio.timeout(timeout):
                await future
        except TimeoutError:
            return False
        finally:
            waiting.discard(future)
            if not waiting:
                self._waiting.pop(inbox, None)
        return True

    @contextmanager
    def armed(self, inbox: str) -> Iterator[asyncio.Future[None]]:
        """A future resolved by the next wake-up of ``inbox``, registered before the caller
        looks at the inbox, so a send that lands in between cannot be missed."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiting = self._waiting[inbox]
        waiting.add(future)
        try:
            yield future
        finally:
            waiting.discard(future)
            if not waiting:
                self._waiting.pop(inbox, None)

    def wake(self, inboxes: Iterable[str]) -> None:
        """Wake every waiter of each inbox (must run on the event loop's thread)."""
        for inbox in inboxes:
            for future in self._waiting.get(inbox, ()):
                if not future.done():
                    future.set_result(None)

    def wake_all(self) -> None:
        """Wake everyone, e.g. at shutdown or after the store reconnected."""
        self.wake(list(self._waiting))

    def inboxes(self) -> list[str]:
        """Inboxes that have a waiter right now."""
        return list(self._waiting)
