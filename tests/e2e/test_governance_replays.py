"""The field report's governance failures replayed on the business template, end to end:
real Mission Control, real agent runtimes (offline model), real messages."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn

from mcos.client import AsyncClient, Calls, Client
from mcos.config import load_fleet
from mcos.config.models import Fleet
from mcos.config.scaffold import init_fleet
from mcos.domain.tokens import PrincipalKind
from mcos.models.offline import OfflineModel
from mcos.runtime.agent import AgentRuntime, RuntimeSettings
from mcos.runtime.clock import MissionClock
from mcos.server.factory import build_app
from mcos.store import make_store
from tests.api.conftest import PromptServer, free_port
from tests.waiting import eventually

FAST = RuntimeSettings(batch_window=0, visibility=60)


@dataclass
class Business:
    """The business fleet with a running Mission Control and a token per agent."""

    fleet: Fleet
    url: str
    tokens: dict[str, str]
    operator: str
    clients: list[AsyncClient]
    runtimes: list[AgentRuntime]

    def client(self, name: str | None = None) -> AsyncClient:
        c = AsyncClient(self.url, self.tokens[name] if name else self.operator, timeout=30)
        self.clients.append(c)
        return c

    def runtime(self, name: str) -> AgentRuntime:
        rt = AgentRuntime(name, self.fleet, self.client(name), OfflineModel(), MissionClock(),
                          settings=FAST)  # fmt: skip
        self.runtimes.append(rt)
        return rt


@pytest.fixture
async def business(tmp_path: Path) -> AsyncIterator[Business]:
    path = init_fleet(tmp_path / "biz", template="business")
    port = free_port()
    path.write_text(path.read_text().replace("127.0.0.1:8700", f"127.0.0.1:{port}"))
    fleet = load_fleet(path)
    store = make_store(fleet.store_url)
    await store.upgrade()
    await store.close()
    server = PromptServer(
        uvicorn.Config(build_app(fleet), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    await eventually("Mission Control to start", lambda: server.started, timeout=30)
    url = f"http://127.0.0.1:{port}"
    operator = (fleet.state_dir / "operator.token").read_text().strip()
    with Client(url, operator) as op:
        tokens = {n: op.do(Calls.create_token(PrincipalKind.AGENT, n)).token for n in fleet.agents}
    biz = Business(fleet, url, tokens, operator, [], [])
    try:
        yield biz
    finally:
        for rt in biz.runtimes:
            await rt.aclose()
        for c in biz.clients:
            await c.aclose()
        server.should_exit = True
        thread.join(10)


async def test_the_p0_cascade_does_not_happen(business: Business) -> None:
    """Sentinel reports "metric directories missing fleet-wide" as P0: it stays a hypothesis
    that reaches only its confirmers; once the orchestrator confirms it as P1, the fleet hears."""
    sentinel = business.client("sentinel")
    made = await sentinel.do(
        Calls.report_incident(
            "P0", "metric directories missing fleet-wide", "ls /var/lib/metrics: no such file"
        )
    )
    assert made.state == "reported"
    assert sorted(made.notified) == ["founder", "jarvis"]
    bystanders = [n for n in business.fleet.agents if n not in ("sentinel", "jarvis")]
    for name in bystanders:
        rt = business.runtime(name)
        assert await rt.claim() == 0, f"{name} heard of an unconfirmed report"
        assert await business.client(name).do(Calls.incidents()) == []
    jarvis = business.client("jarvis")
    confirmed = await jarvis.do(
        Calls.decide_incident(made.id, "confirm", "checked two hosts: directories gone", "P1")
    )
    assert (confirmed.state, confirmed.severity, confirmed.reported_as) == ("confirmed", "P1", "P0")
    assert sorted(confirmed.notified) == sorted(bystanders)
    gene = next(rt for rt in business.runtimes if rt.name == "gene")
    assert await gene.claim(wait=5) == 1
    assert await gene.handle_messages()
    log = gene.workspace.daily_log(gene.clock.now()).read_text()
    assert "Confirmed P1: metric directories missing fleet-wide" in log


async def test_the_committee_workflow(business: Business) -> None:
    """The orchestrator asks for a phased plan; CTO and ops approve; the directive with its
    constraints reaches the executing agent, whose runtime acknowledges it."""
    jarvis = business.client("jarvis")
    request = await jarvis.do(
        Calls.request_approval(
            "execute_plan",
            {"plan": "billing rewrite", "phase": 1},
            "Phase 1 of the billing rewrite: behind a flag, staging first.",
            executor="forge",
            constraints="no feature freeze; staging only; weekly reports",
            report_every="0 9 * * 1",
        )
    )
    assert request.quorum == "2 of [role:cto, role:ops, role:security]"
    assert sorted(request.notified) == ["elon", "gene", "sentinel"]
    await business.client("elon").do(Calls.vote(request.id, "approve", "architecture is sound"))
    decided = await business.client("gene").do(
        Calls.vote(request.id, "approve", "staging capacity is there")
    )
    assert decided.state == "approved"
    forge = business.runtime("forge")
    assert await forge.claim(wait=5) == 1
    assert await forge.handle_messages()
    final = await jarvis.do(Calls.approval(request.id))
    assert final.acknowledged_at is not None
    log = forge.workspace.daily_log(forge.clock.now()).read_text()
    assert "acknowledged directive of approval" in log
    assert "staging only" in log
    # The weekly reports it promised are on its schedule, and survive a restart.
    job = f"directive-{request.id}-report"
    assert job in forge.cron_next
    assert forge.cron_next[job].weekday() == 0  # Mondays at 09:00
    again = business.runtime("forge")
    assert [j.name for j in again.promised] == [job]
