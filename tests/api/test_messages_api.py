"""The message API through a real server: send, inbox, ack, nack, threads, dead letters."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

import httpx
import pytest

from mcos.api_models import SendRequest
from mcos.client import Calls
from mcos.domain.messages import MessageKind, Priority
from mcos.exceptions import IdempotencyConflict, InvalidRequest, StaleReceipt
from tests.api.conftest import LiveServer, raw
from tests.waiting import eventually, wait_until


class TestSendAndReceive:
    """A message moves from one agent to another."""

    def test_send_claim_ack(self, live_server: LiveServer) -> None:
        """gene sends, jarvis claims it with the right sender, acks, and the inbox is empty."""
        with live_server.client("gene") as gene, live_server.client("jarvis") as jarvis:
            sent = gene.do(Calls.send("jarvis", "disk 91%", subject="disk", kind=MessageKind.ALERT))
            assert sent.created
            assert sent.message.sender == "gene"
            box = jarvis.do(Calls.inbox())
            [d] = box.deliveries
            assert d.message.id == sent.message.id
            assert d.message.sender == "gene"
            jarvis.do(Calls.ack(d.id, d.receipt or ""))
            assert jarvis.do(Calls.inbox()).deliveries == []

    def test_sender_is_the_token_owner(self, live_server: LiveServer) -> None:
        """A body that claims another sender is refused: the server stamps the sender."""
        r = raw(
            live_server,
            "POST",
            "/v1/messages",
            live_server.tokens["gene"],
            json={"to": "jarvis", "sender": "jarvis"},
        )
        assert r.status_code == 403
        assert "the sender of a message is the token's owner" in r.json()["error"]["message"]
        with live_server.client() as op:
            refused = op.do(Calls.audit(action="message.send"))
        assert refused[-1].outcome == "refused"
        assert refused[-1].targets == {"claimed": "jarvis"}

    def test_priority_order(self, live_server: LiveServer) -> None:
        """Urgent messages are claimed before older normal ones."""
        with live_server.client("gene") as gene, live_server.client("jarvis") as jarvis:
            first = gene.do(Calls.send("jarvis", "a")).message.id
            urgent = gene.do(Calls.send("jarvis", "b", priority=Priority.URGENT)).message.id
            ids = [d.message.id for d in jarvis.do(Calls.inbox(limit=5)).deliveries]
            assert ids == [urgent, first]

    def test_topic_fan_out(self, live_server: LiveServer) -> None:
        """A topic message reaches each subscriber's inbox."""
        with live_server.client("gene") as gene:
            assert gene.do(Calls.send("alerts", "x")).deliveries == 3
        for agent in ("jarvis", "sentinel"):
            with live_server.client(agent) as c:
                assert len(c.do(Calls.inbox()).deliveries) == 1
        with live_server.client() as op:
            assert len(op.do(Calls.inbox(inbox="founder")).deliveries) == 1

    def test_batch_ack(self, live_server: LiveServer) -> None:
        """Several deliveries are acked in one call."""
        with live_server.client("gene") as gene, live_server.client("jarvis") as jarvis:
            for i in range(5):
                gene.do(Calls.send("jarvis", str(i)))
            box = jarvis.do(Calls.inbox(limit=5))
            acked = jarvis.do(Calls.ack_many([(d.id, d.receipt or "") for d in box.deliveries]))
            assert acked == 5
            assert jarvis.do(Calls.inbox()).deliveries == []

    def test_stale_receipt_is_409(self, live_server: LiveServer) -> None:
        """An ack with a receipt that does not hold the claim is a 409 stale_receipt."""
        with live_server.client("gene") as gene, live_server.client("jarvis") as jarvis:
            gene.do(Calls.send("jarvis", "x"))
            [d] = jarvis.do(Calls.inbox()).deliveries
            with pytest.raises(StaleReceipt):
                jarvis.do(Calls.ack(d.id, "not-the-receipt"))

    def test_nack_then_dead_letter_then_requeue(self, live_server: LiveServer) -> None:
        """Nacked to exhaustion, a delivery is listed as dead and an operator requeues it."""
        with live_server.client("gene") as gene, live_server.client("jarvis") as jarvis:
            gene.do(Calls.send("jarvis", "poison", subject="poison"))
            for _ in range(3):
                [d] = jarvis.do(Calls.inbox()).deliveries
                jarvis.do(Calls.nack(d.id, d.receipt or "", error="cannot parse", delay_seconds=0))
            assert jarvis.do(Calls.inbox()).deliveries == []
            [dead] = jarvis.do(Calls.dead_letters())
            assert dead.last_error
            with live_server.client() as op:
                op.do(Calls.requeue(dead.id))
            [again] = jarvis.do(Calls.inbox()).deliveries
            assert again.message.subject == "poison"

    def test_thread(self, live_server: LiveServer) -> None:
        """A reply joins the thread, and both parties can read it."""
        with live_server.client("gene") as gene, live_server.client("jarvis") as jarvis:
            root = gene.do(Calls.send("jarvis", "deploy?")).message
            reply = jarvis.do(Calls.send("gene", "yes", reply_to=root.id, kind=MessageKind.REPLY))
            assert reply.message.thread_id == root.id
            assert [m.id for m in gene.do(Calls.thread(root.id))] == [root.id, reply.message.id]


