"""Messages on both stores: send, fan-out, ordering, idempotency, claims, acks, retries, threads."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from pathlib import Path

import pytest

from mcos.domain.messages import DeliveryState, MessageKind, NewMessage, Priority, RecipientKind
from mcos.exceptions import IdempotencyConflict, InvalidRequest, NotFound, StaleReceipt
from mcos.store import Directory, Store, make_store
from mcos.store.protocol import AgentEntry
from tests.store.conftest import DIRECTORY, FAST_POLICY, drop_pg_database, migrated_database
from tests.waiting import eventually, past


def msg(sender: str = "gene", to: str = "jarvis", **kw: object) -> NewMessage:
    return NewMessage(sender=sender, recipient=to, **kw)  # type: ignore[arg-type]


async def waiting_on(store: Store, inbox: str) -> None:
    """Until a long-poll waiter on ``inbox`` is registered (the store's in-process waiters)."""
    waiters = store._waiters._waiting  # type: ignore[attr-defined]
    await eventually(f"a waiter on {inbox}", lambda: waiters.get(inbox))


class TestSend:
    """Sending stores a message and one delivery per inbox."""

    async def test_send_to_agent(self, store: Store) -> None:
        """A message to an agent lands in that agent's inbox, claimable with its content."""
        result = await store.send(msg(subject="disk", body="90% full", kind=MessageKind.ALERT))
        assert result.created
        assert result.deliveries == 1
        assert result.message.recipient_kind is RecipientKind.AGENT
        [d] = await store.claim("jarvis")
        assert d.message.subject == "disk"
        assert d.message.body == "90% full"
        assert d.message.kind is MessageKind.ALERT
        assert d.message.sender == "gene"
        assert d.attempts == 1

    async def test_topic_fans_out(self, store: Store) -> None:
        """Each subscriber of a topic gets its own delivery, the human included."""
        result = await store.send(msg(to="alerts", subject="cpu"))
        assert result.deliveries == 3
        for inbox in ("jarvis", "sentinel", "founder"):
            [d] = await store.claim(inbox)
            assert d.message.id == result.message.id
            await store.ack(inbox, d.id, d.receipt or "")
        assert await store.claim("gene") == []

    async def test_topic_without_subscribers(self, store: Store) -> None:
        """A topic nobody subscribes to stores the message with no deliveries."""
        result = await store.send(msg(to="empty"))
        assert result.deliveries == 0

    async def test_human_recipient(self, store: Store) -> None:
        """A human has an inbox like an agent."""
        await store.send(msg(to="founder", subject="approve?"))
        [d] = await store.claim("founder")
        assert d.message.recipient_kind is RecipientKind.HUMAN

    async def test_unknown_recipient(self, store: Store) -> None:
        """Sending to a name the fleet file does not declare is refused, naming it."""
        with pytest.raises(InvalidRequest, match="unknown recipient 'nobody'"):
            await store.send(msg(to="nobody"))

    async def test_meta_round_trips(self, store: Store) -> None:
        """Metadata comes back as sent."""
        await store.send(msg(meta={"ticket": "OPS-1"}))
        [d] = await store.claim("jarvis")
        assert d.message.meta == {"ticket": "OPS-1"}


class TestOrdering:
    """Urgent first, then first in, first out."""

    async def test_priority_then_fifo(self, store: Store) -> None:
        """Claims return urgent messages first and each priority oldest first."""
        order = [Priority.NORMAL, Priority.LOW, Priority.URGENT, Priority.NORMAL, Priority.URGENT]
        ids = [
            (await store.send(msg(priority=p, body=str(i)))).message.id for i, p in enumerate(order)
        ]
        claimed = await store.claim("jarvis", limit=10)
        assert [d.message.id for d in claimed] == [ids[2], ids[4], ids[0], ids[3], ids[1]]

    async def test_claim_limit(self, store: Store) -> None:
        """A claim takes at most its limit, and the rest stay for the next claim."""
        for i in range(5):
            await store.send(msg(body=str(i)))
        first = await store.claim("jarvis", limit=3)
        second = await store.claim("jarvis", limit=3)
        assert len(first) == 3
        assert len(second) == 2
        assert {d.id for d in first}.isdisjoint({d.id for d in second})


class TestIdempotency:
    """A repeated idempotency key from the same sender stores the message once."""

    async def test_repeat_returns_original(self, store: Store) -> None:
        """The same key and content returns the first message, not a new one."""
        first = await store.send(msg(body="x", idempotency_key="k1"))
        again = await store.send(msg(body="x", idempotency_key="k1"))
        assert not again.created
        assert again.message.id == first.message.id
        assert again.deliveries == 1
        assert len(await store.claim("jarvis", limit=10)) == 1

    async def test_same_key_other_content(self, store: Store) -> None:
        """Reusing a key for different content is a conflict naming the original."""
        first = await store.send(msg(body="x", idempotency_key="k1"))
        with pytest.raises(IdempotencyConflict) as err:
            await store.send(msg(body="y", idempotency_key="k1"))
        assert err.value.details["message_id"] == first.message.id

    async def test_keys_are_per_sender(self, store: Store) -> None:
        """Two senders may use the same key independently."""
        a = await store.send(msg(sender="gene", idempotency_key="k"))
        b = await store.send(msg(sender="sentinel", idempotency_key="k"))
        assert a.message.id != b.message.id
        assert b.created

    async def test_repeat_after_ack(self, store: Store) -> None:
        """A repeat after the delivery was acked still returns the original."""
        first = await store.send(msg(idempotency_key="k"))
        [d] = await store.claim("jarvis")
        await store.ack("jarvis", d.id, d.receipt or "")
        again = await store.send(msg(idempotency_key="k"))
        assert again.message.id == first.message.id
        assert not again.created
        assert await store.claim("jarvis") == []


class TestClaimAndAck:
    """Claims hide a delivery until acked or until the deadline lapses."""

    async def test_claimed_is_hidden(self, store: Store) -> None:
        """A claimed delivery is not handed to a second claimant."""
        await store.send(msg())
        assert len(await store.claim("jarvis")) == 1
        assert await store.claim("jarvis") == []

    async def test_ack_finishes(self, store: Store) -> None:
        """An acked delivery is never offered again, even after its deadline."""
        await store.send(msg())
        [d] = await store.claim("jarvis", visibility=timedelta(milliseconds=50))
        await store.ack("jarvis", d.id, d.receipt or "")
        assert d.deadline is not None
        await past(store.now, d.deadline)
        assert await store.claim("jarvis") == []

    async def test_ack_twice_is_harmless(self, store: Store) -> None:
        """Repeating an ack with the same receipt (a client retry) succeeds."""
        await store.send(msg())
        [d] = await store.claim("jarvis")
        await store.ack("jarvis", d.id, d.receipt or "")
        await store.ack("jarvis", d.id, d.receipt or "")

    async def test_lapsed_claim_is_redelivered(self, store: Store) -> None:
        """When the deadline passes the delivery is offered again, with a new receipt."""
        await store.send(msg())
        [first] = await store.claim("jarvis", visibility=timedelta(milliseconds=50))
        assert first.deadline is not None
        await past(store.now, first.deadline)
        [second] = await store.claim("jarvis")
        assert second.id == first.id
        assert second.attempts == 2
        assert second.receipt != first.receipt
        with pytest.raises(StaleReceipt):
            await store.ack("jarvis", first.id, first.receipt or "")
        await store.ack("jarvis", second.id, second.receipt or "")
        with pytest.raises(StaleReceipt):
            await store.ack("jarvis", first.id, first.receipt or "")

    async def test_ack_wrong_receipt(self, store: Store) -> None:
        """An ack with a receipt that never held the claim is refused."""
        await store.send(msg())
        [d] = await store.claim("jarvis")
        with pytest.raises(StaleReceipt):
            await store.ack("jarvis", d.id, "forged")

    async def test_ack_other_inbox(self, store: Store) -> None:
        """A delivery cannot be acked through another agent's inbox."""
        await store.send(msg())
        [d] = await store.claim("jarvis")
        with pytest.raises(NotFound):
            await store.ack("gene", d.id, d.receipt or "")

    async def test_late_ack_before_reclaim(self, store: Store) -> None:
        """An ack after the deadline but before anyone reclaimed is accepted."""
        await store.send(msg())
        [d] = await store.claim("jarvis", visibility=timedelta(milliseconds=20))
        assert d.deadline is not None
        await past(store.now, d.deadline)
        await store.ack("jarvis", d.id, d.receipt or "")
        assert await store.claim("jarvis") == []


class TestRetriesAndDeadLetters:
    """Nacks back off; exhausted deliveries go to the dead-letter list and can be requeued."""

    async def test_nack_backs_off(self, store: Store) -> None:
        """A nacked delivery is not claimable until its retry delay has passed."""
        await store.send(msg())
        [d] = await store.claim("jarvis")
        back = await store.nack(
            "jarvis", d.id, d.receipt or "", error="busy", delay=timedelta(milliseconds=80)
        )
        assert back.state is DeliveryState.QUEUED
        assert back.last_error == "busy"
        assert await store.claim("jarvis") == []
        await past(store.now, back.visible_at)
        [again] = await store.claim("jarvis")
        assert again.attempts == 2

    async def test_nack_default_delay_uses_policy(self, store: Store) -> None:
        """Without an explicit delay the policy's backoff (1 s after one attempt) applies."""
        await store.send(msg())
        [d] = await store.claim("jarvis")
        back = await store.nack("jarvis", d.id, d.receipt or "")
        now = await store.now()
        assert timedelta(milliseconds=500) < back.visible_at - now <= timedelta(seconds=1)

    async def test_dead_letter_after_max_attempts_by_nack(self, store: Store) -> None:
        """The third nack (policy max_attempts=3) dead-letters the delivery."""
        await store.send(msg(subject="poison"))
        for _ in range(3):
            [d] = await store.claim("jarvis")
            await store.nack("jarvis", d.id, d.receipt or "", delay=timedelta(0))
        assert await store.claim("jarvis") == []
        [dead] = await store.dead_letters("jarvis")
        assert dead.state is DeliveryState.DEAD
        assert dead.message.subject == "poison"
        assert dead.attempts == 3

    async def test_dead_letter_after_lapsed_claims(self, store: Store) -> None:
        """A consumer that keeps dying without acking sends the delivery to dead letters."""
        await store.send(msg())
        for _ in range(3):
            [d] = await store.claim("jarvis", visibility=timedelta(milliseconds=10))
            assert d.deadline is not None
            await past(store.now, d.deadline)
        assert await store.claim("jarvis") == []
        [dead] = await store.dead_letters()
        assert dead.id == d.id
        assert "3 attempts" in (dead.last_error or "")

    async def test_requeue(self, store: Store) -> None:
        """A requeued dead letter is claimable again with a fresh attempt count."""
        await store.send(msg())
        for _ in range(3):
            [d] = await store.claim("jarvis")
            await store.nack("jarvis", d.id, d.receipt or "", delay=timedelta(0))
        [dead] = await store.dead_letters()
        back = await store.requeue(dead.id)
        assert back.state is DeliveryState.QUEUED
        assert back.attempts == 0
        [again] = await store.claim("jarvis")
        assert again.id == dead.id
        assert await store.dead_letters() == []

    async def test_requeue_live_delivery_refused(self, store: Store) -> None:
        """Only dead letters can be requeued."""
        await store.send(msg())
        [d] = await store.claim("jarvis")
        with pytest.raises(NotFound):
            await store.requeue(d.id)

    async def test_inbox_depths(self, store: Store) -> None:
        """Depth counts queued, claimed and dead deliveries per inbox."""
        for _ in range(3):
            await store.send(msg())
        await store.claim("jarvis")
        depths = {d.inbox: d for d in await store.inbox_depths(["jarvis", "gene"])}
        assert (depths["jarvis"].queued, depths["jarvis"].claimed) == (2, 1)
        assert (depths["gene"].queued, depths["gene"].claimed) == (0, 0)


class TestThreads:
    """Replies join the thread of the message they answer."""

    async def test_reply_joins_thread(self, store: Store) -> None:
        """A reply and a reply to the reply share the root's thread id."""
        root = (await store.send(msg(subject="deploy?"))).message
        assert root.thread_id == root.id
        reply = (
            await store.send(
                msg(sender="jarvis", to="gene", reply_to=root.id, kind=MessageKind.REPLY)
            )
        ).message
        again = (await store.send(msg(reply_to=reply.id))).message
        assert reply.thread_id == root.id
        assert again.thread_id == root.id
        assert [m.id for m in await store.thread(root.id)] == [root.id, reply.id, again.id]

    async def test_reply_to_unknown(self, store: Store) -> None:
        """Replying to a message that does not exist is refused, naming the field."""
        with pytest.raises(InvalidRequest) as err:
            await store.send(msg(reply_to=999_999))
        assert err.value.details["field"] == "reply_to"


class TestSendMany:
    """A batch of sends is one transaction: all stored in order, or none."""

    async def test_batch_in_order(self, store: Store) -> None:
        """Every message of a batch is stored and delivered, in the batch's order."""
        results = await store.send_many(
            [msg(subject=f"n{i}") for i in range(5)] + [msg(to="alerts", subject="fan")]
        )
        assert [r.deliveries for r in results] == [1] * 5 + [3]
        ids = [r.message.id for r in results]
        assert ids == sorted(ids)
        got = await store.claim("jarvis", limit=10)
        assert [d.message.subject for d in got] == ["n0", "n1", "n2", "n3", "n4", "fan"]

    async def test_bad_item_stores_nothing(self, store: Store) -> None:
        """One unknown recipient refuses the whole batch and names the item."""
        with pytest.raises(InvalidRequest) as err:
            await store.send_many([msg(subject="ok"), msg(to="nobody"), msg(subject="ok2")])
        assert err.value.message.startswith("messages[1]: unknown recipient 'nobody'")
        assert err.value.details["field"] == "messages[1].recipient"
        assert await store.claim("jarvis", limit=10) == []

    async def test_repeats_within_and_across_batches(self, store: Store) -> None:
        """An idempotency key repeated in the batch or later returns the original."""
        first, again = await store.send_many(
            [msg(idempotency_key="k", body="x"), msg(idempotency_key="k", body="x")]
        )
        assert first.created
        assert not again.created
        assert again.message.id == first.message.id
        [later] = await store.send_many([msg(idempotency_key="k", body="x")])
        assert later.message.id == first.message.id
        assert not later.created
        with pytest.raises(IdempotencyConflict):
            await store.send_many([msg(subject="fine"), msg(idempotency_key="k", body="y")])
        assert len(await store.claim("jarvis", limit=10)) == 1

    async def test_reply_in_batch(self, store: Store) -> None:
        """A reply in a batch joins its parent's thread; a missing parent names the item."""
        root = (await store.send(msg())).message
        [reply] = await store.send_many([msg(sender="jarvis", to="gene", reply_to=root.id)])
        assert reply.message.thread_id == root.id
        with pytest.raises(InvalidRequest) as err:
            await store.send_many([msg(), msg(reply_to=999_999)])
        assert err.value.details["field"] == "messages[1].reply_to"

    async def test_empty_batch(self, store: Store) -> None:
        """An empty batch stores nothing and says so."""
        assert await store.send_many([]) == []


class TestWait:
    """Long-poll wake-ups."""

    async def test_send_wakes_waiter(self, store: Store) -> None:
        """A waiter on an inbox wakes when a message is sent to it."""
        waiter = asyncio.create_task(store.wait("jarvis", 5), name="waiter")
        await waiting_on(store, "jarvis")
        await store.send(msg())
        assert await asyncio.wait_for(waiter, 2)

    async def test_wait_times_out(self, store: Store) -> None:
        """With nothing sent, a wait returns False after its timeout."""
        assert not await store.wait("jarvis", 0.05)

    async def test_other_inbox_does_not_wake(self, store: Store) -> None:
        """A send to another inbox does not wake this one's waiter."""
        waiter = asyncio.create_task(store.wait("gene", 0.3), name="waiter")
        await waiting_on(store, "gene")
        await store.send(msg(to="jarvis"))
        assert not await waiter


class TestDirectory:
    """The directory follows the fleet file."""

    async def test_agents_listed(self, store: Store) -> None:
        """Agents come back with role, host and reports_to."""
        agents = {a.name: a for a in await store.list_agents()}
        assert set(agents) == {"jarvis", "gene", "sentinel"}
        assert agents["gene"].reports_to == "jarvis"

    async def test_removed_agent_is_no_recipient(self, store: Store) -> None:
        """An agent removed from the fleet file can no longer be sent to."""
        from tests.store.conftest import DIRECTORY

        smaller = type(DIRECTORY)(
            agents=[a for a in DIRECTORY.agents if a.name != "gene"],
            humans=DIRECTORY.humans,
            topics=DIRECTORY.topics,
        )
        await store.sync_directory(smaller)
        assert await store.recipient_kind("gene") is None
        assert await store.recipient_kind("alerts") is RecipientKind.TOPIC
        with pytest.raises(InvalidRequest):
            await store.send(msg(to="gene"))

    async def test_subscriptions(self, store: Store) -> None:
        """A subscriber's topics are listed."""
        assert await store.subscriptions("sentinel") == ["alerts"]

    async def test_touch(self, store: Store) -> None:
        """Touching an agent records when it was last seen, on the server's clock."""
        await store.touch_agent("gene")
        now = await store.now()
        agents = {a.name: a for a in await store.list_agents()}
        seen = agents["gene"].last_seen_at
        assert seen is not None
        assert abs((now - seen).total_seconds()) < 5


@pytest.mark.postgres
async def test_a_send_wakes_the_other_server_and_not_its_own_echo(tmp_path: Path) -> None:
    """Two Mission Controls on one PostgreSQL: a send on one wakes a long-poll on the other
    (NOTIFY), while the sender's own listener skips its echo — before, the echo woke every
    local waiter of the inbox a second time, into a claim that found nothing."""
    url = migrated_database("postgres", tmp_path)
    one, two = make_store(url, FAST_POLICY), make_store(url, FAST_POLICY)
    try:
        for s in (one, two):
            await s.open()
        await one.sync_directory(DIRECTORY)
        with two.armed("jarvis") as remote:
            await one.send(msg(body="across servers"))  # its NOTIFY rides in its own commit
            await asyncio.wait_for(remote, 10)
        # A batch wakes one's own waiters in process, at once; its NOTIFY leaves from the
        # notifier task, which runs only once this test yields: these are armed before it.
        await one.send_many([msg(body="local"), msg(body="local too")])
        with one.armed("jarvis") as echo, two.armed("jarvis") as remote:
            await asyncio.wait_for(remote, 10)
            # NOTIFYs reach a listener in commit order: once one's listener has two's
            # later NOTIFY, it has handled the echo of its own.
            with one.armed("gene") as later:
                await two.send(msg(sender="jarvis", to="gene", body="a later NOTIFY"))
                await asyncio.wait_for(later, 10)
            assert not echo.done(), "the sender's own NOTIFY woke its waiter again"
    finally:
        for s in (one, two):
            await s.close()
        drop_pg_database(url)


def workers(count: int, length: int = 20) -> tuple[list[str], Directory]:
    """``count`` more agents, named ``length`` characters or more, on a topic ``everyone``."""
    names = [f"worker-{i:03d}".ljust(length, "x") for i in range(count)]
    directory = Directory(
        agents=[*DIRECTORY.agents, *(AgentEntry(name, "worker", "local") for name in names)],
        humans=DIRECTORY.humans,
        topics={**DIRECTORY.topics, "everyone": names},
    )
    return names, directory


@pytest.mark.postgres
async def test_every_send_of_a_burst_wakes_the_other_server(tmp_path: Path) -> None:
    """Sends close together share NOTIFYs: one finding a NOTIFY due carries the wake-ups
    pending since the last in its own commit, and the notifier sends what none carried.
    Whichever way each went, every inbox woken on the sending server wakes on the other
    (a burst of sends to distinct inboxes, long enough to span many NOTIFY intervals)."""
    url = migrated_database("postgres", tmp_path)
    one, two = make_store(url, FAST_POLICY), make_store(url, FAST_POLICY)
    names, directory = workers(200)
    try:
        for s in (one, two):
            await s.open()
        await one.sync_directory(directory)

        async def chain(part: list[str]) -> None:
            for name in part:
                await one.send(msg(to=name))

        with contextlib.ExitStack() as stack:
            woken = {name: stack.enter_context(two.armed(name)) for name in names}
            await asyncio.gather(*(chain(names[i::4]) for i in range(4)))
            await asyncio.wait(woken.values(), timeout=10)
            missed = [name for name, future in woken.items() if not future.done()]
            assert not missed, f"{len(missed)} of {len(names)} not woken: {missed[:5]}"
    finally:
        for s in (one, two):
            await s.close()
        drop_pg_database(url)


@pytest.mark.postgres
async def test_a_fan_out_past_the_notify_limit_still_wakes_the_other_server(
    tmp_path: Path,
) -> None:
    """A send to a topic whose subscribers' names pass NOTIFY's 8000-byte payload cannot
    carry its wake-ups in its commit; the notifier sends them in several NOTIFYs."""
    url = migrated_database("postgres", tmp_path)
    one, two = make_store(url, FAST_POLICY), make_store(url, FAST_POLICY)
    many, directory = workers(200, length=50)
    try:
        for s in (one, two):
            await s.open()
        await one.sync_directory(directory)
        with contextlib.ExitStack() as stack:
            woken = [stack.enter_context(two.armed(name)) for name in many]
            result = await one.send(msg(to="everyone"))
            assert result.deliveries == len(many)
            await asyncio.wait_for(asyncio.gather(*woken), 10)
    finally:
        for s in (one, two):
            await s.close()
        drop_pg_database(url)


class TestConcurrentSends:
    """Many agents sending one message each at the same moment: on PostgreSQL the sends that
    arrive while others run go in one transaction (``mcos.store.coalesce``). Each sender must
    get exactly the answer it would get alone — its own error and nobody else's — and each
    message must be stored once."""

    @pytest.mark.parametrize("seed", [1, 2, 3])
    async def test_each_sender_gets_its_own_answer_and_each_message_is_stored_once(
        self, store: Store, seed: int
    ) -> None:
        import random

        from mcos.domain.leases import FenceGuard
        from mcos.exceptions import Fenced

        old = await store.acquire_lease("sentinel", "sup-a", "mini", timedelta(milliseconds=50))
        await past(store.now, old.expires_at)
        await store.acquire_lease("sentinel", "sup-b", "vps", timedelta(minutes=5))
        stale = FenceGuard("sentinel", old.fence)
        first = await store.send(msg(body="original", idempotency_key=f"k{seed}"))

        # (what is sent, its guard, what it must come back as)
        cases: list[tuple[NewMessage, FenceGuard | None, str]] = []
        for i in range(40):
            cases.append((msg(body=f"plain {i}"), None, "created"))
        for i in range(8):
            cases.append((msg(to="nobody", body=f"lost {i}"), None, "InvalidRequest"))
            cases.append((msg(body=f"orphan {i}", reply_to=10**9 + i), None, "InvalidRequest"))
            cases.append((msg(sender="sentinel", body=f"fenced {i}"), stale, "Fenced"))
            cases.append((msg(to="alerts", body=f"fan-out {i}"), None, "created"))
        for _ in range(4):  # the key again, as its first send: the original comes back
            cases.append((msg(body="original", idempotency_key=f"k{seed}"), None, "repeat"))
            cases.append(  # the key again with other content: refused
                (msg(body="changed", idempotency_key=f"k{seed}"), None, "IdempotencyConflict")
            )
        if store.dialect == "postgres":  # text PostgreSQL cannot hold: its whole batch fails
            cases += [(msg(body=f"nul\x00{i}"), None, "StoreError") for i in range(3)]
        random.Random(seed).shuffle(cases)

        outcomes = await asyncio.gather(
            *(store.send(m, guard=g) for m, g, _ in cases), return_exceptions=True
        )

        for (sent, _, expected), got in zip(cases, outcomes, strict=True):
            if expected == "created":
                assert not isinstance(got, BaseException), (sent.body, got)
                assert got.created
                assert got.message.body == sent.body
                assert got.deliveries == (3 if sent.recipient == "alerts" else 1)
            elif expected == "repeat":
                assert not isinstance(got, BaseException), (sent.body, got)
                assert not got.created
                assert got.message.id == first.message.id
            else:
                assert type(got).__name__ == expected, (sent.body, got)
        assert Fenced.__name__ in {e for *_, e in cases}
        claimed = await store.claim("jarvis", limit=500)
        bodies = sorted(d.message.body for d in claimed)
        wanted = [m.body for m, _, e in cases if e == "created"]  # jarvis subscribes to alerts
        assert bodies == sorted([*wanted, "original"])
        for inbox in ("sentinel", "founder"):  # each fan-out once to each other subscriber
            got_bodies = sorted(d.message.body for d in await store.claim(inbox, limit=500))
            assert got_bodies == sorted(f"fan-out {i}" for i in range(8))
        if store.dialect == "postgres":  # the test must have run sends together
            assert store._sends.batched > 0  # type: ignore[attr-defined]


@pytest.mark.postgres
async def test_a_claim_commits_without_waiting_for_the_disk_and_a_send_waits(
    tmp_path: Path,
) -> None:
    """The claim statement turns ``synchronous_commit`` off for its own transaction (a claim is
    soft state: forgotten in a crash, the delivery is offered again), as a NOTIFY of its own
    does, and only for them: a send's
    commit, what must never be lost, still waits for the WAL to reach the disk."""
    import psycopg
    from psycopg.rows import dict_row

    from mcos.store.postgres import Q

    url = migrated_database("postgres", tmp_path)
    store = make_store(url, FAST_POLICY)
    try:
        await store.open()
        await store.sync_directory(DIRECTORY)
        await store.send(msg(body="soon claimed"))
        params = {"inbox": "jarvis", "limit": 1, "hold": timedelta(seconds=30), "max_attempts": 5}
        async with await psycopg.AsyncConnection.connect(url, row_factory=dict_row) as conn:
            # In a transaction block of our own, the setting the statement made is visible.
            assert (await (await conn.execute("SHOW synchronous_commit")).fetchone()) == {
                "synchronous_commit": "on"
            }
            rows = await (await conn.execute(Q["claim"], params)).fetchall()
            assert [r["body"] for r in rows] == ["soon claimed"]
            shown = await (await conn.execute("SHOW synchronous_commit")).fetchone()
            assert shown == {"synchronous_commit": "off"}
            await conn.commit()
            shown = await (await conn.execute("SHOW synchronous_commit")).fetchone()
            assert shown == {"synchronous_commit": "on"}, "it outlived its transaction"
            await conn.rollback()
            # A NOTIFY no send carried is soft too: a crash cuts the listeners, which wake all.
            await conn.execute(Q["notify_soft"], {"channel": "mcos_test", "payload": "x"})
            shown = await (await conn.execute("SHOW synchronous_commit")).fetchone()
            assert shown == {"synchronous_commit": "off"}
            await conn.rollback()
            for query in ("message_send",):  # the writes that must be durable leave it alone
                assert "synchronous_commit" not in Q[query]
    finally:
        await store.close()
        drop_pg_database(url)


@pytest.mark.postgres
async def test_a_server_alone_sends_no_notify_until_another_says_hello(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Mission Control alone on its database wakes its own long-polls in process and sends
    no NOTIFY (each cost its commit the notification queue's lock, and its listener the echo);
    once another server's hello is heard, its sends wake that server's long-polls again."""
    import psycopg

    from mcos.store import postgres

    # Two's hellos every 0.1 s keep it counted for 1.5 s: a loaded machine's stall of half a
    # second (0.5 s here before) made one think itself alone again and send no NOTIFY.
    monkeypatch.setattr(postgres, "PEERS_FOR", 1.5)
    monkeypatch.setattr(postgres, "HELLO_EVERY", 0.1)
    url = migrated_database("postgres", tmp_path)
    one = make_store(url, FAST_POLICY)
    two = make_store(url, FAST_POLICY)
    try:
        await one.open()
        await one.sync_directory(DIRECTORY)
        origin = one._origin  # type: ignore[attr-defined]
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as spy:
            await spy.execute(f"LISTEN {postgres.CHANNEL}")
            await eventually("one sure it is alone", lambda: not one._others_listen())  # type: ignore[attr-defined]
            with one.armed("jarvis") as local:
                await one.send(msg(body="alone"))
                assert local.done(), "its own long-poll is woken in process"
            await eventually("nothing pending", lambda: not one._pending)  # type: ignore[attr-defined]
            # NOTIFYs arrive in commit order: all that one's send sent comes before this one
            # (its own origin, so one's listener ignores it rather than take it for a server).
            await spy.execute("SELECT pg_notify(%s, %s)", (postgres.CHANNEL, f"{origin}:end"))
            heard: list[str] = []
            async for note in spy.notifies(timeout=10):
                heard.append(note.payload)
                if note.payload == f"{origin}:end":
                    break
            assert heard[-1] == f"{origin}:end"
            assert all(p == f"{origin}:" for p in heard[:-1]), f"a NOTIFY naming inboxes: {heard}"

            await two.open()
            await eventually("one hears two", one._others_listen)  # type: ignore[attr-defined]
            with two.armed("jarvis") as remote:
                await one.send(msg(body="two listens now"))
                await asyncio.wait_for(remote, 10)
    finally:
        for s in (one, two):
            await s.close()
        drop_pg_database(url)


@pytest.mark.postgres
async def test_a_server_heard_again_after_a_silence_is_woken_for_what_it_missed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server counted gone (no hello within ``PEERS_FOR``: stalled, or its hello late) gets
    no NOTIFY for the sends made meanwhile; heard again, it is asked to wake every long-poll,
    which then finds what was sent instead of waiting out its timeout."""
    import psycopg

    from mcos.store import postgres

    monkeypatch.setattr(postgres, "HELLO_EVERY", 3600.0)  # hellos at start and to newcomers only
    url = migrated_database("postgres", tmp_path)
    one = make_store(url, FAST_POLICY)
    two = make_store(url, FAST_POLICY)
    try:
        await one.open()
        await one.sync_directory(DIRECTORY)
        await two.open()
        first, second = one._origin, two._origin  # type: ignore[attr-defined]
        await eventually(
            "each to hear the other",
            lambda: second in one._peers and first in two._peers,  # type: ignore[attr-defined]
        )
        one._peers[second] -= postgres.PEERS_FOR  # type: ignore[attr-defined]  # two fell silent
        one._listening_since -= postgres.PEERS_FOR  # type: ignore[attr-defined]  # one is sure
        assert not one._others_listen()  # type: ignore[attr-defined]
        with two.armed("jarvis") as remote:
            await one.send(msg(body="while two was silent"))
            assert not remote.done()  # no NOTIFY went out: two's long-poll heard nothing
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as spy:
                await spy.execute("SELECT pg_notify(%s, %s)", (postgres.CHANNEL, f"{second}:"))
            await asyncio.wait_for(remote, 10)  # two's hello, back: one asks it to wake all
    finally:
        for s in (one, two):
            await s.close()
        drop_pg_database(url)
