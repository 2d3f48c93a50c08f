"""Budgets over HTTP: reservations before calls, reports after, spend per day, agent states."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mcos.api_models import CallReport
from mcos.client import Calls
from mcos.domain.agent_state import AgentStatus
from mcos.domain.budget import Limits
from mcos.exceptions import Forbidden, NotFound, OverBudget
from tests.api.conftest import LiveServer, migrate, raw, serve
from tests.store.conftest import create_pg_database, drop_pg_database


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def budgeted(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LiveServer]:
    """Mission Control where gene may spend $1.00 a day and the fleet $1.50."""
    url = f"sqlite:///{tmp_path}/mcos.db" if request.param == "sqlite" else create_pg_database()
    asyncio.run(migrate(url))
    try:
        with serve(
            url,
            tmp_path,
            budgets={"gene": Limits.of(1.0, None), "sentinel": Limits.of(None, 10_000)},
            fleet_budget=Limits.of(1.5, None),
        ) as server:
            yield server
    finally:
        if request.param == "postgres":
            drop_pg_database(url)


def _report(reservation: int | None, cost: float) -> CallReport:
    return CallReport(
        reservation_id=reservation,
        provider="anthropic",
        model="claude-sonnet-4-5",
        input_tokens=1000,
        output_tokens=200,
        cache_read_tokens=5000,
        cache_write_tokens=0,
        cost_usd=cost,
    )


def test_reserve_settle_and_read_usage(budgeted: LiveServer) -> None:
    with budgeted.client("gene") as gene, budgeted.client() as op:
        held = gene.do(Calls.reserve(0.30, 5000, "heartbeat"))
        assert held.verdict == "granted"
        assert not held.warning
        assert held.budget_usd == pytest.approx(1.0)
        gene.do(Calls.report_call(_report(held.id, 0.05)))
        rows = op.do(Calls.usage(agent="gene"))
        assert len(rows) == 1
        row = rows[0]
        assert (row.calls, row.input_tokens, row.cache_read_tokens) == (1, 1000, 5000)
        assert row.cost_usd == pytest.approx(0.05)
        assert row.held_usd == 0
        agents = {a.name: a for a in op.do(Calls.agents())}
        assert agents["gene"].spent_today_usd == pytest.approx(0.05)
        assert agents["gene"].budget_usd == pytest.approx(1.0)
        assert agents["jarvis"].budget_usd is None


def test_a_reservation_past_the_cap_is_402_and_the_warning_comes_at_80_percent(
    budgeted: LiveServer,
) -> None:
    with budgeted.client("gene") as gene:
        first = gene.do(Calls.reserve(0.85, 0))
        assert first.warning
        assert first.verdict == "warning"
        with pytest.raises(OverBudget) as refused:
            gene.do(Calls.reserve(0.20, 0))
        assert "gene" in str(refused.value)
        response = raw(budgeted, "POST", "/v1/usage/reservations", budgeted.tokens["gene"],
                       json={"max_usd": 0.5, "max_tokens": 0})  # fmt: skip
        assert response.status_code == 402
        assert response.json()["error"]["code"] == "over_budget"
        # Settling below the worst case gives the difference back.
        gene.do(Calls.report_call(_report(first.id, 0.10)))
        assert gene.do(Calls.reserve(0.20, 0)).verdict == "granted"


def test_concurrent_reservations_never_overrun_the_fleet_cap(budgeted: LiveServer) -> None:
    """Twenty parallel $0.10 asks against jarvis (no own cap) and a $1.50 fleet cap."""

    def ask(_: int) -> bool:
        with budgeted.client("jarvis") as jarvis:
            try:
                jarvis.do(Calls.reserve(0.10, 0))
            except OverBudget:
                return False
            return True

    with ThreadPoolExecutor(20) as pool:
        granted = sum(pool.map(ask, range(20)))
    assert granted == 15


def test_token_caps_count_tokens(budgeted: LiveServer) -> None:
    with budgeted.client("sentinel") as sentinel:
        sentinel.do(Calls.reserve(0.0, 9_000))
        with pytest.raises(OverBudget):
            sentinel.do(Calls.reserve(0.0, 2_000))


def test_settling_someone_elses_reservation_is_a_conflict(budgeted: LiveServer) -> None:
    with budgeted.client("gene") as gene:
        held = gene.do(Calls.reserve(0.10, 0))
        response = raw(budgeted, "POST", "/v1/usage/calls", budgeted.tokens["jarvis"],
                       json=_report(held.id, 0.01).model_dump())  # fmt: skip
        assert response.status_code == 409
        assert "not held by jarvis" in response.json()["error"]["message"]


def test_only_agents_reserve_and_agents_read_only_their_own_usage(
    budgeted: LiveServer,
) -> None:
    with budgeted.client() as op, budgeted.client("gene") as gene:
        with pytest.raises(Forbidden):
            op.do(Calls.reserve(0.1, 0))
        with pytest.raises(Forbidden):
            gene.do(Calls.usage(agent="jarvis"))
        assert gene.do(Calls.usage()) == []


def test_bad_usage_requests_name_the_field(budgeted: LiveServer) -> None:
    token = budgeted.tokens["gene"]
    response = raw(budgeted, "POST", "/v1/usage/reservations", token,
                   json={"max_usd": -1, "max_tokens": 0})  # fmt: skip
    assert response.status_code == 422
    assert "max_usd" in response.text
    response = raw(budgeted, "GET", "/v1/usage?since=yesterday", budgeted.operator_token)
    assert response.status_code == 422
    assert "since" in response.json()["error"]["message"]


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
