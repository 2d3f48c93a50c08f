"""Budgets over HTTP in direct mode: Mission Control prices every reservation and every report
itself (no dollar figure from the agent), clamps the output to what the cap has left, refuses a
model the agent is not configured with and an agent whose calls go through the gateway; spend
per day; agent states."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from mcos.api_models import CallReport
from mcos.client import Calls
from mcos.config.models import ModelConfig
from mcos.domain.agent_state import AgentStatus
from mcos.domain.budget import Limits, Price
from mcos.domain.heartbeat import CacheTTL
from mcos.exceptions import Forbidden, NotFound, OverBudget
from tests.api.conftest import LiveServer, raw, serve_on

MODEL = "test-model"
PRICE = Price(1.0, 5.0, 0.1, 1.25, 2.0)
"""USD per million tokens, i.e. micro-dollars per token: input 1, output 5, 5-minute write 1.25,
1-hour write 2."""
DIRECT = ModelConfig(provider="anthropic", id=MODEL, route="direct")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def budgeted(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LiveServer]:
    """Mission Control where gene may spend $1.00 a day and the fleet $1.50; gene and jarvis
    reach ``test-model`` directly, sentinel runs the offline model on a token cap."""
    with serve_on(
        request.param,
        tmp_path,
        budgets={"gene": Limits.of(1.0, None), "sentinel": Limits.of(None, 10_000)},
        fleet_budget=Limits.of(1.5, None),
        models={"gene": DIRECT, "jarvis": DIRECT, "sentinel": ModelConfig()},
        prices={MODEL: PRICE},
    ) as (server, _):
        yield server


def _report(reservation: int, **tokens: int) -> CallReport:
    counts = {"input_tokens": 1000, "output_tokens": 200, "cache_read_tokens": 5000} | tokens
    return CallReport(reservation_id=reservation, provider="anthropic", model=MODEL, **counts)


def test_mission_control_prices_the_reservation_and_the_report(budgeted: LiveServer) -> None:
    """The hold is Mission Control's worst case (prompt at the dearest rate the request can be
    billed for, plus the output); the report is priced from its tokens."""
    with budgeted.client("gene") as gene, budgeted.client() as op:
        plain = gene.do(Calls.reserve(MODEL, 10_000, 2_000, purpose="heartbeat"))
        assert (plain.verdict, plain.warning, plain.max_output) == ("granted", False, 2_000)
        assert plain.reserved_usd == pytest.approx((10_000 * 1 + 2_000 * 5) / 1e6)
        five = gene.do(Calls.reserve(MODEL, 10_000, 2_000, cache_ttl=CacheTTL.FIVE_MINUTES))
        assert five.reserved_usd == pytest.approx((10_000 * 1.25 + 2_000 * 5) / 1e6)
        hour = gene.do(Calls.reserve(MODEL, 10_000, 2_000, cache_ttl=CacheTTL.ONE_HOUR))
        assert hour.reserved_usd == pytest.approx((10_000 * 2 + 2_000 * 5) / 1e6)
        assert hour.budget_usd == pytest.approx(1.0)
        gene.do(Calls.report_call(_report(plain.id)))
        [row] = op.do(Calls.usage(agent="gene"))
        assert (row.calls, row.input_tokens, row.cache_read_tokens) == (1, 1000, 5000)
        assert row.cost_usd == pytest.approx((1000 * 1 + 200 * 5 + 5000 * 0.1) / 1e6)
        assert row.held_usd == pytest.approx(five.reserved_usd + hour.reserved_usd)
        agents = {a.name: a for a in op.do(Calls.agents())}
        assert agents["gene"].spent_today_usd == pytest.approx(0.0025)
        assert agents["gene"].budget_usd == pytest.approx(1.0)
        assert agents["jarvis"].budget_usd is None


def test_the_output_is_clamped_then_refused_with_402_and_the_warning_comes_at_80_percent(
    budgeted: LiveServer,
) -> None:
    """$1.00 cap: a call of 100,000 prompt tokens and 100,000 output (worst $0.60) fits whole;
    the second is clamped to the 60,000 output its $0.40 pays for; then only the floor is asked
    and refused."""
    with budgeted.client("gene") as gene:
        first = gene.do(Calls.reserve(MODEL, 100_000, 100_000))
        assert (first.max_output, first.warning) == (100_000, False)
        second = gene.do(Calls.reserve(MODEL, 100_000, 100_000))
        assert second.max_output == (1_000_000 - 600_000 - 100_000) // 5
        assert second.warning
        assert second.committed_usd == pytest.approx(1.0)
        with pytest.raises(OverBudget) as refused:
            gene.do(Calls.reserve(MODEL, 0, 100_000))
        assert "gene is at its daily budget" in str(refused.value)
        response = raw(budgeted, "POST", "/v1/usage/reservations", budgeted.tokens["gene"],
                       json={"model": MODEL, "prompt_tokens": 0, "max_output": 10})  # fmt: skip
        assert response.status_code == 402
        assert response.json()["error"]["code"] == "over_budget"
        # Settling below the worst case gives the difference back.
        gene.do(Calls.report_call(_report(first.id)))
        assert gene.do(Calls.reserve(MODEL, 100_000, 50_000)).max_output == 50_000


def test_concurrent_reservations_never_overrun_the_fleet_cap(budgeted: LiveServer) -> None:
    """Twenty parallel asks of at most $0.10 (no floor to clamp to: max_output is the floor)
    against jarvis (no own cap) and a $1.50 fleet cap."""

    def ask(_: int) -> bool:
        with budgeted.client("jarvis") as jarvis:
            try:
                jarvis.do(Calls.reserve(MODEL, 90_000, 1_000))
            except OverBudget:
                return False
            return True

    with ThreadPoolExecutor(20) as pool:
        granted = sum(pool.map(ask, range(20)))
    assert granted == 15


def test_token_caps_count_tokens(budgeted: LiveServer) -> None:
    with budgeted.client("sentinel") as sentinel:
        sentinel.do(Calls.reserve("offline-1", 5_000, 4_000))
        with pytest.raises(OverBudget):
            sentinel.do(Calls.reserve("offline-1", 500, 2_000))
        assert sentinel.do(Calls.reserve("offline-1", 500, 500)).max_output == 500


def test_settling_someone_elses_reservation_is_a_conflict(budgeted: LiveServer) -> None:
    with budgeted.client("gene") as gene:
        held = gene.do(Calls.reserve(MODEL, 1_000, 1_000))
        response = raw(budgeted, "POST", "/v1/usage/calls", budgeted.tokens["jarvis"],
                       json=_report(held.id).model_dump())  # fmt: skip
        assert response.status_code == 409
        assert "not held by jarvis" in response.json()["error"]["message"]


def test_only_agents_reserve_and_agents_read_only_their_own_usage(
    budgeted: LiveServer,
) -> None:
    with budgeted.client() as op, budgeted.client("gene") as gene:
        with pytest.raises(Forbidden):
            op.do(Calls.reserve(MODEL, 1, 1))
        with pytest.raises(Forbidden):
            gene.do(Calls.usage(agent="jarvis"))
        assert gene.do(Calls.usage()) == []


@pytest.mark.parametrize(
    ("path", "body", "named"),
    [
        ("reservations", {"max_usd": 0.1, "max_tokens": 100}, "max_usd"),
        ("reservations", {"model": MODEL, "prompt_tokens": 10, "max_output": 10, "max_usd": 0},
         "max_usd"),
        ("reservations", {"model": MODEL, "prompt_tokens": -1, "max_output": 10},
         "prompt_tokens"),
        ("reservations", {"model": MODEL, "prompt_tokens": 1, "max_output": 1, "cache_ttl": "2h"},
         "cache_ttl"),
        ("calls", {"provider": "anthropic", "model": MODEL, "input_tokens": 1,
                   "output_tokens": 1}, "reservation_id"),
        ("calls", {"reservation_id": 1, "provider": "anthropic", "model": MODEL,
                   "input_tokens": 1, "output_tokens": 1, "cost_usd": 0.0}, "cost_usd"),
        ("calls", {"reservation_id": 1, "provider": "anthropic", "model": MODEL,
                   "input_tokens": 1, "output_tokens": 1, "cache_write_tokens": 1,
                   "cache_write_1h_tokens": 2}, "cache_write_1h_tokens"),
    ],
)  # fmt: skip
def test_declared_dollars_and_bad_fields_are_422_naming_the_field(
    budgeted: LiveServer, path: str, body: dict[str, Any], named: str
) -> None:
    """The old dollar fields are refused (extra fields are forbidden), the reservation id is
    required, and every bad field is named."""
    response = raw(budgeted, "POST", f"/v1/usage/{path}", budgeted.tokens["gene"], json=body)
    assert response.status_code == 422
    assert named in response.text
    with budgeted.client() as op:
        assert op.do(Calls.usage()) == []


def test_bad_since_is_422(budgeted: LiveServer) -> None:
    response = raw(budgeted, "GET", "/v1/usage?since=yesterday", budgeted.operator_token)
    assert response.status_code == 422
    assert "since" in response.json()["error"]["message"]


def test_a_model_the_agent_is_not_configured_with_is_refused_and_audited(
    budgeted: LiveServer,
) -> None:
    """An agent cannot get a cheaper price (the free offline model) by naming another model."""
    with budgeted.client("gene") as gene, budgeted.client() as op:
        with pytest.raises(Forbidden) as refused:
            gene.do(Calls.reserve("offline-1", 1_000, 1_000))
        assert "gene is configured with model 'test-model', not 'offline-1'" in str(refused.value)
        held = gene.do(Calls.reserve(MODEL, 1_000, 1_000))
        cheap = _report(held.id).model_copy(update={"model": "offline-1"})
        with pytest.raises(Forbidden):
            gene.do(Calls.report_call(cheap))
        actions = [(a.action, a.outcome) for a in op.do(Calls.audit(actor="agent:gene"))]
        assert ("usage.reserve", "refused") in actions
        assert ("usage.report", "refused") in actions
        [row] = op.do(Calls.usage(agent="gene"))
        assert row.calls == 0
        assert row.held_usd == pytest.approx((1_000 + 5_000) / 1e6)


def test_a_gateway_routed_agent_may_not_reserve_or_report(
    tmp_path: Path,
) -> None:
    """Mission Control meters a gateway-routed agent's calls itself: /v1/usage refuses it."""
    gateway = ModelConfig(provider="anthropic", id=MODEL)
    with (
        serve_on("sqlite", tmp_path, models={"gene": gateway}, prices={MODEL: PRICE}) as (
            server,
            _,
        ),
        server.client("gene") as gene,
        server.client() as op,
    ):
        with pytest.raises(Forbidden) as refused:
            gene.do(Calls.reserve(MODEL, 1_000, 1_000))
        rule = "model calls of gene go through the gateway; Mission Control meters them"
        assert rule in str(refused.value)
        with pytest.raises(Forbidden):
            gene.do(Calls.report_call(_report(1)))
        audit = op.do(Calls.audit(actor="agent:gene"))
        assert [(a.action, a.detail["rule"]) for a in audit] == [
            ("usage.reserve", rule),
            ("usage.report", rule),
        ]