class TestIdempotency:
    """Repeats of an idempotency key are stored once."""

    def test_repeat(self, live_server: LiveServer) -> None:
        """The same key and content answers 200 with the original message."""
        with live_server.client("gene") as gene:
            first = gene.do(Calls.send("jarvis", "x", idempotency_key="k-1"))
            again = gene.do(Calls.send("jarvis", "x", idempotency_key="k-1"))
            assert again.message.id == first.message.id
            assert not again.created
        r = raw(
            live_server,
            "POST",
            "/v1/messages",
            live_server.tokens["gene"],
            json={"to": "jarvis", "body": "x", "idempotency_key": "k-1"},
        )
        assert r.status_code == 200

    def test_conflict(self, live_server: LiveServer) -> None:
        """The same key with other content answers 409 idempotency_conflict."""
        with live_server.client("gene") as gene:
            gene.do(Calls.send("jarvis", "x", idempotency_key="k-2"))
            with pytest.raises(IdempotencyConflict) as err:
                gene.do(Calls.send("jarvis", "y", idempotency_key="k-2"))
            assert err.value.status == 409

    def test_batch_send(self, live_server: LiveServer) -> None:
        """A batch arrives whole and in order; one bad item refuses it all, naming the item."""
        with live_server.client("gene") as gene, live_server.client("jarvis") as jarvis:
            sent = gene.do(
                Calls.send_batch([SendRequest(to="jarvis", body=f"b{i}") for i in range(3)])
            )
            assert [r.message.body for r in sent.results] == ["b0", "b1", "b2"]
            assert all(r.created and r.message.sender == "gene" for r in sent.results)
            got = jarvis.do(Calls.inbox(limit=10)).deliveries
            assert [d.message.body for d in got] == ["b0", "b1", "b2"]
            with pytest.raises(InvalidRequest, match=r"messages\[1\]: unknown recipient"):
                gene.do(Calls.send_batch([SendRequest(to="jarvis"), SendRequest(to="nobody")]))
            jarvis.do(Calls.ack_many([(d.id, d.receipt or "") for d in got]))
            assert jarvis.do(Calls.inbox(limit=10)).deliveries == []

    def test_batch_limits(self, live_server: LiveServer) -> None:
        """An empty batch, or one over 100 messages, is a 422 naming the field."""
        for messages in ([], [{"to": "jarvis"}] * 101):
            r = raw(
                live_server,
                "POST",
                "/v1/messages/batch",
                live_server.tokens["gene"],
                json={"messages": messages},
            )
            assert r.status_code == 422
            assert r.json()["error"]["details"]["fields"][0]["field"] == "messages"


