"""Deferral, expiry and dead-letter notification through a real server (both stores).

Dead letters are never silent: the recipient's manager gets a message from Mission Control and
the fleet's humans are paged (here on Mission Control's own mock channel), once per burst.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from mcos.channels.mock import MockChannel
from mcos.client import Calls, Client
from mcos.domain.paging import PageRoute
from mcos.exceptions import InvalidRequest, McosError, StaleReceipt
from mcos.server.context import ChannelBinding
from tests.api.conftest import LiveServer, raw, serve
from tests.store.conftest import drop_pg_database, migrated_database
from tests.waiting import wait_until


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def paged(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[LiveServer, Path]]:
    """Mission Control paging the founder on its own mock channel, sweeping every 0.2 s."""
    url = migrated_database(request.param, tmp_path)
    pager = tmp_path / "pager"
    try:
        with serve(
            url,
            tmp_path,
            channels={"pager": ChannelBinding("mock", None)},
            page_routes={"founder": (PageRoute("pager", "mock", "founder"),)},
            own_channels={"pager": MockChannel("pager", pager)},
            sweep_seconds=0.2,
        ) as server:
            yield server, pager / "outbox" / "posts.jsonl"
    finally:
        if request.param == "postgres":
            drop_pg_database(url)


def pages(outbox: Path) -> list[dict[str, str]]:
    if not outbox.exists():
        return []
    return [json.loads(line) for line in outbox.read_text().splitlines() if line.strip()]


def notices(client: Client) -> list[str]:
    """Subjects of Mission Control's dead-letter notices in the caller's inbox (acked)."""
    got = client.do(Calls.inbox(limit=50)).deliveries
    if got:
        client.do(Calls.ack_many([(d.id, d.receipt or "") for d in got]))
    return [
        d.message.subject
        for d in got
        if d.message.sender == "mission-control" and "dead_letters" in d.message.meta
    ]


class TestDeferRoute:
    """``POST /v1/deliveries/{id}/defer`` and ``/v1/inbox/defer``."""

    def test_deferrals_use_no_attempt_and_never_dead_letter(
        self, paged: tuple[LiveServer, Path]
    ) -> None:
        """Ten deferrals (over three attempts allowed) leave the delivery live, attempts 1."""
        server, _ = paged
        with server.client("gene") as gene, server.client("jarvis") as jarvis:
            gene.do(Calls.send("jarvis", "x", subject="work"))
            for i in range(10):
                [d] = jarvis.do(Calls.inbox()).deliveries
                assert d.attempts == 1
                back = jarvis.do(Calls.defer(d.id, d.receipt or "", reason="429", delay_seconds=0))
                assert back.deferrals == i + 1
                assert back.attempts == 0
            assert jarvis.do(Calls.dead_letters()) == []

    def test_batch_defer_hides_until_not_before(self, paged: tuple[LiveServer, Path]) -> None:
        """A batch deferred an hour ahead is not claimable; the answer says until when."""
        server, _ = paged
        with server.client("gene") as gene, server.client("jarvis") as jarvis:
            for n in range(3):
                gene.do(Calls.send("jarvis", str(n)))
            got = jarvis.do(Calls.inbox(limit=10)).deliveries
            now = jarvis.do(Calls.time()).now
            out = jarvis.do(
                Calls.defer_many(
                    [(d.id, d.receipt or "") for d in got],
                    reason="over budget",
                    not_before=now + timedelta(hours=1),
                )
            )
            assert out.deferred == 3
            assert out.visible_at is not None
            assert out.visible_at >= now + timedelta(hours=1)
            assert jarvis.do(Calls.inbox()).deliveries == []

    def test_receipts_and_inboxes_are_checked_like_nack(
        self, paged: tuple[LiveServer, Path]
    ) -> None:
        """A forged receipt is 409; another agent cannot defer jarvis's claim; a not-before a
        month ahead is refused naming the field."""
        server, _ = paged
        with (
            server.client("gene") as gene,
            server.client("jarvis") as jarvis,
            server.client("sentinel") as sentinel,
        ):
            gene.do(Calls.send("jarvis", "x"))
            [d] = jarvis.do(Calls.inbox()).deliveries
            with pytest.raises(StaleReceipt):
                jarvis.do(Calls.defer(d.id, "forged", reason="x", delay_seconds=0))
            with pytest.raises(McosError):
                sentinel.do(Calls.defer(d.id, d.receipt or "", reason="x", delay_seconds=0))
            far = jarvis.do(Calls.time()).now + timedelta(days=30)
            with pytest.raises(InvalidRequest, match="not_before"):
                jarvis.do(Calls.defer(d.id, d.receipt or "", reason="x", not_before=far))
            jarvis.do(Calls.ack(d.id, d.receipt or ""))  # still held: nothing above changed it


class TestDeadLettersAreNeverSilent:
    """Exhausted, lapsed or expired: the manager is told and the humans paged, once a burst."""

    def test_nacked_to_death_tells_the_manager_and_pages_once(
        self, paged: tuple[LiveServer, Path]
    ) -> None:
        """Two messages to gene nacked to exhaustion: jarvis (gene's manager) is told by
        Mission Control, the founder is paged once for the burst; requeue puts them back."""
        server, outbox = paged
        with (
            server.client("sentinel") as sentinel,
            server.client("gene") as gene,
            server.client("jarvis") as jarvis,
            server.client() as op,
        ):
            for n in range(2):
                sentinel.do(Calls.send("gene", "poison", subject=f"poison {n}"))
            for _ in range(3):
                for d in gene.do(Calls.inbox(limit=10)).deliveries:
                    gene.do(Calls.nack(d.id, d.receipt or "", error="cannot parse",
                                       delay_seconds=0))  # fmt: skip
            dead = gene.do(Calls.dead_letters())
            assert len(dead) == 2
            assert {a.name: a.dead for a in op.do(Calls.agents())}["gene"] == 2
            seen: list[str] = []
            wait_until("the notices", lambda: seen.extend(notices(jarvis)) or len(seen) >= 2)
            assert all("for gene dead-lettered" in s for s in seen)
            wait_until("the page", lambda: pages(outbox))
            told = [
                r
                for r in op.do(Calls.audit(action="dead_letter.notified"))
                if r.targets.get("inbox") == "gene"
            ]
            assert sum(len(r.detail["deliveries"]) for r in told) == 2
            [page] = pages(outbox)  # one page for the burst, not one per message
            assert "gene" in page["text"]
            for d in dead:
                op.do(Calls.requeue(d.id))
            assert len(gene.do(Calls.inbox(limit=10)).deliveries) == 2
            assert {a.name: a.dead for a in op.do(Calls.agents())}["gene"] == 0
            assert notices(jarvis) == []  # nothing told twice

    def test_an_expired_message_is_dead_lettered_and_told(
        self, paged: tuple[LiveServer, Path]
    ) -> None:
        """A message with a 0.3 s TTL that nobody claims expires: dead with reason "expired",
        and jarvis is told, by the sweeper (nobody claimed gene's inbox)."""
        server, outbox = paged
        with server.client("sentinel") as sentinel, server.client() as op:
            sentinel.do(Calls.send("gene", "stale soon", subject="ephemeral", ttl_seconds=0.3))
            sentinel.do(Calls.send("gene", "kept", subject="no expiry"))
            wait_until("the expiry", lambda: op.do(Calls.dead_letters(inbox="gene")))
            [dead] = op.do(Calls.dead_letters(inbox="gene"))
            assert dead.last_error == "expired"
            assert dead.message.subject == "ephemeral"
        with server.client("jarvis") as jarvis:
            wait_until("the notice", lambda: notices(jarvis))
        wait_until("the page", lambda: pages(outbox))

    def test_bad_expiry_input_is_refused(self, paged: tuple[LiveServer, Path]) -> None:
        """Both an expiry and a TTL, or a negative TTL, is a 422 naming the field."""
        server, _ = paged
        for body in (
            {"to": "jarvis", "ttl_seconds": -1},
            {"to": "jarvis", "ttl_seconds": 5, "expires_at": "2030-01-01T00:00:00Z"},
        ):
            r = raw(server, "POST", "/v1/messages", server.tokens["gene"], json=body)
            assert r.status_code == 422
            assert "ttl_seconds" in r.text
