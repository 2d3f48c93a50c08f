"""Turn traces over HTTP: an agent posts its own, its cost is what Mission Control metered (not
what the agent claims), a message leads to the turn that handled it and the messages that turn
sent, readers see only what they may, an over-size trace is a 413, and old traces are swept."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mcos.api_models import CallReport
from mcos.api_traces import MAX_TRACE_BYTES, TraceCalls, TraceIn, TraceModelCall, TraceToolCall
from mcos.client import Calls
from mcos.config.models import ModelConfig
from mcos.domain.budget import Price
from mcos.exceptions import Conflict, Forbidden, NotFound
from tests.api.conftest import LiveServer, raw, serve_on
from tests.waiting import wait_until

MODEL = "test-model"
PRICE = Price(1.0, 5.0, 0.1, 1.25, 2.0)
DIRECT = ModelConfig(provider="anthropic", id=MODEL, route="direct")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LiveServer]:
    """Gene and jarvis reach ``test-model`` directly; traces older than a day are swept fast."""
    with serve_on(
        request.param,
        tmp_path,
        models={"gene": DIRECT, "jarvis": DIRECT},
        prices={MODEL: PRICE},
        trace_days=1,
        sweep_seconds=0.2,
    ) as (live, _):
        yield live


def _trace(**fields: object) -> TraceIn:
    base: dict[str, object] = {
        "id": secrets.token_hex(8),
        "kind": "main",
        "woke_by": "message",
        "started_at": datetime.now(UTC) - timedelta(seconds=5),
        "latency_ms": 1234,
        "outcome": "ok",
    }
    return TraceIn.model_validate(base | fields)


def test_a_trace_costs_what_mission_control_metered_and_links_messages(server: LiveServer) -> None:
    with server.client("gene") as gene, server.client("jarvis") as jarvis, server.client() as op:
        asked = jarvis.do(Calls.send("gene", "Is the VPS healthy?", subject="VPS")).message
        held = gene.do(Calls.reserve(MODEL, 10_000, 2_000, purpose="main"))
        gene.do(
            Calls.report_call(
                CallReport(
                    reservation_id=held.id,
                    provider="anthropic",
                    model=MODEL,
                    purpose="main",
                    input_tokens=1000,
                    output_tokens=200,
                )
            )
        )
        answer = gene.do(Calls.send("jarvis", "Healthy.", reply_to=asked.id)).message
        posted = gene.do(
            TraceCalls.post(
                _trace(
                    woke_messages=[asked.id],
                    sent_messages=[answer.id],
                    calls=[
                        # The agent claims $9; Mission Control priced the call at $0.002.
                        TraceModelCall(
                            model=MODEL,
                            input_tokens=1000,
                            output_tokens=200,
                            reported_usd=9.0,
                            reservation_id=held.id,
                        )
                    ],
                    tools=[TraceToolCall(name="reply", arguments='{"body": "Healthy."}')],
                )
            )
        )
        assert posted.agent == "gene"
        assert posted.cost_source == "metered"
        assert posted.cost_usd == pytest.approx((1000 * 1 + 200 * 5) / 1e6)
        assert (posted.metered_calls, posted.model_calls, posted.tool_calls) == (1, 1, 1)
        assert posted.calls[0].metered_usd == pytest.approx(posted.cost_usd)
        assert posted.calls[0].reported_usd == 9.0
        # A message → the turn that handled it → what that turn sent; the thread finds it too.
        [handled] = op.do(TraceCalls.find(message=asked.id))
        assert handled.id == posted.id
        assert handled.sent_messages == [answer.id]
        assert [t.id for t in op.do(TraceCalls.find(message=answer.id))] == [posted.id]
        assert [t.id for t in op.do(TraceCalls.find(thread=asked.thread_id))] == [posted.id]
        assert op.do(TraceCalls.find(agent="jarvis")) == []
        assert op.do(TraceCalls.get(posted.id)).tools[0].arguments == '{"body": "Healthy."}'
        # A re-post of the same id changes nothing.
        again = gene.do(TraceCalls.post(_trace(id=posted.id, outcome="error")))
        assert (again.outcome, again.cost_usd) == ("ok", posted.cost_usd)


def test_a_call_the_meter_does_not_know_counts_as_reported(server: LiveServer) -> None:
    """A reservation of another agent (or none) is not the meter's record of this call."""
    with server.client("gene") as gene, server.client("jarvis") as jarvis:
        theirs = jarvis.do(Calls.reserve(MODEL, 100, 100))
        posted = gene.do(
            TraceCalls.post(
                _trace(
                    calls=[
                        TraceModelCall(model=MODEL, reported_usd=0.25, reservation_id=theirs.id),
                        TraceModelCall(model=MODEL, reported_usd=0.5),
                    ]
                )
            )
        )
        assert (posted.cost_source, posted.metered_calls) == ("reported", 0)
        assert posted.cost_usd == pytest.approx(0.75)
        assert [c.metered_usd for c in posted.calls] == [None, None]
        # One metered call named twice counts once at the meter's price, then as reported.
        mine = gene.do(Calls.reserve(MODEL, 100, 100))
        report = {"provider": "anthropic", "model": MODEL, "input_tokens": 100, "output_tokens": 0}
        gene.do(Calls.report_call(CallReport(reservation_id=mine.id, **report)))
        twice = [TraceModelCall(model=MODEL, reported_usd=0.5, reservation_id=mine.id)] * 2
        posted = gene.do(TraceCalls.post(_trace(calls=twice)))
        assert (posted.cost_source, posted.metered_calls) == ("mixed", 1)
        assert posted.cost_usd == pytest.approx(0.5 + 100 / 1e6)


