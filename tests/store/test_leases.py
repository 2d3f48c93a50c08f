"""Leases with fencing on both stores: one holder at a time, a new token on every new grant."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from mcos.domain.leases import FenceGuard, Lease
from mcos.domain.messages import NewMessage
from mcos.exceptions import Fenced, LeaseHeld, LeaseLost
from mcos.store import Store
from tests.waiting import past

TTL = timedelta(seconds=15)
SHORT = timedelta(milliseconds=300)


class TestLeases:
    """Acquire, renew, expire, release."""

    async def test_first_grant_and_a_second_holder_refused(self, store: Store) -> None:
        lease = await store.acquire_lease("gene", "sup-a", "mini", TTL)
        assert (lease.holder, lease.host, lease.fence) == ("sup-a", "mini", 1)
        with pytest.raises(LeaseHeld) as refused:
            await store.acquire_lease("gene", "sup-b", "vps", TTL)
        assert "held by sup-a on host mini" in refused.value.message
        assert refused.value.details["fence"] == 1

    async def test_the_holder_acquiring_again_keeps_its_token(self, store: Store) -> None:
        first = await store.acquire_lease("gene", "sup-a", "mini", TTL)
        again = await store.acquire_lease("gene", "sup-a", "mini", TTL)
        assert again.fence == first.fence
        assert again.expires_at >= first.expires_at

    async def test_renew_extends_and_a_wrong_token_is_lost(self, store: Store) -> None:
        lease = await store.acquire_lease("gene", "sup-a", "mini", TTL)
        renewed = await store.renew_lease("gene", "sup-a", lease.fence, TTL)
        assert renewed.expires_at >= lease.expires_at
        assert renewed.acquired_at == lease.acquired_at
        with pytest.raises(LeaseLost):
            await store.renew_lease("gene", "sup-a", lease.fence + 1, TTL)
        with pytest.raises(LeaseLost, match="no lease was granted"):
            await store.renew_lease("jarvis", "sup-a", 1, TTL)

    async def test_after_expiry_another_holder_gets_a_newer_token(self, store: Store) -> None:
        old = await store.acquire_lease("gene", "sup-a", "mini", SHORT)
        await past(store.now, old.expires_at)
        new = await store.acquire_lease("gene", "sup-b", "vps", TTL)
        assert new.fence == old.fence + 1
        with pytest.raises(LeaseLost, match="now belongs to sup-b"):
            await store.renew_lease("gene", "sup-a", old.fence, TTL)

    async def test_a_late_renewal_is_lost_even_if_nobody_took_over(self, store: Store) -> None:
        old = await store.acquire_lease("gene", "sup-a", "mini", SHORT)
        await past(store.now, old.expires_at)
        with pytest.raises(LeaseLost, match="expired"):
            await store.renew_lease("gene", "sup-a", old.fence, TTL)

    async def test_release_frees_the_agent_at_once(self, store: Store) -> None:
        lease = await store.acquire_lease("gene", "sup-a", "mini", TTL)
        assert await store.release_lease("gene", "sup-a", lease.fence)
        assert not await store.release_lease("gene", "sup-a", lease.fence)
        taken = await store.acquire_lease("gene", "sup-b", "vps", TTL)
        assert taken.fence == 2
        assert [x.agent for x in await store.leases()] == ["gene"]
        current = await store.lease("gene")
        assert current is not None
        assert current.holder == "sup-b"

    async def test_concurrent_acquires_have_one_winner(self, store: Store) -> None:
        async def try_(holder: str) -> bool:
            try:
                await store.acquire_lease("sentinel", holder, "h", TTL)
            except LeaseHeld:
                return False
            return True

        won = await asyncio.gather(*(try_(f"sup-{i}") for i in range(10)))
        assert sum(won) == 1
        current = await store.lease("sentinel")
        assert current is not None
        assert current.fence == 1


class TestBatchRenewal:
    """Every lease of a supervisor renewed in one call, each exactly as a single renewal."""

    async def test_each_lease_answered_in_order_and_a_fenced_out_one_is_lost(
        self, store: Store
    ) -> None:
        gene = await store.acquire_lease("gene", "sup-a", "mini", TTL)
        jarvis = await store.acquire_lease("jarvis", "sup-a", "mini", SHORT)
        await past(store.now, jarvis.expires_at)
        taken = await store.acquire_lease("jarvis", "sup-b", "vps", TTL)  # sup-a fenced out
        sentinel = await store.acquire_lease("sentinel", "sup-a", "mini", TTL)
        out = await store.renew_leases(
            "sup-a",
            [("sentinel", sentinel.fence), ("jarvis", jarvis.fence), ("gene", gene.fence)],
            timedelta(seconds=60),
        )
        assert [type(x) for x in out] == [Lease, LeaseLost, Lease]
        assert isinstance(out[0], Lease)
        assert isinstance(out[1], LeaseLost)
        assert isinstance(out[2], Lease)
        assert (out[0].agent, out[2].agent) == ("sentinel", "gene")
        assert out[2].expires_at > gene.expires_at
        assert out[2].acquired_at == gene.acquired_at
        assert out[2].fence == gene.fence
        assert "now belongs to sup-b" in out[1].message
        current = await store.lease("jarvis")
        assert current == taken  # the fenced-out holder's batch left the new grant alone

    async def test_a_wrong_fence_an_expired_lease_and_an_unknown_agent_are_lost(
        self, store: Store
    ) -> None:
        gene = await store.acquire_lease("gene", "sup-a", "mini", TTL)
        late = await store.acquire_lease("jarvis", "sup-a", "mini", SHORT)
        await past(store.now, late.expires_at)
        out = await store.renew_leases(
            "sup-a", [("gene", gene.fence + 1), ("jarvis", late.fence), ("nobody", 1)], TTL
        )
        assert all(isinstance(x, LeaseLost) for x in out)
        messages = [x.message for x in out if isinstance(x, LeaseLost)]
        assert "now belongs to sup-a (fence 1)" in messages[0]
        assert "expired" in messages[1]
        assert "no lease was granted" in messages[2]
        current = await store.lease("gene")
        assert current == gene  # a refused renewal changed nothing

    async def test_same_as_single_renewal(self, store: Store) -> None:
        """The batch and the single renewal agree on the same lease."""
        a = await store.acquire_lease("gene", "sup-a", "mini", TTL)
        single = await store.renew_lease("gene", "sup-a", a.fence, TTL)
        (batched,) = await store.renew_leases("sup-a", [("gene", a.fence)], TTL)
        assert isinstance(batched, Lease)
        assert (batched.holder, batched.host, batched.fence) == (
            single.holder, single.host, single.fence,
        )  # fmt: skip
        assert batched.renewed_at >= single.renewed_at


class TestGuardedWrites:
    """A send or an ack carrying a :class:`FenceGuard` is refused by the store itself, in the
    statement or transaction that writes, once the agent's lease has moved past the fence —
    and stores nothing. Mission Control no longer reads the lease before these writes."""

    @staticmethod
    def note(body: str, sender: str = "gene") -> NewMessage:
        return NewMessage(sender=sender, recipient="jarvis", body=body)

    async def test_a_stale_fence_sends_nothing_single_or_batched(self, store: Store) -> None:
        old = await store.acquire_lease("gene", "sup-a", "mini", SHORT)
        await past(store.now, old.expires_at)
        new = await store.acquire_lease("gene", "sup-b", "vps", TTL)
        stale = FenceGuard("gene", old.fence)
        with pytest.raises(Fenced, match="sup-b on vps runs it now") as refused:
            await store.send(self.note("from the old instance"), guard=stale)
        assert refused.value.details == {"presented": old.fence, "current": new.fence}
        with pytest.raises(Fenced):
            await store.send_many([self.note("a"), self.note("b")], guard=stale)
        with pytest.raises(Fenced):  # the explained path (a key) checks first too
            await store.send(NewMessage(sender="gene", recipient="jarvis", body="k",
                                        idempotency_key="k1"), guard=stale)  # fmt: skip
        await store.send(self.note("from the new instance"), guard=FenceGuard("gene", new.fence))
        got = await store.claim("jarvis", limit=10)
        assert [d.message.body for d in got] == ["from the new instance"]

    async def test_no_fence_once_leased_is_refused_and_unleased_agents_pass(
        self, store: Store
    ) -> None:
        await store.send(self.note("never leased yet"), guard=FenceGuard("gene", None))
        lease = await store.acquire_lease("gene", "sup-a", "mini", TTL)
        with pytest.raises(Fenced, match="X-Mcos-Fence missing") as refused:
            await store.send(self.note("from outside"), guard=FenceGuard("gene", None))
        assert refused.value.details["missing"] == "X-Mcos-Fence"
        await store.send(self.note("the instance"), guard=FenceGuard("gene", lease.fence))
        await store.send(self.note("unguarded: an operator's"), guard=None)
        got = await store.claim("jarvis", limit=10)
        assert [d.message.body for d in got] == [
            "never leased yet", "the instance", "unguarded: an operator's"
        ]  # fmt: skip

    async def test_a_stale_ack_acks_nothing(self, store: Store) -> None:
        old = await store.acquire_lease("jarvis", "sup-a", "mini", SHORT)
        await store.send_many([self.note("one"), self.note("two")])
        got = await store.claim("jarvis", limit=10, visibility=timedelta(minutes=5))
        items = [(d.id, d.receipt) for d in got]
        await past(store.now, old.expires_at)
        new = await store.acquire_lease("jarvis", "sup-b", "vps", TTL)
        with pytest.raises(Fenced):
            await store.ack_many("jarvis", items, guard=FenceGuard("jarvis", old.fence))
        with pytest.raises(Fenced):
            await store.ack("jarvis", items[0][0], items[0][1], guard=FenceGuard("jarvis", None))
        depths = {d.inbox: d for d in await store.inbox_depths()}
        assert depths["jarvis"].claimed == 2  # still held, not acked
        await store.ack_many("jarvis", items, guard=FenceGuard("jarvis", new.fence))
        assert await store.claim("jarvis", limit=10) == []