class TestValidation:
    """Bad requests are refused with the field named, in the one error shape."""

    def test_unknown_recipient(self, live_server: LiveServer) -> None:
        """A recipient the fleet file does not declare is a 422 naming it."""
        with live_server.client("gene") as gene, pytest.raises(InvalidRequest, match="nobody"):
            gene.do(Calls.send("nobody", "x"))

    def test_bad_enum(self, live_server: LiveServer) -> None:
        """A priority outside the enum is a 422 naming the field."""
        r = raw(
            live_server,
            "POST",
            "/v1/messages",
            live_server.tokens["gene"],
            json={"to": "jarvis", "priority": "panic"},
        )
        assert r.status_code == 422
        error = r.json()["error"]
        assert error["code"] == "invalid_request"
        assert error["details"]["fields"][0]["field"] == "priority"
        assert "priority" in error["message"]

    def test_oversized_body(self, live_server: LiveServer) -> None:
        """A body over the limit is a 413 before it is read, and nothing is stored."""
        r = raw(
            live_server,
            "POST",
            "/v1/messages",
            live_server.tokens["gene"],
            json={"to": "jarvis", "body": "x" * 100_000},
        )
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "payload_too_large"
        with live_server.client("jarvis") as jarvis:
            assert jarvis.do(Calls.inbox()).deliveries == []

    def test_not_json(self, live_server: LiveServer) -> None:
        """A body that is not JSON is a 422 in the same shape."""
        r = raw(
            live_server,
            "POST",
            "/v1/messages",
            live_server.tokens["gene"],
            content=b"{not json",
            headers={"Content-Type": "application/json"},
        )
        assert r.status_code == 422
        assert r.json()["error"]["code"] == "invalid_request"

    def test_bad_query(self, live_server: LiveServer) -> None:
        """A long-poll beyond 30 s is a 422 naming the parameter."""
        r = raw(live_server, "GET", "/v1/inbox?wait=99", live_server.tokens["gene"])
        assert r.status_code == 422
        assert r.json()["error"]["details"]["fields"][0]["field"] == "query.wait"

    def test_unknown_route(self, live_server: LiveServer) -> None:
        """An unknown path is a 404 in the one error shape."""
        r = raw(live_server, "GET", "/v1/nothing-here", live_server.tokens["gene"])
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "not_found"


class TestLongPoll:
    """A waiting inbox returns promptly when a message arrives."""

    def test_wakes_on_send(self, live_server: LiveServer) -> None:
        """A 10 s long-poll returns within a fraction of a second of a send."""
        result: dict[str, float] = {}

        def wait() -> None:
            with live_server.client("jarvis") as jarvis:
                started = time.monotonic()
                box = jarvis.do(Calls.inbox(wait=10))
                result["took"] = time.monotonic() - started
                result["n"] = len(box.deliveries)

        waiter = threading.Thread(target=wait)
        waiter.start()
        wait_until("jarvis's long-poll waiting for a wake-up", lambda: live_server.parked("jarvis"))
        with live_server.client("gene") as gene:
            gene.do(Calls.send("jarvis", "wake up"))
        waiter.join(15)
        assert result["n"] == 1
        assert result["took"] < 2

    def test_gather_answers_what_arrives_together(self, live_server: LiveServer) -> None:
        """With ``gather``, a woken long-poll waits that long more: two sends, one answer."""
        result: dict[str, list[str]] = {}

        def wait() -> None:
            with live_server.client("jarvis") as jarvis:
                box = jarvis.do(Calls.inbox(wait=20, gather=4))
                result["bodies"] = [d.message.body for d in box.deliveries]

        waiter = threading.Thread(target=wait)
        waiter.start()
        wait_until("jarvis's long-poll waiting for a wake-up", lambda: live_server.parked("jarvis"))
        with live_server.client("gene") as gene:
            gene.do(Calls.send("jarvis", "one"))
            gene.do(Calls.send("jarvis", "two"))
        waiter.join(25)
        assert result["bodies"] == ["one", "two"]

    def test_gather_ends_with_the_wait(self, live_server: LiveServer) -> None:
        """A gather longer than what is left of the wait ends with the wait, with the message."""
        result: dict[str, float] = {}

        def wait() -> None:
            with live_server.client("jarvis") as jarvis:
                started = time.monotonic()
                box = jarvis.do(Calls.inbox(wait=2, gather=5))
                result["took"] = time.monotonic() - started
                result["n"] = len(box.deliveries)

        waiter = threading.Thread(target=wait)
        waiter.start()
        wait_until("jarvis's long-poll waiting for a wake-up", lambda: live_server.parked("jarvis"))
        with live_server.client("gene") as gene:
            gene.do(Calls.send("jarvis", "soon"))
        waiter.join(15)
        assert result["n"] == 1
        assert result["took"] < 4.5  # the 2 s wait, not the 5 s gather

    def test_times_out_empty(self, live_server: LiveServer) -> None:
        """With nothing sent, the long-poll returns empty after its wait."""
        with live_server.client("jarvis") as jarvis:
            started = time.monotonic()
            assert jarvis.do(Calls.inbox(wait=0.5)).deliveries == []
            assert time.monotonic() - started >= 0.45