def test_who_may_write_and_read(server: LiveServer) -> None:
    with server.client("gene") as gene, server.client("jarvis") as jarvis, server.client() as op:
        mine = gene.do(TraceCalls.post(_trace()))
        with pytest.raises(Forbidden, match="posted by the agent"):
            op.do(TraceCalls.post(_trace()))
        with pytest.raises(Forbidden, match="only its own traces"):
            jarvis.do(TraceCalls.get(mine.id))
        with pytest.raises(Forbidden, match="only its own traces"):
            jarvis.do(TraceCalls.find(agent="gene"))
        with pytest.raises(Conflict, match="another agent"):
            jarvis.do(TraceCalls.post(_trace(id=mine.id)))
        assert [t.id for t in gene.do(TraceCalls.find())] == [mine.id]
        assert jarvis.do(TraceCalls.find()) == []
        with pytest.raises(NotFound):
            op.do(TraceCalls.get("no-such-trace"))
        refused = op.do(Calls.audit(action="trace.read"))
        assert [r.outcome for r in refused] == ["refused"] * len(refused)
        assert refused


def test_an_over_size_trace_is_413_and_bad_fields_are_named(server: LiveServer) -> None:
    token = server.tokens["gene"]
    big = _trace().model_dump(mode="json") | {"final_text": "x" * (MAX_TRACE_BYTES + 10)}
    response = raw(server, "POST", "/v1/traces", token, json=big)
    assert response.status_code == 413
    assert response.json()["error"]["details"]["limit"] == MAX_TRACE_BYTES
    bad = _trace().model_dump(mode="json") | {"outcome": "fine"}
    response = raw(server, "POST", "/v1/traces", token, json=bad)
    assert response.status_code == 422
    assert "outcome" in response.text
    ahead = _trace(started_at=datetime.now(UTC) + timedelta(hours=2)).model_dump(mode="json")
    response = raw(server, "POST", "/v1/traces", token, json=ahead)
    assert response.status_code == 422
    assert "started_at" in response.text
    for when in ("2026-01-01T00:00:00", "0001-01-01T00:00:00+05:00"):  # no zone; too old
        body = _trace().model_dump(mode="json") | {"started_at": when}
        response = raw(server, "POST", "/v1/traces", token, json=body)
        assert response.status_code == 422
        assert "started_at" in response.text
    huge = _trace().model_dump(mode="json") | {"sent_messages": [2**64]}
    assert raw(server, "POST", "/v1/traces", token, json=huge).status_code == 422


def test_traces_older_than_trace_days_are_swept(server: LiveServer) -> None:
    with server.client("gene") as gene:
        old = gene.do(TraceCalls.post(_trace(started_at=datetime.now(UTC) - timedelta(days=2))))
        new = gene.do(TraceCalls.post(_trace()))
        wait_until(
            "the old trace swept",
            lambda: [t.id for t in gene.do(TraceCalls.find())] == [new.id],
        )
        with pytest.raises(NotFound):
            gene.do(TraceCalls.get(old.id))
        assert gene.do(TraceCalls.get(new.id)).id == new.id
