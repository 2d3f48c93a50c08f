"""A new instance of an agent gets at once what the instance it replaces claimed and never
acked — not after the claim's visibility (the old one may have lost its network mid-claim)."""

from __future__ import annotations

import pytest

from mcos.client import Calls, Client
from mcos.exceptions import StaleReceipt
from tests.api.conftest import LiveServer
from tests.waiting import wait_until


def test_a_new_fence_releases_the_old_instances_claims(live_server: LiveServer) -> None:
    with live_server.client() as op:
        op.do(Calls.send("gene", "claimed by the instance that vanished"))
        old = op.do(Calls.acquire_lease("gene", "sup-a", "mini", 1))
        with Client(live_server.url, live_server.tokens["gene"], fence=old.fence) as gene_old:
            held = gene_old.do(Calls.inbox(visibility=600)).deliveries
            assert [d.message.body for d in held] == ["claimed by the instance that vanished"]
        # The same holder renewing its grant releases nothing.
        assert op.do(Calls.acquire_lease("gene", "sup-a", "mini", 1)).fence == old.fence
        with Client(live_server.url, live_server.tokens["gene"], fence=old.fence) as gene_old:
            assert gene_old.do(Calls.inbox()).deliveries == []
        wait_until(
            "sup-a's lease to lapse",
            lambda: not any(x.live for x in op.do(Calls.leases()) if x.agent == "gene"),
        )
        new = op.do(Calls.acquire_lease("gene", "sup-b", "vps", 15))
        grant = op.do(Calls.audit(action="lease.granted"))[-1]
        assert grant.detail["released_claims"] == 1
        with Client(live_server.url, live_server.tokens["gene"], fence=new.fence) as gene_new:
            again = gene_new.do(Calls.inbox(visibility=600)).deliveries
            assert [(d.id, d.attempts) for d in again] == [(held[0].id, 2)]
            with pytest.raises(StaleReceipt):  # the vanished instance's receipt no longer acks
                gene_new.do(Calls.ack(held[0].id, held[0].receipt or ""))
            gene_new.do(Calls.ack(again[0].id, again[0].receipt or ""))
