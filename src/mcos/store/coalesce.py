"""Concurrent calls run together: group commit for a store's one-row writes.

Sixteen agents each sending one message cost PostgreSQL sixteen transactions (sixteen commits,
sixteen round trips, sixteen statements of Python in the driver) when one transaction of sixteen
statements does the same work for a fraction: what ``mcos.store.postgres``'s sends pay most is
per transaction, not per row. A :class:`Coalescer` lets at most ``lanes`` calls run at once, each
as it comes — at low load nothing waits and nothing changes — and gathers the calls that arrive
while every lane is busy into one batch, run as soon as a lane frees. Batches grow with the load
and never wait on a timer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class Coalescer(Generic[Item, Result]):
    """Runs ``run(items)`` for calls of :meth:`submit`: alone while a lane is free, else in the
    next batch (at most ``most`` items). ``run`` answers each item on its own — a result or an
    exception, in order — so one bad item never fails the others of its batch."""

    def __init__(
        self,
        run: Callable[[Sequence[Item]], Awaitable[list[Result | BaseException]]],
        *,
        lanes: int,
        most: int,
    ) -> None:
        if lanes < 1 or most < 1:
            msg = f"a coalescer needs lanes ≥ 1 and most ≥ 1 (got {lanes}, {most})"
            raise ValueError(msg)
        self._run = run
        self._lanes = lanes
        self._most = most
        self._busy = 0
        self._queue: list[tuple[Item, asyncio.Future[Result]]] = []
        self._batches: set[asyncio.Task[None]] = set()
        self.batched = 0
        """Items that went in a batch of more than one (what coalescing saved is seen here)."""

    async def submit(self, item: Item) -> Result:
        """``item``'s result, or its error, once it has run alone or in a batch."""
        if self._busy < self._lanes:  # a free lane: run now, in the caller's own task
            self._busy += 1
            try:
                (outcome,) = await self._run([item])
            finally:
                self._lane_freed()
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        entry = (item, future)
        self._queue.append(entry)
        try:
            return await future
        except asyncio.CancelledError:
            if entry in self._queue:  # not taken yet: it never runs (a caller gone is not sent)
                self._queue.remove(entry)
            raise

    def _lane_freed(self) -> None:
        """Give the freed lane to the waiting items, as one batch in a task of its own (the
        caller that freed it goes back to its client meanwhile)."""
        self._busy -= 1
        if not self._queue:
            return
        taken, self._queue = self._queue[: self._most], self._queue[self._most :]
        self._busy += 1
        task = asyncio.get_running_loop().create_task(self._batch(taken), name="coalesced")
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)

    async def _batch(self, taken: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            if len(taken) > 1:
                self.batched += len(taken)
            try:
                outcomes = await self._run([item for item, _ in taken])
            except asyncio.CancelledError:  # the store is closing: so are its callers
                for _, future in taken:
                    future.cancel()
                raise
            except Exception as e:
                outcomes = [e] * len(taken)
            for (_, future), outcome in zip(taken, outcomes, strict=True):
                if future.done():  # its caller went away (cancelled): nobody to tell
                    continue
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)
        finally:
            self._lane_freed()
