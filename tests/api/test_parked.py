"""Parked long-polls are re-checked together (one store query), and still receive what no
send announces: a deferred delivery that falls due, a claim whose visibility lapsed."""

from __future__ import annotations

import time

from mcos.client import Calls
from tests.api.conftest import LiveServer

WAIT = 25.0
"""The long-poll's own deadline: answering with the delivery well before it means the shared
re-check woke the poll (at the deadline the poll would claim it anyway)."""


def test_a_parked_poll_receives_a_deferred_delivery_when_it_falls_due(
    live_server: LiveServer,
) -> None:
    with live_server.client("jarvis") as jarvis, live_server.client("gene") as gene:
        jarvis.do(Calls.send("gene", "later"))
        (first,) = gene.do(Calls.inbox()).deliveries
        gene.do(Calls.defer(first.id, first.receipt or "", reason="busy", delay_seconds=1))
        started = time.monotonic()
        again = gene.do(Calls.inbox(wait=WAIT)).deliveries
        assert [d.message.body for d in again] == ["later"]
        assert time.monotonic() - started < WAIT - 5


def test_a_parked_poll_receives_a_lapsed_claim(live_server: LiveServer) -> None:
    with live_server.client("jarvis") as jarvis, live_server.client("gene") as gene:
        jarvis.do(Calls.send("gene", "retry me"))
        (first,) = gene.do(Calls.inbox(visibility=1)).deliveries
        started = time.monotonic()
        again = gene.do(Calls.inbox(wait=WAIT)).deliveries
        assert [(d.message.body, d.attempts) for d in again] == [("retry me", 2)]
        assert again[0].receipt != first.receipt
        assert time.monotonic() - started < WAIT - 5
