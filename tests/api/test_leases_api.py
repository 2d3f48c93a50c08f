"""Leases over HTTP, and fencing: a superseded agent instance is refused on every call."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from mcos.cli import app
from mcos.client import Calls, Client
from mcos.exceptions import Fenced, Forbidden, LeaseHeld, LeaseLost, NotFound
from tests.api.conftest import LiveServer, raw
from tests.waiting import wait_until


def test_one_holder_at_a_time_and_the_refusal_names_it(live_server: LiveServer) -> None:
    with live_server.client() as op:
        lease = op.do(Calls.acquire_lease("gene", "sup-a", "mini", 15))
        assert (lease.fence, lease.holder) == (1, "sup-a")
        with pytest.raises(LeaseHeld, match="held by sup-a on host mini"):
            op.do(Calls.acquire_lease("gene", "sup-b", "vps", 15))
        response = raw(live_server, "POST", "/v1/leases/gene/acquire", live_server.operator_token,
                       json={"holder": "sup-b", "host": "vps"})  # fmt: skip
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "lease_held"
        shown = op.do(Calls.leases())
        assert [(x.agent, x.live) for x in shown] == [("gene", True)]


def test_a_stale_instance_is_fenced_out(live_server: LiveServer) -> None:
    with live_server.client() as op:
        old = op.do(Calls.acquire_lease("gene", "sup-a", "mini", 1))
        with Client(live_server.url, live_server.tokens["gene"], fence=old.fence) as gene_old:
            gene_old.do(Calls.inbox())  # the current instance may act
            # sup-a stalls past its TTL (1 s)…
            wait_until(
                "sup-a's lease to lapse",
                lambda: not any(x.live for x in op.do(Calls.leases()) if x.agent == "gene"),
            )
            new = op.do(Calls.acquire_lease("gene", "sup-b", "vps", 15))  # …sup-b took over
            assert new.fence == old.fence + 1
            with pytest.raises(Fenced, match="sup-b on vps runs it now"):
                gene_old.do(Calls.send("jarvis", "I am still here"))
            with pytest.raises(LeaseLost):
                op.do(Calls.renew_lease("gene", "sup-a", old.fence, 15))
        with Client(live_server.url, live_server.tokens["gene"], fence=new.fence) as gene_new:
            gene_new.do(Calls.send("jarvis", "the new instance"))
        with live_server.client("jarvis") as jarvis:
            got = jarvis.do(Calls.inbox())
            assert [d.message.body for d in got.deliveries] == ["the new instance"]
        fenced = op.do(Calls.audit(action="lease.fenced"))
        assert len(fenced) == 1
        assert fenced[0].detail == {"presented": 1, "current": 2}


def test_release_lets_another_supervisor_in_at_once(live_server: LiveServer) -> None:
    with live_server.client() as op:
        lease = op.do(Calls.acquire_lease("gene", "sup-a", "mini", 15))
        op.do(Calls.release_lease("gene", "sup-a", lease.fence))
        assert op.do(Calls.acquire_lease("gene", "sup-b", "vps", 15)).fence == 2


def test_only_operators_hold_leases_and_only_for_agents(live_server: LiveServer) -> None:
    with live_server.client("gene") as gene, pytest.raises(Forbidden):
        gene.do(Calls.acquire_lease("gene", "me", "h", 15))
    with live_server.client() as op, pytest.raises(NotFound):
        op.do(Calls.acquire_lease("alerts", "sup-a", "h", 15))


def test_agents_may_not_list_leases(live_server: LiveServer) -> None:
    """Before: gene read every agent's holder and host (200). Now 403, audited; operators read."""
    with live_server.client() as op:
        op.do(Calls.acquire_lease("jarvis", "sup-a", "mini", 15))
        with live_server.client("gene") as gene, pytest.raises(Forbidden, match="operators only"):
            gene.do(Calls.leases())
        assert [x.agent for x in op.do(Calls.leases())] == ["jarvis"]
        refused = op.do(Calls.audit(action="lease.list"))
        assert [(r.actor, r.outcome) for r in refused] == [("agent:gene", "refused")]


