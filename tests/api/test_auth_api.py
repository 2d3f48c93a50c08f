"""Authentication and authorization through a real server."""

from __future__ import annotations

import pytest

from mcos.client import Calls
from mcos.domain.tokens import PrincipalKind
from mcos.exceptions import AuthError, Forbidden
from tests.api.conftest import LiveServer, raw


class TestAuthentication:
    """Only a valid, live token gets in."""

    def test_missing(self, live_server: LiveServer) -> None:
        """No token: 401 with a hint."""
        r = raw(live_server, "GET", "/v1/inbox")
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "unauthenticated"
        assert r.headers["www-authenticate"] == "Bearer"

    def test_wrong(self, live_server: LiveServer) -> None:
        """A well-formed token that was never issued: 401."""
        forged = "mcos_abcdefghijkl_" + "A" * 43
        r = raw(live_server, "GET", "/v1/inbox", forged)
        assert r.status_code == 401
        assert forged not in r.text

    def test_right_prefix_wrong_secret(self, live_server: LiveServer) -> None:
        """A real prefix with another secret: 401."""
        real = live_server.tokens["gene"]
        forged = real[:-43] + ("B" * 43)
        assert raw(live_server, "GET", "/v1/inbox", forged).status_code == 401

    def test_malformed(self, live_server: LiveServer) -> None:
        """Garbage in the header: 401, not 500."""
        r = raw(live_server, "GET", "/v1/inbox", "hello")
        assert r.status_code == 401

    def test_revoked(self, live_server: LiveServer) -> None:
        """A revoked token stops working at once on the server that revoked it."""
        with live_server.client() as op:
            created = op.do(Calls.create_token(PrincipalKind.AGENT, "gene", label="temp"))
            with live_server.client(token=created.token) as c:
                c.do(Calls.inbox())
                op.do(Calls.revoke_token(created.record.id))
                with pytest.raises(AuthError, match="revoked"):
                    c.do(Calls.inbox())

    def test_rotate(self, live_server: LiveServer) -> None:
        """An agent rotates its own token: the new one works, the old one is revoked."""
        with live_server.client("gene") as gene:
            [mine] = gene.do(Calls.tokens())
            rotated = gene.do(Calls.rotate_token(mine.id))
        with live_server.client(token=rotated.token) as c:
            c.do(Calls.inbox())
        with live_server.client("gene") as old, pytest.raises(AuthError):
            old.do(Calls.inbox())

    def test_time_needs_no_token(self, live_server: LiveServer) -> None:
        """The authoritative clock is public."""
        assert raw(live_server, "GET", "/v1/time").status_code == 200


class TestAuthorization:
    """An agent acts only as itself; refusals are 403 and audited."""

    def test_other_agents_inbox(self, live_server: LiveServer) -> None:
        """Reading another agent's inbox is 403, naming the rule, and audited."""
        with live_server.client("gene") as gene, pytest.raises(Forbidden, match="own inbox"):
            gene.do(Calls.inbox(inbox="jarvis"))
        with live_server.client() as op:
            [entry] = op.do(Calls.audit(action="inbox.read"))
        assert entry.actor == "agent:gene"
        assert entry.outcome == "refused"
        assert entry.targets == {"inbox": "jarvis"}

    def test_ack_through_other_inbox(self, live_server: LiveServer) -> None:
        """An agent cannot ack a delivery of another agent's inbox."""
        with live_server.client("gene") as gene, live_server.client("jarvis") as jarvis:
            gene.do(Calls.send("jarvis", "x"))
            [d] = jarvis.do(Calls.inbox()).deliveries
            with pytest.raises(Forbidden):
                gene.do(Calls.ack(d.id, d.receipt or "", inbox="jarvis"))

    def test_reading_others_message(self, live_server: LiveServer) -> None:
        """A message between two agents is hidden from a third."""
        with live_server.client("gene") as gene, live_server.client("sentinel") as sentinel:
            m = gene.do(Calls.send("jarvis", "private")).message
            with pytest.raises(Forbidden):
                sentinel.do(Calls.message(m.id))

    def test_operator_only(self, live_server: LiveServer) -> None:
        """Agents cannot create tokens, read the audit log or requeue dead letters."""
        with live_server.client("gene") as gene:
            with pytest.raises(Forbidden):
                gene.do(Calls.create_token(PrincipalKind.AGENT, "jarvis"))
            with pytest.raises(Forbidden):
                gene.do(Calls.audit())
            with pytest.raises(Forbidden):
                gene.do(Calls.requeue(1))

    def test_agent_cannot_rotate_others(self, live_server: LiveServer) -> None:
        """An agent may not rotate another agent's token."""
        with live_server.client() as op:
            [jarvis_token] = op.do(Calls.tokens("jarvis"))
        with live_server.client("gene") as gene, pytest.raises(Forbidden):
            gene.do(Calls.rotate_token(jarvis_token.id))


class TestAuditTrail:
    """State changes are audited with the actor stamped from the token."""

    def test_token_changes_audited(self, live_server: LiveServer) -> None:
        """Creating and revoking a token leave records naming the operator, and verify intact."""
        with live_server.client() as op:
            created = op.do(Calls.create_token(PrincipalKind.AGENT, "gene"))
            op.do(Calls.revoke_token(created.record.id))
            actions = [(r.actor, r.action) for r in op.do(Calls.audit(limit=1000))]
            assert ("operator:founder", "token.create") in actions
            assert ("operator:founder", "token.revoke") in actions
            assert ("system", "directory.sync") in actions
            assert op.do(Calls.audit_verify()).intact

    def test_csv_export(self, live_server: LiveServer) -> None:
        """The audit log exports as CSV with a header."""
        with live_server.client() as op:
            text = op.do(Calls.audit_csv())
        header, *rows = text.strip().splitlines()
        assert header.startswith("seq,at,actor,action")
        assert rows