def test_a_report_beyond_its_reservation_is_recorded_and_flagged(budgeted: LiveServer) -> None:
    """Tokens beyond what the reservation allowed are recorded at the reported figure (the call
    cost that) and flagged in the audit log."""
    with budgeted.client("gene") as gene, budgeted.client() as op:
        held = gene.do(Calls.reserve(MODEL, 1_000, 100))
        gene.do(Calls.report_call(_report(held.id, input_tokens=3_000, cache_read_tokens=0)))
        [row] = op.do(Calls.usage(agent="gene"))
        assert row.cost_usd == pytest.approx((3_000 + 200 * 5) / 1e6)
        [flag] = op.do(Calls.audit(action="usage.exceeded_reservation"))
        assert flag.outcome == "flagged"
        assert flag.targets["reservation"] == held.id
        assert flag.detail["over"]["prompt_tokens"] == {"reserved": 1_000, "used": 3_000}
        assert flag.detail["over"]["output_tokens"] == {"reserved": 100, "used": 200}


def test_agent_state_is_reported_and_shown(live_server: LiveServer) -> None:
    with live_server.client("gene") as gene, live_server.client() as op:
        shown = gene.do(
            Calls.report_state(
                "gene", AgentStatus.COOLING_DOWN, "429 from the model API", info={"retries": 2}
            )
        )
        assert shown.state == "cooling_down"
        assert shown.state_detail == "429 from the model API"
        assert shown.state_info == {"retries": 2}
        assert op.do(Calls.agent("gene")).state == "cooling_down"
        with pytest.raises(Forbidden):
            gene.do(Calls.report_state("jarvis", AgentStatus.IDLE))
        with pytest.raises(NotFound):
            op.do(Calls.report_state("nobody", AgentStatus.IDLE))
        assert op.do(Calls.agent("jarvis")).state is None
