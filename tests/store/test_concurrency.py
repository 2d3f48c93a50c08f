"""Many consumers on one inbox: every message delivered, none to two consumers at once."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from mcos.domain.messages import NewMessage
from mcos.store import Store, make_store
from tests.store.conftest import AUDIT_KEY, DIRECTORY, FAST_POLICY

MESSAGES = 2_000
"""The race under test is per claim, not per message: four producers send one at a time, so the
eight consumers contend on nearly every claim, thousands of times at 2,000 messages. (It was
10,000: about two minutes of a worker for both stores on the 2-core machine.)"""
CONSUMERS = 8
PRODUCERS = 4


@pytest.mark.slow
class TestConcurrentConsumers:
    """Claims are exclusive under contention between separate connections."""

    async def test_eight_consumers_two_thousand_messages(self, store_url: str) -> None:
        """8 consumers on their own connections drain 2,000 messages: each exactly once."""
        setup = make_store(store_url, FAST_POLICY, audit_key=AUDIT_KEY)
        await setup.upgrade()
        await setup.open()
        await setup.sync_directory(DIRECTORY)
        consumers: list[Store] = []
        for _ in range(CONSUMERS):
            s = make_store(store_url, FAST_POLICY, audit_key=AUDIT_KEY)
            await s.open()
            consumers.append(s)
        claimed: Counter[int] = Counter()
        acked: list[int] = []
        sent: list[int] = []
        producing = True

        async def produce(p: int) -> None:
            for i in range(p, MESSAGES, PRODUCERS):
                result = await setup.send(NewMessage("gene", "jarvis", body=str(i)))
                sent.append(result.message.id)

        async def consume(s: Store) -> None:
            while True:
                batch = await s.claim("jarvis", limit=25)
                if not batch:
                    if not producing:
                        return
                    await s.wait("jarvis", 0.05)
                    continue
                for d in batch:
                    claimed[d.message.id] += 1
                    await s.ack("jarvis", d.id, d.receipt or "")
                    acked.append(d.message.id)

        try:
            consumer_tasks = [
                asyncio.create_task(consume(s), name=f"consumer-{i}")
                for i, s in enumerate(consumers)
            ]
            await asyncio.gather(*(produce(p) for p in range(PRODUCERS)))
            producing = False
            await asyncio.wait_for(asyncio.gather(*consumer_tasks), 120)
        finally:
            for s in consumers:
                await s.close()
            await setup.close()
        assert len(sent) == MESSAGES
        assert sorted(acked) == sorted(sent)
        assert max(claimed.values()) == 1, "a message was handed to two consumers"
