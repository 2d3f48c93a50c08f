"""Leases with fencing on both stores: one holder at a time, a new token on every new grant."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from mcos.exceptions import LeaseHeld, LeaseLost
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
