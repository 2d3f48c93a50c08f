"""One request renews every lease of a supervisor (``POST /v1/leases/renew-batch``), each lease
answered exactly as the single renewal would answer it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mcos.client import Calls, Client
from mcos.domain.tokens import PrincipalKind
from mcos.exceptions import Forbidden
from tests.api.conftest import LiveServer, raw, serve_on
from tests.waiting import wait_until

HOSTS = {"mini": frozenset({"gene", "sentinel"}), "vps": frozenset({"jarvis", "gene"})}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LiveServer]:
    """Mission Control whose hosts are mini (gene, sentinel) and vps (jarvis; gene fails over)."""
    with serve_on(request.param, tmp_path, host_agents=HOSTS) as (live, _):
        yield live


def _renew_batch(server: LiveServer, token: str, body: object) -> tuple[int, dict[str, object]]:
    response = raw(server, "POST", "/v1/leases/renew-batch", token, json=body)
    return response.status_code, response.json()


class TestRenewBatch:
    """Per-lease results; fencing as for one lease; refusals and bad bodies."""

    def test_each_lease_has_its_result_and_a_fenced_out_one_is_lost(
        self, server: LiveServer
    ) -> None:
        """gene renewed, jarvis lost (another supervisor took it after sup-a's lease lapsed),
        an unknown agent not found: the others are renewed all the same."""
        with server.client() as op:
            gene = op.do(Calls.acquire_lease("gene", "sup-a", "mini", 15))
            jarvis = op.do(Calls.acquire_lease("jarvis", "sup-a", "mini", 1))
            wait_until(
                "sup-a's lease of jarvis to lapse",
                lambda: not any(x.live for x in op.do(Calls.leases()) if x.agent == "jarvis"),
            )
            taken = op.do(Calls.acquire_lease("jarvis", "sup-b", "vps", 15))
            out = op.do(
                Calls.renew_leases(
                    "sup-a", [("gene", gene.fence), ("jarvis", jarvis.fence), ("nobody", 1)], 60
                )
            )
            assert [r.agent for r in out.results] == ["gene", "jarvis", "nobody"]
            renewed, lost, unknown = out.results
            assert renewed.error is None
            assert renewed.lease is not None
            assert renewed.lease.fence == gene.fence
            assert renewed.lease.expires_at > gene.expires_at
            assert lost.lease is None
            assert lost.error is not None
            assert lost.error.code == "lease_lost"
            assert "now belongs to sup-b" in lost.error.message
            assert unknown.error is not None
            assert (unknown.error.code, unknown.lease) == ("not_found", None)
            current = {x.agent: x for x in op.do(Calls.leases())}
            assert (current["jarvis"].holder, current["jarvis"].fence) == ("sup-b", taken.fence)
            assert current["gene"].expires_at == renewed.lease.expires_at

    def test_a_host_renews_its_own_agents_and_is_refused_the_others(
        self, server: LiveServer
    ) -> None:
        with server.client() as op:
            mini = op.do(Calls.create_token(PrincipalKind.HOST, "mini")).token
            held = [op.do(Calls.acquire_lease(a, "mini/1", "mini", 15)) for a in ("gene", "jarvis")]
        with server.client(token=mini) as host:
            sentinel = host.do(Calls.acquire_lease("sentinel", "mini/1", "mini", 15))
            out = host.do(
                Calls.renew_leases("mini/1", [(x.agent, x.fence) for x in [*held, sentinel]], 30)
            )
        assert [(r.agent, r.error.code if r.error else "renewed") for r in out.results] == [
            ("gene", "renewed"), ("jarvis", "forbidden"), ("sentinel", "renewed"),
        ]  # fmt: skip
        with server.client() as op:
            refused = [
                r for r in op.do(Calls.audit(action="lease.renew")) if r.outcome == "refused"
            ]
        assert [(r.actor, r.targets) for r in refused] == [("host:mini", {"agents": "jarvis"})]

    def test_an_agent_token_is_refused(self, server: LiveServer) -> None:
        with server.client() as op:
            lease = op.do(Calls.acquire_lease("gene", "sup-a", "mini", 15))
        with (
            Client(server.url, server.tokens["gene"], fence=lease.fence) as gene,
            pytest.raises(Forbidden, match="operators and supervisors"),
        ):
            gene.do(Calls.renew_leases("sup-a", [("gene", lease.fence)], 15))

    def test_a_bad_body_is_refused_naming_the_problem_and_renews_nothing(
        self, server: LiveServer
    ) -> None:
        token = server.operator_token
        with server.client() as op:
            lease = op.do(Calls.acquire_lease("gene", "sup-a", "mini", 15))
        item = {"agent": "gene", "fence": lease.fence}
        for body, where in (
            ({"holder": "sup-a", "leases": []}, "leases"),
            ({"holder": "sup-a", "leases": [item, item]}, "listed twice"),
            ({"holder": "sup-a", "leases": [{"agent": "gene", "fence": 0}]}, "leases.0.fence"),
            ({"leases": [item]}, "holder"),
            ({"holder": "sup-a", "leases": [item], "ttl_seconds": 0}, "ttl_seconds"),
            ({"holder": "sup-a", "leases": "gene"}, "leases"),
        ):
            status, answer = _renew_batch(server, token, body)
            error = answer["error"]
            assert (status, error["code"]) == (422, "invalid_request"), body  # type: ignore[index]
            assert where in error["message"], (body, error)  # type: ignore[index]
        with server.client() as op:
            (current,) = op.do(Calls.leases())
        assert current.renewed_at == lease.renewed_at
