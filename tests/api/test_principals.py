"""Principals that mean what they say: host tokens reach only what a supervisor does, a
supervisor's agent tokens replace each other, the last operator token stays, and an operator
votes as a human only when it is one."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mcos.client import Calls
from mcos.domain.agent_state import AgentStatus
from mcos.domain.tokens import PrincipalKind
from mcos.exceptions import AuthError, Forbidden, InvalidRequest, LastOperatorToken
from mcos.server.routes.deps import HOST_ROUTES
from tests.api.conftest import LiveServer, migrate, raw, serve

HOSTS = {"mini": frozenset({"gene"}), "vps": frozenset({"jarvis", "gene"})}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    """Mission Control (SQLite) whose fleet has hosts mini (gene) and vps (jarvis; gene fails
    over to it)."""
    url = f"sqlite:///{tmp_path}/mcos.db"
    asyncio.run(migrate(url))
    with serve(url, tmp_path, host_agents=HOSTS) as live:
        yield live


def _host(server: LiveServer, host: str = "mini") -> str:
    with server.client() as op:
        return op.do(Calls.create_token(PrincipalKind.HOST, host)).token


def _refused(server: LiveServer, action: str) -> list[dict[str, object]]:
    with server.client() as op:
        return [
            {**r.targets, **r.detail, "actor": r.actor}
            for r in op.do(Calls.audit(action=action, limit=1000))
            if r.outcome == "refused"
        ]


def _sample(path: str) -> str:
    """A concrete path for a route template: ids 1, names gene."""
    for name in ("{token_id}", "{approval_id}", "{incident_id}", "{delivery_id}", "{message_id}"):
        path = path.replace(name, "1")
    for name in ("{thread_id}",):
        path = path.replace(name, "1")
    return path.replace("{agent}", "gene").replace("{name}", "gene").replace("{channel}", "mock")


def test_a_host_token_is_refused_on_every_route_a_supervisor_does_not_use(
    server: LiveServer,
) -> None:
    """Every authenticated /v1 route outside the supervisor's few answers a host token 403,
    and each refusal is audited with the route it tried."""
    token = _host(server)
    spec = httpx.get(server.url + "/openapi.json", timeout=10).json()
    tried = []
    with httpx.Client(base_url=server.url, timeout=10) as http:
        for path, methods in spec["paths"].items():
            for method in methods:
                if not path.startswith("/v1/") or (method.upper(), path) in HOST_ROUTES:
                    continue
                concrete = _sample(path)
                if http.request(method, concrete).status_code != 401:
                    continue  # no token needed (the clock)
                answer = http.request(
                    method, concrete, headers={"Authorization": f"Bearer {token}"}, json={}
                )
                assert answer.status_code == 403, (method, path, answer.text)
                assert answer.json()["error"]["code"] == "forbidden"
                tried.append(f"{method.upper()} {path}")
    print(f"host token refused on {len(tried)} routes")
    assert len(tried) >= 35, tried  # the API's routes, not a handful
    audited = {str(r["route"]) for r in _refused(server, "host.route")}
    assert audited == set(tried)
    assert {r["actor"] for r in _refused(server, "host.route")} == {"host:mini"}


def test_a_host_acts_only_for_the_agents_it_may_run(server: LiveServer) -> None:
    token = _host(server, "mini")
    with server.client(token=token) as mini:
        lease = mini.do(Calls.acquire_lease("gene", "mini/1", "mini", 30))
        mini.do(Calls.renew_lease("gene", "mini/1", lease.fence, 30))
        mini.do(Calls.report_state("gene", AgentStatus.IDLE, "started"))
        assert mini.do(Calls.agent("gene")).state == "idle"
        gene = mini.do(Calls.create_token(PrincipalKind.AGENT, "gene"))
        assert gene.record.label.startswith("host:mini")
        mini.do(Calls.revoke_token(gene.record.id))
        mini.do(Calls.release_lease("gene", "mini/1", lease.fence))
        for refused in (
            Calls.acquire_lease("jarvis", "mini/1", "mini", 30),  # vps's agent
            Calls.report_state("jarvis", AgentStatus.IDLE, "forged"),
            Calls.agent("jarvis"),
            Calls.create_token(PrincipalKind.AGENT, "jarvis"),
            Calls.create_token(PrincipalKind.OPERATOR, "founder"),
            Calls.create_token(PrincipalKind.HOST, "vps"),
            Calls.revoke_token(1),  # the founder's operator token
            Calls.send("jarvis", "hello"),
            Calls.tokens(),
        ):
            with pytest.raises(Forbidden):
                mini.do(refused)
    with server.client() as op:
        jarvis_tokens = [t for t in op.do(Calls.tokens("jarvis")) if t.revoked_at is None]
        assert len(jarvis_tokens) == 1  # the fixture's own: mini minted none
        assert op.do(Calls.tokens("founder"))[0].revoked_at is None
    refused = _refused(server, "lease.acquire") + _refused(server, "token.create")
    assert {r["actor"] for r in refused} == {"host:mini"}


def test_a_host_token_names_a_configured_host_and_operators_alone_mint_it(
    server: LiveServer,
) -> None:
    with server.client() as op, pytest.raises(InvalidRequest, match="no host 'attic'"):
        op.do(Calls.create_token(PrincipalKind.HOST, "attic"))
    with server.client("gene") as gene, pytest.raises(Forbidden):
        gene.do(Calls.create_token(PrincipalKind.HOST, "mini"))


def test_agent_tokens_a_host_mints_at_each_start_replace_the_previous_one(
    server: LiveServer,
) -> None:
    """Six supervisor starts (the first and five restarts): one active token of gene from
    mini, every earlier one revoked and refused; vps's and the operator's own untouched."""
    mini, vps = _host(server, "mini"), _host(server, "vps")
    with server.client(token=vps) as c:
        from_vps = c.do(Calls.create_token(PrincipalKind.AGENT, "gene", label="failover"))
    minted = []
    with server.client(token=mini) as c:
        for i in range(6):
            minted.append(c.do(Calls.create_token(PrincipalKind.AGENT, "gene", label=f"up {i}")))
    with server.client() as op:
        active = [t for t in op.do(Calls.tokens("gene")) if t.revoked_at is None]
    from_mini = [t for t in active if t.label.startswith("host:mini")]
    assert [t.id for t in from_mini] == [minted[-1].record.id]
    assert from_vps.record.id in {t.id for t in active}
    assert len(active) == 3  # mini's newest, vps's, and the fixture's operator-made one
    for old in minted[:-1]:
        with pytest.raises(AuthError, match="revoked"), server.client(token=old.token) as c:
            c.do(Calls.inbox())
    with server.client(token=minted[-1].token) as c:
        c.do(Calls.inbox())


class TestTheLastOperatorToken:
    """Humans cannot be locked out through the API."""

    def test_the_only_operator_token_is_not_revoked(self, server: LiveServer) -> None:
        with server.client() as op:
            (mine,) = op.do(Calls.tokens("founder"))
            with pytest.raises(LastOperatorToken, match="last active operator token"):
                op.do(Calls.revoke_token(mine.id))
            spare = op.do(Calls.create_token(PrincipalKind.OPERATOR, "founder", label="spare"))
            op.do(Calls.revoke_token(mine.id))  # another one exists now
        with server.client(token=spare.token) as op:
            with pytest.raises(LastOperatorToken):
                op.do(Calls.revoke_token(spare.record.id))
            rotated = op.do(Calls.rotate_token(spare.record.id))  # a rotation keeps one
        assert rotated.record.kind is PrincipalKind.OPERATOR
        with server.client(token=rotated.token) as op:
            refusals = [
                r
                for r in op.do(Calls.audit(action="token.revoke"))
                if r.outcome == "refused" and "last active operator" in r.detail["rule"]
            ]
        assert len(refusals) == 2
        answer = raw(server, "POST", f"/v1/tokens/{rotated.record.id}/revoke", rotated.token)
        assert (answer.status_code, answer.json()["error"]["code"]) == (409, "last_operator_token")

    def test_nor_through_an_approved_committee_request(self, server: LiveServer) -> None:
        """Two agents of the default committee approve revoking the founder's only token:
        the revocation is still refused (409, audited)."""
        with server.client() as op:
            (founder,) = op.do(Calls.tokens("founder"))
        with server.client("gene") as gene:
            req = gene.do(
                Calls.request_approval("revoke_token", {"token_id": founder.id}, "leaked")
            )
        with server.client("sentinel") as sentinel:
            sentinel.do(Calls.vote(req.id, "approve", "seen in a paste"))
        with server.client("jarvis") as jarvis:
            assert jarvis.do(Calls.vote(req.id, "approve", "revoke it")).state == "approved"
        with server.client("gene") as gene, pytest.raises(LastOperatorToken):
            gene.do(Calls.revoke_token(founder.id, approval=req.id))
        with server.client() as op:
            op.do(Calls.tokens())  # the founder is still in
        assert any(r["actor"] == "agent:gene" for r in _refused(server, "token.revoke"))


class TestHumanVotes:
    """An operator token named X votes as human X only if X is a configured human."""

    def test_a_humans_second_token_votes_as_that_human(self, server: LiveServer) -> None:
        with server.client() as op:
            laptop = op.do(Calls.create_token(PrincipalKind.OPERATOR, "founder", label="laptop"))
        with server.client("jarvis") as jarvis:
            req = jarvis.do(Calls.request_approval("production_deploy", {"v": "1"}, "ready"))
        with server.client(token=laptop.token) as founder:
            done = founder.do(Calls.vote(req.id, "approve", "ship it"))
        assert done.state == "approved"

    def test_an_operator_who_is_no_configured_human_is_no_human(self, server: LiveServer) -> None:
        with server.client() as op:
            mallory = op.do(Calls.create_token(PrincipalKind.OPERATOR, "mallory")).token
        with server.client("jarvis") as jarvis:
            deploy = jarvis.do(Calls.request_approval("production_deploy", {"v": "2"}, "ready"))
            email = jarvis.do(
                Calls.request_approval("send_external_email", {"to": "x@example.com"}, "pr")
            )
        with server.client(token=mallory) as c:
            with pytest.raises(Forbidden, match="not on the committee"):
                c.do(Calls.vote(email.id, "approve", "sure"))
            with pytest.raises(Forbidden, match="only a human may veto"):
                c.do(Calls.veto(deploy.id, "no"))
            with pytest.raises(Forbidden):
                c.do(Calls.authorize("revoke_token", {"token_id": 1}))  # "human" may, alone
            c.do(Calls.tokens())  # still an operator: the API's operator routes are open
        with server.client() as op:
            assert op.do(Calls.approval(deploy.id)).state == "pending"
