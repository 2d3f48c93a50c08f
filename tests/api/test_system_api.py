"""Clock, health, metrics and the OpenAPI document through a real server."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from mcos.client import Calls
from tests.api.conftest import LiveServer, raw, serve_on


class TestSystem:
    """The endpoints an operator's tooling relies on."""

    def test_time_is_aware_utc(self, live_server: LiveServer) -> None:
        """/v1/time answers the server's clock as an aware UTC time close to ours."""
        with live_server.client() as c:
            t = c.do(Calls.time())
        assert t.now.tzinfo is not None
        assert abs((datetime.now(UTC) - t.now).total_seconds()) < 5
        assert abs(t.unix - t.now.timestamp()) < 0.001

    def test_healthz(self, live_server: LiveServer) -> None:
        """/healthz reports the store and its schema version."""
        with live_server.client() as c:
            h = c.do(Calls.health())
        assert h.status == "ok"
        assert h.schema_version >= 2

    def test_metrics_count_traffic(self, live_server: LiveServer) -> None:
        """/metrics counts sends, claims, acks and queue depth per inbox."""
        with live_server.client("gene") as gene, live_server.client("jarvis") as jarvis:
            for _ in range(3):
                gene.do(Calls.send("jarvis", "x"))
            [d, *_] = jarvis.do(Calls.inbox(limit=1)).deliveries
            jarvis.do(Calls.ack(d.id, d.receipt or ""))
            text = jarvis.do(Calls.metrics())
        assert 'mcos_messages_sent_total{kind="request"} 3.0' in text
        assert "mcos_deliveries_claimed_total 1.0" in text
        assert "mcos_deliveries_acked_total 1.0" in text
        assert 'mcos_queue_depth{inbox="jarvis",state="queued"} 2.0' in text
        assert (
            'mcos_http_request_seconds_count{method="POST",route="/v1/messages",status="201"} 3.0'
            in text
        )

    def test_openapi_served(self, live_server: LiveServer) -> None:
        """The OpenAPI document lists the /v1 routes and the error shape."""
        doc = raw(live_server, "GET", "/openapi.json").json()
        assert "/v1/messages" in doc["paths"]
        assert "/v1/inbox" in doc["paths"]
        assert "ErrorResponse" in doc["components"]["schemas"]


@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_fleet_metrics_at_scrape_time(store: str, tmp_path: Path) -> None:
    """Incidents, approvals, model use, agent states and lease grants, read from the store."""
    from mcos.config.models import ModelConfig
    from mcos.domain.budget import Price

    direct = {"gene": ModelConfig(provider="anthropic", id="m", route="direct")}
    dear = {"m": Price.anthropic(10_000, 30_000)}  # 10 input + 5 output tokens: $0.25
    with serve_on(store, tmp_path, models=direct, prices=dear) as (live_server, _):
        _scrape(live_server)


def _scrape(live_server: LiveServer) -> None:
    from mcos.api_models import CallReport
    from mcos.domain.agent_state import AgentStatus

    with live_server.client("sentinel") as sentinel:
        sentinel.do(Calls.report_incident("P0", "disk gone", "lsblk"))
    with live_server.client("gene") as gene:
        held = gene.do(Calls.reserve("m", 10, 5))
        report = CallReport(
            reservation_id=held.id, provider="anthropic", model="m", input_tokens=10,
            output_tokens=5,
        )  # fmt: skip
        gene.do(Calls.report_call(report))
        gene.do(Calls.report_state("gene", AgentStatus.IDLE, info={"beats": 7, "beats_ok": 6,
                                                                   "restarts": 2}))  # fmt: skip
    with live_server.client() as op:
        op.do(Calls.acquire_lease("gene", "sup", "h", 15))
        text = op.do(Calls.metrics())
    for line in (
        'mcos_incidents{severity="P0",state="reported"} 1.0',
        'mcos_model_calls_today{agent="gene"} 1.0',
        'mcos_model_cost_usd_today{agent="gene"} 0.25',
        'mcos_model_tokens_today{agent="gene",kind="input"} 10.0',
        'mcos_agent{agent="gene",measure="beats_without_model"} 6.0',
        'mcos_agent{agent="gene",measure="restarts"} 2.0',
        'mcos_agent_state{agent="gene",state="idle"} 1.0',
        'mcos_lease_grants{agent="gene"} 1.0',
    ):
        assert line in text, line
