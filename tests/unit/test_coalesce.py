"""The coalescer: alone while a lane is free, together while every lane is busy, and each
caller answered with its own outcome — never another item's error, never a batch's leftovers."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from mcos.store.coalesce import Coalescer
from tests.waiting import eventually


class Recorder:
    """A batch runner that records each batch and holds it until released."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.release = asyncio.Event()
        self.fail_whole: str | None = None

    async def run(self, items: Sequence[str]) -> list[str | BaseException]:
        self.batches.append(list(items))
        await self.release.wait()
        if self.fail_whole in items:
            raise RuntimeError(f"the batch with {self.fail_whole} failed")
        return [ValueError(i) if i.startswith("bad") else i.upper() for i in items]


async def test_alone_while_a_lane_is_free() -> None:
    r = Recorder()
    r.release.set()
    c: Coalescer[str, str] = Coalescer(r.run, lanes=2, most=10)
    assert await c.submit("a") == "A"
    assert await asyncio.gather(c.submit("b"), c.submit("c")) == ["B", "C"]
    assert r.batches == [["a"], ["b"], ["c"]]
    assert c.batched == 0


async def test_what_arrives_while_every_lane_is_busy_goes_together() -> None:
    r = Recorder()
    c: Coalescer[str, str] = Coalescer(r.run, lanes=1, most=10)
    first = asyncio.ensure_future(c.submit("a"))
    await eventually("the first call running", lambda: r.batches)
    rest = [asyncio.ensure_future(c.submit(x)) for x in ("b", "c", "d")]
    await eventually("the others queued", lambda: len(c._queue) == 3)
    r.release.set()
    assert await asyncio.gather(first, *rest) == ["A", "B", "C", "D"]
    assert r.batches == [["a"], ["b", "c", "d"]]
    assert c.batched == 3


async def test_a_batch_holds_at_most_most_items() -> None:
    r = Recorder()
    c: Coalescer[str, str] = Coalescer(r.run, lanes=1, most=2)
    first = asyncio.ensure_future(c.submit("a"))
    await eventually("the first call running", lambda: r.batches)
    rest = [asyncio.ensure_future(c.submit(x)) for x in "bcde"]
    await eventually("the others queued", lambda: len(c._queue) == 4)
    r.release.set()
    assert await asyncio.gather(first, *rest) == ["A", "B", "C", "D", "E"]
    assert r.batches == [["a"], ["b", "c"], ["d", "e"]]


async def test_an_item_s_error_is_only_its_own() -> None:
    r = Recorder()
    c: Coalescer[str, str] = Coalescer(r.run, lanes=1, most=10)
    first = asyncio.ensure_future(c.submit("bad-first"))
    await eventually("the first call running", lambda: r.batches)
    rest = [asyncio.ensure_future(c.submit(x)) for x in ("b", "bad-c", "d")]
    await eventually("the others queued", lambda: len(c._queue) == 3)
    r.release.set()
    outcomes = await asyncio.gather(first, *rest, return_exceptions=True)
    assert [type(o).__name__ if isinstance(o, BaseException) else o for o in outcomes] == [
        "ValueError", "B", "ValueError", "D"
    ]  # fmt: skip
    assert str(outcomes[2]) == "bad-c"


async def test_a_batch_that_fails_as_a_whole_fails_each_of_its_callers_and_no_other() -> None:
    r = Recorder()
    r.fail_whole = "c"
    c: Coalescer[str, str] = Coalescer(r.run, lanes=1, most=2)
    first = asyncio.ensure_future(c.submit("a"))
    await eventually("the first call running", lambda: r.batches)
    rest = [asyncio.ensure_future(c.submit(x)) for x in "bcde"]
    await eventually("the others queued", lambda: len(c._queue) == 4)
    r.release.set()
    outcomes = await asyncio.gather(first, *rest, return_exceptions=True)
    assert outcomes[0] == "A"
    assert [str(o) for o in outcomes[1:3]] == ["the batch with c failed"] * 2
    assert outcomes[3:] == ["D", "E"]


async def test_a_caller_cancelled_while_queued_is_never_run() -> None:
    r = Recorder()
    c: Coalescer[str, str] = Coalescer(r.run, lanes=1, most=10)
    first = asyncio.ensure_future(c.submit("a"))
    await eventually("the first call running", lambda: r.batches)
    gone = asyncio.ensure_future(c.submit("gone"))
    kept = asyncio.ensure_future(c.submit("kept"))
    await eventually("both queued", lambda: len(c._queue) == 2)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    r.release.set()
    assert await asyncio.gather(first, kept) == ["A", "KEPT"]
    assert r.batches == [["a"], ["kept"]]


async def test_a_lane_is_freed_whatever_happens_to_its_call() -> None:
    """A call cancelled while running, or raising, leaves its lane to the next caller."""
    r = Recorder()
    c: Coalescer[str, str] = Coalescer(r.run, lanes=1, most=10)
    running = asyncio.ensure_future(c.submit("a"))
    await eventually("the call running", lambda: r.batches)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    r.release.set()
    with pytest.raises(ValueError, match="bad"):
        await c.submit("bad")
    assert await c.submit("b") == "B"
    assert r.batches == [["a"], ["bad"], ["b"]]


def test_lanes_and_most_must_be_positive() -> None:
    async def run(items: Sequence[str]) -> list[str | BaseException]:
        return list(items)

    with pytest.raises(ValueError, match="lanes ≥ 1"):
        Coalescer(run, lanes=0, most=1)
    with pytest.raises(ValueError, match="most ≥ 1"):
        Coalescer(run, lanes=1, most=0)
