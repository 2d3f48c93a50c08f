"""The hot statements' own asyncpg connections (mcos.store.lanes): used when they can be, replaced
when the database closed them, and stepped around — before anything is sent — when all are busy
or they cannot connect, so that every failure is answered as the pool answers it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import psycopg
import pytest

from mcos.domain.messages import NewMessage
from mcos.exceptions import StoreError
from mcos.store import make_store
from mcos.store.lanes import positional
from mcos.store.postgres import PostgresStore
from tests.store.conftest import (
    AUDIT_KEY,
    DIRECTORY,
    FAST_POLICY,
    drop_pg_database,
    migrated_database,
)
from tests.waiting import eventually

pytestmark = pytest.mark.postgres


def test_named_parameters_become_numbered_in_order_of_first_use() -> None:
    sql, names = positional("SELECT %(a)s, %(b)s::int, %(a)s || %(c)s")
    assert sql == "SELECT $1, $2::int, $1 || $3"
    assert names == ["a", "b", "c"]


async def _store(url: str) -> PostgresStore:
    s = make_store(url, FAST_POLICY, audit_key=AUDIT_KEY)
    assert isinstance(s, PostgresStore)
    await s.open()
    await s.sync_directory(DIRECTORY)
    return s


@pytest.fixture
async def url(tmp_path: Path) -> AsyncIterator[str]:
    database = migrated_database("postgres", tmp_path)
    yield database
    drop_pg_database(database)


async def _lane_backends(url: str) -> list[int]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        rows = await (
            await conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'mcos-lane'"
                " AND datname = current_database()"
            )
        ).fetchall()
    return [pid for (pid,) in rows]


def _none_left(url: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:  # a backend ends a moment after its client lets it go
        return await _lane_backends(url) == []

    return check


async def test_a_send_goes_on_a_lane_and_reads_back_as_sent(url: str) -> None:
    store = await _store(url)
    try:
        meta = {"order": [1, {"two": "ü"}], "channel": "telegram"}
        sent = await store.send(NewMessage("jarvis", "gene", body="hi", meta=meta))
        assert len(await _lane_backends(url)) == 1
        [got] = await store.claim("gene", limit=5)
        assert got.message == sent.message
        assert got.message.meta == meta
        with pytest.raises(StoreError):  # text PostgreSQL cannot hold: refused, lane kept
            await store.send(NewMessage("jarvis", "gene", body="nul\x00"))
        await store.send(NewMessage("jarvis", "gene", body="after"))
        assert len(await _lane_backends(url)) == 1
    finally:
        await store.close()
    await eventually("the lane closed with the store", _none_left(url))


async def test_a_lane_the_database_closed_is_replaced_without_failing_a_send(url: str) -> None:
    store = await _store(url)
    try:
        await store.send(NewMessage("jarvis", "gene", body="one"))
        [pid] = await _lane_backends(url)
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as admin:
            await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        lanes = store._lanes
        await eventually("the lane seen closed", lambda: all(c.is_closed() for c, _ in lanes._idle))
        await store.send(NewMessage("jarvis", "gene", body="two"))
        assert [pid] != await _lane_backends(url)
        assert [d.message.body for d in await store.claim("gene", limit=5)] == ["one", "two"]
    finally:
        await store.close()


async def test_statements_beyond_the_lanes_go_through_the_pool(url: str) -> None:
    store = await _store(url)
    store._lanes._size = 1
    try:
        sent = await asyncio.gather(
            *(store.send(NewMessage("jarvis", "gene", body=f"m{i}")) for i in range(12))
        )
        claimed = await asyncio.gather(*(store.claim("gene", limit=3) for _ in range(6)))
        assert len(await _lane_backends(url)) == 1
        assert sorted(d.message.id for c in claimed for d in c) == sorted(
            r.message.id for r in sent
        )
        await asyncio.gather(
            *(store.ack_many("gene", [(d.id, d.receipt or "") for d in c]) for c in claimed)
        )
        assert await store.claim("gene", limit=20) == []
    finally:
        await store.close()


async def test_a_url_with_other_parameters_sends_through_the_pool(url: str) -> None:
    store = await _store(url + "?application_name=custom")
    try:
        await store.send(NewMessage("jarvis", "gene", body="through the pool"))
        assert await _lane_backends(url) == []
        assert [d.message.body for d in await store.claim("gene")] == ["through the pool"]
    finally:
        await store.close()


async def test_lanes_that_cannot_connect_stand_aside_and_the_pool_sends(url: str) -> None:
    store = await _store(url)
    try:
        await store.send(NewMessage("jarvis", "gene", body="one"))
        [pid] = await _lane_backends(url)
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as admin:
            await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        lanes = store._lanes
        await eventually("the lane seen closed", lambda: all(c.is_closed() for c, _ in lanes._idle))
        assert lanes._connect is not None
        lanes._connect = {**lanes._connect, "password": "wrong", "user": "nobody_here"}
        await store.send(NewMessage("jarvis", "gene", body="two"))  # no lane: the pool's
        assert not lanes.usable  # for a while
        await eventually("no lane connection", _none_left(url))
        assert [d.message.body for d in await store.claim("gene", limit=5)] == ["one", "two"]
    finally:
        await store.close()


async def test_sends_together_run_in_one_lane_transaction_each_row_told_apart(url: str) -> None:
    """A batch of sends (what arrives while every send lane is busy) is one pipelined
    transaction on a lane: each row comes back in its item's place, a declined send's place
    empty, and a send PostgreSQL refuses takes the whole batch with it (nothing stored)."""
    from mcos.store.postgres import _fence_params, _no_note, _send_params

    store = await _store(url)

    def batch(*messages: NewMessage) -> list[dict[str, object]]:
        return [
            _send_params(m, m.content_hash()) | _fence_params(None) | _no_note() | {"item": i}
            for i, m in enumerate(messages)
        ]

    try:
        rows = await store._send_batch(
            batch(
                NewMessage("jarvis", "gene", body="first"),
                NewMessage("jarvis", "nobody", body="declined: no such recipient"),
                NewMessage("jarvis", "gene", body="third"),
            )
        )
        assert len(await _lane_backends(url)) == 1
        assert rows[1] is None
        assert [r["item"] for r in rows if r is not None] == [0, 2]
        claimed = await store.claim("gene", limit=5)
        assert [(d.message.id, d.message.body) for d in claimed] == [
            (rows[0]["id"], "first"),  # type: ignore[index]
            (rows[2]["id"], "third"),  # type: ignore[index]
        ]
        with pytest.raises(StoreError):
            await store._send_batch(
                batch(NewMessage("jarvis", "gene", body="kept out"),
                      NewMessage("jarvis", "gene", body="nul\x00"))
            )  # fmt: skip
        assert await store.claim("gene", limit=5) == []
        assert len(await _lane_backends(url)) == 1  # the lane kept
    finally:
        await store.close()
