"""Deferral, expiry and dead-letter notification bookkeeping, on both stores.

A deferral ("could not try") gives the claim's attempt back and hides the delivery until its
not-before; a nack ("tried and failed") uses the attempt. The store fixture's policy dead-letters
at 3 attempts (``FAST_POLICY``).
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from mcos.domain.messages import EXPIRED, Delivery, DeliveryState, NewMessage
from mcos.exceptions import InvalidRequest, StaleReceipt
from mcos.store import Store
from tests.waiting import eventually, past

LATER = timedelta(hours=1)


async def claim_one(store: Store, inbox: str = "jarvis") -> Delivery:
    [d] = await store.claim(inbox)
    return d


async def claim_within(store: Store, seconds: float, inbox: str = "jarvis") -> list[Delivery]:
    """Claim until something comes back or ``seconds`` pass (waiting on the store's wake-ups)."""
    deadline = time.monotonic() + seconds
    while True:
        got = await store.claim(inbox)
        if got or time.monotonic() > deadline:
            return got
        await store.wait(inbox, 0.05)


class TestDefer:
    """A deferred claim uses no attempt and waits until its not-before."""

    async def test_many_more_deferrals_than_attempts_never_dead_letter(self, store: Store) -> None:
        """Deferred four times max_attempts times, the delivery is still live with one attempt used
        per claim, then acks normally."""
        await store.send(NewMessage(sender="gene", recipient="jarvis", subject="s"))
        for i in range(4 * store.policy.max_attempts):
            d = await claim_one(store)
            assert d.attempts == 1
            [back] = await store.defer(
                "jarvis", [(d.id, d.receipt or "")], not_before=await store.now(), reason="429"
            )
            assert back.state is DeliveryState.QUEUED
            assert back.attempts == 0
            assert back.deferrals == i + 1
        assert await store.dead_letters() == []
        d = await claim_one(store)
        await store.ack("jarvis", d.id, d.receipt or "")

    async def test_nacks_still_count_after_deferrals(self, store: Store) -> None:
        """Deferrals do not reset the tried-and-failed count: nacks dead-letter at the limit."""
        await store.send(NewMessage(sender="gene", recipient="jarvis"))
        for _ in range(store.policy.max_attempts):
            d = await claim_one(store)
            await store.defer("jarvis", [(d.id, d.receipt or "")], not_before=await store.now(),
                              reason="over budget")  # fmt: skip
            d = await claim_one(store)
            result = await store.nack("jarvis", d.id, d.receipt or "", error="boom",
                                      delay=timedelta(0))  # fmt: skip
        assert result.state is DeliveryState.DEAD
        [dead] = await store.dead_letters("jarvis")
        assert dead.attempts == store.policy.max_attempts
        assert dead.deferrals == store.policy.max_attempts

    async def test_not_before_hides_the_delivery_until_then(self, store: Store) -> None:
        """Deferred an hour ahead, nothing is claimable; deferred 0.3 s ahead, it comes back."""
        await store.send(NewMessage(sender="gene", recipient="jarvis"))
        d = await claim_one(store)
        now = await store.now()
        [back] = await store.defer("jarvis", [(d.id, d.receipt or "")], not_before=now + LATER,
                                   reason="budget")  # fmt: skip
        assert back.visible_at >= now + LATER
        assert back.last_error == "budget"
        assert await store.claim("jarvis") == []
        d2 = await store.send(NewMessage(sender="sentinel", recipient="gene"))
        got = await claim_one(store, "gene")
        assert got.message.id == d2.message.id
        soon = await store.now() + timedelta(seconds=0.3)
        await store.defer("gene", [(got.id, got.receipt or "")], not_before=soon, reason="cool")
        assert await store.claim("gene") == []
        again = await claim_within(store, 10, "gene")
        assert [x.id for x in again] == [got.id]
        assert await store.now() >= soon

    async def test_a_past_not_before_is_claimable_at_once(self, store: Store) -> None:
        """Shutting down hands claims back for now: the next claim takes them."""
        await store.send(NewMessage(sender="gene", recipient="jarvis"))
        d = await claim_one(store)
        past = await store.now() - timedelta(hours=2)
        await store.defer("jarvis", [(d.id, d.receipt or "")], not_before=past, reason="stop")
        again = await claim_one(store)
        assert again.id == d.id
        assert again.attempts == 1

    async def test_batch_is_all_or_none_and_checks_receipts(self, store: Store) -> None:
        """A stale receipt in a batch refuses the whole batch, naming the delivery."""
        for _ in range(2):
            await store.send(NewMessage(sender="gene", recipient="jarvis"))
        a, b = await store.claim("jarvis", limit=2)
        with pytest.raises(StaleReceipt, match=str(b.id)):
            await store.defer("jarvis", [(a.id, a.receipt or ""), (b.id, "forged")],
                              not_before=await store.now(), reason="x")  # fmt: skip
        # a is still claimed by its receipt: acking works, so the batch left it alone
        await store.ack("jarvis", a.id, a.receipt or "")
        await store.ack("jarvis", b.id, b.receipt or "")

    async def test_another_inbox_cannot_defer(self, store: Store) -> None:
        """A receipt is checked against the inbox: sentinel cannot defer jarvis's claim."""
        await store.send(NewMessage(sender="gene", recipient="jarvis"))
        d = await claim_one(store)
        with pytest.raises(Exception, match="no delivery"):
            await store.defer("sentinel", [(d.id, d.receipt or "")],
                              not_before=await store.now(), reason="x")  # fmt: skip

    async def test_too_far_ahead_is_refused(self, store: Store) -> None:
        """A not-before beyond a week is bad input, named as such."""
        await store.send(NewMessage(sender="gene", recipient="jarvis"))
        d = await claim_one(store)
        far = await store.now() + timedelta(days=30)
        with pytest.raises(InvalidRequest, match="not_before"):
            await store.defer("jarvis", [(d.id, d.receipt or "")], not_before=far, reason="x")


class TestExpiry:
    """The sender's optional expiry takes a delivery out of the queue as a dead letter."""

    async def test_an_expired_delivery_is_dead_lettered_not_claimed(self, store: Store) -> None:
        """Past its expiry a queued delivery is never claimed; it is dead with "expired"."""
        now = await store.now()
        await store.send(NewMessage(sender="gene", recipient="jarvis", subject="old",
                                    expires_at=now + timedelta(seconds=0.2)))  # fmt: skip
        await store.send(NewMessage(sender="gene", recipient="jarvis", subject="fresh"))
        await past(store.now, now + timedelta(seconds=0.2))
        got = await store.claim("jarvis", limit=5)
        assert [d.message.subject for d in got] == ["fresh"]
        await store.sweep_dead_letters()
        [dead] = await store.dead_letters("jarvis")
        assert dead.message.subject == "old"
        assert dead.last_error == EXPIRED
        assert dead.expires_at is not None

    async def test_deferred_past_its_expiry_it_is_swept(self, store: Store) -> None:
        """A delivery deferred beyond its expiry is dead-lettered by the sweep, not lost."""
        now = await store.now()
        await store.send(NewMessage(sender="gene", recipient="jarvis",
                                    expires_at=now + timedelta(seconds=0.2)))  # fmt: skip
        d = await claim_one(store)
        await store.defer("jarvis", [(d.id, d.receipt or "")], not_before=now + LATER, reason="x")
        await eventually("the sweep to dead-letter it", store.sweep_dead_letters)
        [dead] = await store.dead_letters("jarvis")
        assert dead.last_error == EXPIRED

    async def test_a_claim_in_progress_is_not_cut_short(self, store: Store) -> None:
        """Past its expiry a held claim can still be acked (the sweep leaves it alone); a nack
        past the expiry dead-letters it as expired instead of retrying."""
        ttl = timedelta(seconds=2)
        for subject in ("acked late", "nacked late"):
            await store.send(NewMessage(sender="gene", recipient="jarvis", subject=subject,
                                        ttl=ttl))  # fmt: skip
        held = {d.message.subject: d for d in await store.claim("jarvis", limit=2)}
        assert len(held) == 2
        expires = held["acked late"].expires_at
        assert expires is not None
        await past(store.now, expires + timedelta(milliseconds=50))
        assert await store.sweep_dead_letters() == 0
        a, b = held["acked late"], held["nacked late"]
        await store.ack("jarvis", a.id, a.receipt or "")
        result = await store.nack("jarvis", b.id, b.receipt or "", error="x", delay=timedelta(0))
        assert result.state is DeliveryState.DEAD
        assert result.last_error == EXPIRED

    async def test_an_expiry_already_past_is_refused(self, store: Store) -> None:
        """A send that could only be dead-lettered at once is bad input, naming the field and,
        in a batch, the item; nothing of the batch is stored."""
        past = await store.now() - timedelta(seconds=1)
        with pytest.raises(InvalidRequest, match=r"expires_at .* has already passed"):
            await store.send(NewMessage(sender="gene", recipient="jarvis", expires_at=past))
        with pytest.raises(InvalidRequest, match=r"messages\[1\]: expires_at"):
            await store.send_many([
                NewMessage(sender="gene", recipient="jarvis"),
                NewMessage(sender="gene", recipient="jarvis", expires_at=past),
            ])  # fmt: skip
        assert await store.claim("jarvis") == []

    async def test_requeue_lifts_the_expiry(self, store: Store) -> None:
        """An operator's requeue of an expired letter makes it claimable (no instant re-death)."""
        now = await store.now()
        await store.send(NewMessage(sender="gene", recipient="jarvis",
                                    expires_at=now + timedelta(seconds=0.1)))  # fmt: skip
        await eventually("the sweep to dead-letter it", store.sweep_dead_letters)
        [dead] = await store.dead_letters("jarvis")
        back = await store.requeue(dead.id)
        assert back.expires_at is None
        d = await claim_one(store)
        assert d.id == dead.id


class TestNotification:
    """Dead letters are kept as "not yet told" until Mission Control has told someone."""

    async def test_unnotified_until_marked_and_again_after_requeue(self, store: Store) -> None:
        """A fresh dead letter is unnotified; marking is once; requeued and dead again, it is
        unnotified again."""
        await store.send(NewMessage(sender="gene", recipient="jarvis"))
        for _ in range(store.policy.max_attempts):
            d = await claim_one(store)
            await store.nack("jarvis", d.id, d.receipt or "", delay=timedelta(0))
        [dead] = await store.unnotified_dead_letters()
        assert dead.id == d.id
        assert await store.mark_dead_letters_notified([d.id]) == [d.id]
        assert await store.mark_dead_letters_notified([d.id]) == []
        assert await store.unnotified_dead_letters() == []
        await store.requeue(d.id)
        for _ in range(store.policy.max_attempts):
            d = await claim_one(store)
            await store.nack("jarvis", d.id, d.receipt or "", delay=timedelta(0))
        assert [x.id for x in await store.unnotified_dead_letters()] == [d.id]

    async def test_lapsed_claims_are_swept_in_every_inbox(self, store: Store) -> None:
        """Claims that lapse on their last attempt are dead-lettered by the sweep even when
        nobody claims that inbox again, and are then waiting to be told."""
        await store.send(NewMessage(sender="gene", recipient="sentinel"))
        short = timedelta(seconds=0.1)
        taken = 0

        async def claimed_every_attempt() -> bool:
            """Claim again each time the last claim lapsed, until every attempt is used."""
            nonlocal taken
            taken += len(await store.claim("sentinel", visibility=short))
            return taken >= store.policy.max_attempts

        await eventually(lambda: f"every attempt claimed (only {taken})", claimed_every_attempt)
        await eventually("the lapsed claim swept", store.sweep_dead_letters)
        [dead] = await store.unnotified_dead_letters()
        assert dead.inbox == "sentinel"
        assert dead.last_error == f"not acknowledged after {store.policy.max_attempts} attempts"