def test_once_fenced_an_agents_writes_must_carry_the_fence(live_server: LiveServer) -> None:
    """Before: while sup-a held gene's lease, a write with gene's token and no fence header
    was accepted. Now 409 naming the missing header, audited; reads stay open, the fenced
    instance writes, and an agent never leased (jarvis, run by hand) writes as before."""
    with live_server.client() as op:
        lease = op.do(Calls.acquire_lease("gene", "sup-a", "mini", 15))
        with live_server.client("gene") as bare:
            bare.do(Calls.inbox(wait=0))  # a read
            with pytest.raises(Fenced, match="without a fencing token \\(X-Mcos-Fence missing\\)"):
                bare.do(Calls.send("jarvis", "from outside the instance"))
        response = raw(live_server, "POST", "/v1/messages", live_server.tokens["gene"],
                       json={"to": "jarvis", "body": "raw"})  # fmt: skip
        assert (response.status_code, response.json()["error"]["code"]) == (409, "fenced")
        with Client(live_server.url, live_server.tokens["gene"], fence=lease.fence) as gene:
            gene.do(Calls.send("jarvis", "from the instance"))
        op.do(Calls.release_lease("gene", "sup-a", lease.fence))
        with live_server.client("gene") as bare, pytest.raises(Fenced):
            bare.do(Calls.send("jarvis", "after the release: still needs its fence"))
        with live_server.client("jarvis") as jarvis:
            jarvis.do(Calls.send("gene", "never leased, no fence"))
            got = jarvis.do(Calls.inbox(wait=0)).deliveries
            assert [d.message.body for d in got] == ["from the instance"]
        fenced = op.do(Calls.audit(action="lease.fenced"))
        assert [r.detail for r in fenced] == [{"presented": "none", "current": 1}] * 3


def test_the_cli_sends_the_fence_of_its_environment(live_server: LiveServer) -> None:
    """`mcos send` as a leased agent: refused without $MCOS_FENCE (exit 1, the missing header
    named), accepted with the instance's fence — what a sidecar of a supervised agent has."""
    with live_server.client() as op:
        lease = op.do(Calls.acquire_lease("gene", "sup-a", "mini", 15))
    args = ["send", "jarvis", "from a sidecar", "--url", live_server.url]
    env = {"MCOS_TOKEN": live_server.tokens["gene"], "COLUMNS": "300"}
    bare = CliRunner().invoke(app, args, env=env)
    assert bare.exit_code == 1
    assert "X-Mcos-Fence missing" in bare.output
    fenced = CliRunner().invoke(app, args, env={**env, "MCOS_FENCE": str(lease.fence)})
    assert fenced.exit_code == 0, fenced.output
    status = CliRunner().invoke(app, ["status", "--url", live_server.url], env=env)
    assert status.exit_code == 0, status.output  # without the lease column's holders
    assert "sup-a" not in status.output


def test_a_stale_instance_cannot_ack_what_it_claimed(live_server: LiveServer) -> None:
    """The ack checks the fence in its own statement (no lease read before it): the old
    instance's ack is refused 409 and audited, the deliveries stay claimed for the new one."""
    with live_server.client() as op, live_server.client("gene") as gene:
        old = op.do(Calls.acquire_lease("jarvis", "sup-a", "mini", 1))
        gene.do(Calls.send("jarvis", "work"))
        with Client(live_server.url, live_server.tokens["jarvis"], fence=old.fence) as jarvis:
            [delivery] = jarvis.do(Calls.inbox(visibility=600)).deliveries
            wait_until(
                "sup-a's lease to lapse",
                lambda: not any(x.live for x in op.do(Calls.leases()) if x.agent == "jarvis"),
            )
            new = op.do(Calls.acquire_lease("jarvis", "sup-b", "vps", 15))
            with pytest.raises(Fenced, match="sup-b on vps runs it now"):
                jarvis.do(Calls.ack(delivery.id, delivery.receipt))
            with pytest.raises(Fenced):
                jarvis.do(Calls.ack_many([(delivery.id, delivery.receipt)]))
        with Client(live_server.url, live_server.tokens["jarvis"], fence=new.fence) as jarvis:
            jarvis.do(Calls.ack(delivery.id, delivery.receipt))
        refused = op.do(Calls.audit(action="lease.fenced"))
        assert [r.detail for r in refused] == [{"presented": old.fence, "current": new.fence}] * 2
