"""A consumer killed with SIGKILL after claiming: the message comes back and is acked once."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from mcos.domain.messages import NewMessage
from mcos.exceptions import StaleReceipt
from mcos.store import Store
from tests.store.raw import execute_raw

ROOT = Path(__file__).resolve().parents[2]


class TestKilledConsumer:
    """At-least-once delivery survives a consumer dying mid-claim."""

    async def test_sigkill_after_claim(self, store: Store, store_url: str) -> None:
        """Redelivered after the deadline with attempt 2, acked exactly once."""
        sent = await store.send(NewMessage("gene", "jarvis", body="do the thing"))
        proc = subprocess.Popen(  # noqa: ASYNC220 (a real, separate consumer process)
            [sys.executable, str(ROOT / "tests/store/consumer_proc.py"), store_url],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        try:
            assert proc.stdout is not None
            line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)
            old_id, old_receipt = line.split()
        finally:
            proc.kill()
            proc.wait(10)
        assert proc.returncode == -9
        assert await store.claim("jarvis") == []  # still held by the dead consumer's claim
        again = []
        for _ in range(100):  # bounded: the claim lapses after 1 s
            again = await store.claim("jarvis")
            if again:
                break
            await store.wait("jarvis", 0.05)
        [d] = again
        assert d.id == int(old_id)
        assert d.message.id == sent.message.id
        assert d.attempts == 2
        with pytest.raises(StaleReceipt):
            await store.ack("jarvis", d.id, old_receipt)
        await store.ack("jarvis", d.id, d.receipt or "")
        await store.ack("jarvis", d.id, d.receipt or "")  # a retried ack is harmless
        assert await store.claim("jarvis") == []
        history = await execute_raw(
            store_url,
            "SELECT count(*) FROM delivery_history WHERE message_id = ?",
            (sent.message.id,),
        )
        assert history[0][0] == 1