async def test_a_long_poll_whose_client_hung_up_claims_nothing(live_server: LiveServer) -> None:
    """A stopped agent's abandoned long-poll must not claim (and so hide) the next message."""
    headers = {"Authorization": f"Bearer {live_server.tokens['gene']}"}
    async with httpx.AsyncClient(base_url=live_server.url, headers=headers) as gene:
        waiting = asyncio.create_task(gene.get("/v1/inbox", params={"wait": 20}, timeout=30))
        await eventually("gene's long-poll parked", lambda: live_server.parked("gene"))
        waiting.cancel()  # the client goes away mid-wait; its connection closes
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
    # The server hears the hang-up (http.disconnect) and ends the request, claiming nothing;
    # a claim for nobody would hide the next message for its visibility (30 s).
    # (10 s: ten slices, and half the 20 s wait: a long-poll that missed the hang-up fails here.)
    await eventually(
        "the abandoned long-poll to end",
        lambda: not live_server.requests_in_flight(),
        timeout=10,
    )
    with live_server.client("jarvis") as jarvis:
        jarvis.do(Calls.send("gene", "after the hang-up"))
    with live_server.client("gene") as gene_again:
        got = gene_again.do(Calls.inbox(wait=5))
    assert [d.message.body for d in got.deliveries] == ["after the hang-up"]


async def test_a_long_poll_hung_up_while_gathering_claims_nothing(live_server: LiveServer) -> None:
    """A long-poll woken by a send and waiting out its ``gather`` when its client goes away
    claims nothing: the message is there for the next claim at once, not hidden for 30 s."""
    headers = {"Authorization": f"Bearer {live_server.tokens['gene']}"}
    async with httpx.AsyncClient(base_url=live_server.url, headers=headers) as gene:
        params = {"wait": 20, "gather": 5}
        waiting = asyncio.create_task(gene.get("/v1/inbox", params=params, timeout=30))
        await eventually("gene's long-poll parked", lambda: live_server.parked("gene"))
        with live_server.client("jarvis") as jarvis:
            jarvis.do(Calls.send("gene", "while gathering"))  # wakes it: the 5 s gather begins
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
    await eventually(
        "the abandoned long-poll to end",
        lambda: not live_server.requests_in_flight(),
        timeout=4,  # within the gather: heard as it happens, not when the gather ends
    )
    with live_server.client("gene") as gene_again:
        got = gene_again.do(Calls.inbox())
    assert [d.message.body for d in got.deliveries] == ["while gathering"]
