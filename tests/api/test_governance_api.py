"""Governance through the API: gates, committees, revocation — and every adversarial attempt
refused with the right status and audited."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import cast

import pytest

from mcos.client import Calls
from mcos.domain.messages import MessageKind
from mcos.domain.tokens import PrincipalKind
from mcos.exceptions import (
    AuthError,
    Conflict,
    Forbidden,
    IdempotencyConflict,
    TooManyReports,
)
from tests.api.conftest import LiveServer, migrate, raw, serve
from tests.api.test_dashboard import _signed_in
from tests.channels.test_paging import (
    FOUNDER,
    TOKEN,
    paged,  # noqa: F401 (the fixture, for TestGatePages)
    wait_for,
)
from tests.fakes.telegram_server import FakeTelegram
from tests.store.conftest import drop_pg_database, migrated_database
from tests.waiting import wait_until

# The test directory: jarvis (orchestrator), gene (ops), sentinel (security); founder (human).


def _refusals(server: LiveServer, action: str) -> list[str]:
    with server.client() as op:
        return [
            r.detail["rule"] for r in op.do(Calls.audit(action=action)) if r.outcome == "refused"
        ]


class TestIncidentGates:
    """A report above P3 is a hypothesis until its gate's confirmers confirm it."""

    def test_p3_is_logged_by_the_reporter(self, live_server: LiveServer) -> None:
        with live_server.client("gene") as gene:
            made = gene.do(Calls.report_incident("P3", "disk at 81% on web-1", "df -h"))
        assert (made.state, made.severity) == ("confirmed", "P3")

    def test_a_p0_report_stays_reported_and_reaches_only_its_confirmers(
        self, live_server: LiveServer
    ) -> None:
        with live_server.client("sentinel") as sentinel:
            made = sentinel.do(
                Calls.report_incident("P0", "metric directories missing fleet-wide", "ls: empty")
            )
        assert made.state == "reported"
        assert made.gate == "role:orchestrator + human"
        assert sorted(made.notified) == ["founder", "jarvis"]
        with live_server.client("gene") as gene:
            assert gene.do(Calls.incidents()) == []  # a hypothesis does not reach gene
            inbox = gene.do(Calls.inbox())
            assert inbox.deliveries == []

    def test_self_confirm_is_refused_and_audited(self, live_server: LiveServer) -> None:
        with live_server.client("jarvis") as jarvis:
            made = jarvis.do(Calls.report_incident("P1", "api latency 10x", "p99 4 s"))
            with pytest.raises(Forbidden, match="never confirms its own report"):
                jarvis.do(Calls.decide_incident(made.id, "confirm", "it is real"))
        assert "a reporter never confirms its own report" in _refusals(
            live_server, "incident.confirm"
        )

    def test_a_non_security_agent_cannot_confirm_p2(self, live_server: LiveServer) -> None:
        with live_server.client("jarvis") as jarvis:
            made = jarvis.do(Calls.report_incident("P2", "cert expires in 3 days", "openssl"))
        with live_server.client("gene") as gene, pytest.raises(Forbidden):
            gene.do(Calls.decide_incident(made.id, "confirm", "saw it too"))
        assert _refusals(live_server, "incident.confirm")

    def test_p2_confirmed_by_security(self, live_server: LiveServer) -> None:
        with live_server.client("gene") as gene:
            made = gene.do(Calls.report_incident("P2", "cert expires in 3 days", "openssl"))
        with live_server.client("sentinel") as sentinel:
            done = sentinel.do(Calls.decide_incident(made.id, "confirm", "checked the chain"))
        assert (done.state, done.gate_met) == ("confirmed", True)

    def test_a_report_is_dismissed_never_resolved(self, live_server: LiveServer) -> None:
        with live_server.client("jarvis") as jarvis:
            made = jarvis.do(Calls.report_incident("P0", "all disks failing", "smart"))
            with pytest.raises(Forbidden, match="never confirmed: dismiss a report"):
                jarvis.do(Calls.decide_incident(made.id, "resolve", "fixed"))
            assert jarvis.do(Calls.decide_incident(made.id, "dismiss", "false alarm")).state == (
                "dismissed"
            )

    def test_confirmed_then_escalated_then_resolved(self, live_server: LiveServer) -> None:
        with live_server.client("gene") as gene:
            made = gene.do(Calls.report_incident("P2", "error rate 4%", "grafana"))
        with live_server.client("sentinel") as sentinel:
            assert sentinel.do(Calls.decide_incident(made.id, "confirm", "seen")).state == (
                "confirmed"
            )
        with live_server.client("jarvis") as jarvis:
            up = jarvis.do(Calls.decide_incident(made.id, "confirm", "customers hit", "P1"))
            assert (up.state, up.severity) == ("escalated", "P1")
            assert "gene" not in up.notified  # the reporter knows already
            done = jarvis.do(Calls.decide_incident(made.id, "resolve", "rolled back"))
        assert done.state == "resolved"
        steps = [(e.actor, e.action, e.severity) for e in done.timeline]
        assert steps == [
            ("agent:gene", "reported", "P2"),
            ("agent:sentinel", "confirm", "P2"),
            ("agent:sentinel", "confirmed", "P2"),
            ("agent:jarvis", "confirm", "P1"),
            ("agent:jarvis", "escalated", "P1"),
            ("agent:jarvis", "resolved", "P1"),
        ]

    def test_p0_needs_orchestrator_and_a_human_each_once(self, live_server: LiveServer) -> None:
        with live_server.client("sentinel") as sentinel:
            made = sentinel.do(Calls.report_incident("P0", "database wiped", "select count"))
        with live_server.client("jarvis") as jarvis:
            half = jarvis.do(Calls.decide_incident(made.id, "confirm", "row counts zero"))
            assert (half.state, half.gate_met) == ("reported", False)
            with pytest.raises(Conflict, match="counts once"):
                jarvis.do(Calls.decide_incident(made.id, "confirm", "really"))
        with live_server.client() as founder:
            done = founder.do(Calls.decide_incident(made.id, "confirm", "confirmed by phone"))
        assert (done.state, done.severity) == ("confirmed", "P0")
        assert "gene" in done.notified  # confirmed P0 reaches the fleet

    def test_declaring_p0_directly_is_not_possible_for_any_agent(
        self, live_server: LiveServer
    ) -> None:
        for agent in ("jarvis", "gene", "sentinel"):
            with live_server.client(agent) as c:
                made = c.do(Calls.report_incident("P0", f"fire seen by {agent}", "smoke"))
                assert made.state == "reported"

    def test_confirm_as_another_agent_is_impossible(self, live_server: LiveServer) -> None:
        """The confirmer is the token's owner; a body naming someone else is refused."""
        with live_server.client("gene") as gene:
            made = gene.do(Calls.report_incident("P2", "port 22 open", "nmap"))
        response = raw(live_server, "POST", f"/v1/incidents/{made.id}/confirm",
                       live_server.tokens["gene"],
                       json={"reason": "as sentinel", "actor": "agent:sentinel"})  # fmt: skip
        assert response.status_code == 403
        assert "nobody confirms as someone else" in response.text
        assert _refusals(live_server, "incident.confirm")

    def test_related_reports_are_grouped(self, live_server: LiveServer) -> None:
        with live_server.client("sentinel") as s, live_server.client("gene") as g:
            first = s.do(Calls.report_incident("P1", "Metric directories missing fleet-wide", "ls"))
            second = g.do(
                Calls.report_incident("P1", "fleet-wide: metric directories missing", "ls")
            )
        assert second.grouped
        assert second.id == first.id
        assert second.reports == 2

    def test_reports_are_rate_limited(self, live_server: LiveServer) -> None:
        with live_server.client("gene") as gene:
            for i in range(5):
                gene.do(Calls.report_incident("P3", f"observation {i}", "x"))
            with pytest.raises(TooManyReports):
                gene.do(Calls.report_incident("P3", "observation 6", "x"))
        response = raw(live_server, "POST", "/v1/incidents", live_server.tokens["gene"],
                       json={"severity": "P3", "summary": "seven", "evidence": "x"})  # fmt: skip
        assert response.status_code == 429
        assert _refusals(live_server, "incident.report")


class TestCommittees:
    """Requests go to the matrix's committee; votes once; the requester never votes."""

    def test_directive_workflow(self, live_server: LiveServer) -> None:
        with live_server.client("jarvis") as jarvis:
            req = jarvis.do(
                Calls.request_approval(
                    "issue_directive", {"plan": "phase 1"}, "phase 1 of the migration",
                    executor="gene", constraints="no feature freeze; staging only; weekly reports",
                )
            )  # fmt: skip
            assert req.state == "pending"
            assert req.quorum == "human"
            with pytest.raises(Forbidden, match="requester never votes"):
                jarvis.do(Calls.vote(req.id, "approve", "mine"))
            with pytest.raises(Conflict, match=f"request {req.id}"):
                jarvis.do(Calls.request_approval("issue_directive", {"plan": "phase 1"}, "again"))
        with live_server.client() as founder:
            done = founder.do(Calls.vote(req.id, "approve", "go ahead"))
            assert done.state == "approved"
            assert done.directive_id is not None
            with pytest.raises(Forbidden, match="votes are closed"):
                founder.do(Calls.vote(req.id, "approve", "twice"))
        with live_server.client("gene") as gene:
            inbox = gene.do(Calls.inbox())
            directive = inbox.deliveries[0].message
            assert directive.kind.value == "directive"
            assert "staging only" in directive.body
            acked = gene.do(Calls.acknowledge_directive(req.id))
            assert acked.acknowledged_at is not None
        with live_server.client("sentinel") as sentinel, pytest.raises(Forbidden):
            sentinel.do(Calls.acknowledge_directive(req.id))

    def test_a_member_votes_once(self, live_server: LiveServer) -> None:
        with live_server.client("gene") as gene:
            req = gene.do(Calls.request_approval("revoke_token", {"token_id": 999}, "leaked"))
        assert req.quorum == "role:orchestrator + role:security"
        with live_server.client("jarvis") as jarvis:
            jarvis.do(Calls.vote(req.id, "approve", "leak confirmed"))
            with pytest.raises(Conflict, match="votes once"):
                jarvis.do(Calls.vote(req.id, "approve", "again"))

    def test_a_human_vetoes(self, live_server: LiveServer) -> None:
        with live_server.client("jarvis") as jarvis:
            req = jarvis.do(Calls.request_approval("production_deploy", {"v": "1.2"}, "ready"))
        assert req.quorum == "founder"
        with live_server.client("gene") as gene, pytest.raises(Forbidden):
            gene.do(Calls.veto(req.id, "no"))
        with live_server.client() as founder:
            assert founder.do(Calls.veto(req.id, "not on a Friday")).state == "vetoed"


class TestCompleteMediation:
    """Governed actions are checked wherever they happen."""

    def test_only_the_matrix_sends_directives_directly(self, live_server: LiveServer) -> None:
        with live_server.client("jarvis") as jarvis:  # the orchestrator may, alone
            jarvis.do(Calls.send("gene", "rotate the disks", kind=MessageKind.DIRECTIVE))
        with live_server.client("gene") as gene, pytest.raises(Forbidden, match="issue_directive"):
            gene.do(Calls.send("sentinel", "stand down", kind=MessageKind.DIRECTIVE))
        assert _refusals(live_server, "message.send")

    def test_authorize_before_acting_outside(self, live_server: LiveServer) -> None:
        with live_server.client("gene") as gene:
            with pytest.raises(Forbidden, match="production_deploy may not be done alone"):
                gene.do(Calls.authorize("production_deploy", {"v": "2.0"}))
            req = gene.do(Calls.request_approval("production_deploy", {"v": "2.0"}, "green"))
        with live_server.client() as founder:
            founder.do(Calls.vote(req.id, "approve", "ship it"))
        with live_server.client("gene") as gene:
            ok = gene.do(Calls.authorize("production_deploy", {"v": "2.0"}, req.id))
            assert ok.by == f"approval {req.id}"
            with pytest.raises(Forbidden):  # another payload is another decision
                gene.do(Calls.authorize("production_deploy", {"v": "3.0"}, req.id))
        assert _refusals(live_server, "authorize.production_deploy")


class TestExpiry:
    """A request nobody decided in time expires, and goes to the humans."""

    def test_vote_on_an_expired_request(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        from datetime import timedelta

        from tests.api.conftest import serve

        tmp = tmp_path_factory.mktemp("expiry")
        url = f"sqlite:///{tmp}/mcos.db"
        asyncio.run(migrate(url))
        with serve(url, tmp, approval_expiry=timedelta(seconds=1)) as server:
            with server.client("jarvis") as jarvis:
                req = jarvis.do(Calls.request_approval("production_deploy", {"v": 2}, "ready"))
            with server.client() as founder:
                # The request's 1 s is over on Mission Control's clock.
                wait_until(
                    f"Mission Control's clock past {req.expires_at}",
                    lambda: founder.do(Calls.time()).now > req.expires_at,
                )
                with pytest.raises(Forbidden, match="expired: votes are closed"):
                    founder.do(Calls.vote(req.id, "approve", "too late"))
                got = founder.do(Calls.inbox(inbox="founder", limit=20))
                subjects = [d.message.subject for d in got.deliveries]
                assert any(s.startswith("Expired without a decision") for s in subjects)
                assert founder.do(Calls.approval(req.id)).state == "expired"
            assert _refusals(server, "approval.vote")

    def test_reminders_then_expiry_by_the_sweeper(
        self, tmp_path_factory: pytest.TempPathFactory
    ) -> None:
        from datetime import timedelta

        from tests.api.conftest import serve

        tmp = tmp_path_factory.mktemp("sweep")
        url = f"sqlite:///{tmp}/mcos.db"
        asyncio.run(migrate(url))
        with serve(url, tmp, approval_expiry=timedelta(seconds=3), sweep_seconds=0.2) as server:
            with server.client("jarvis") as jarvis:
                req = jarvis.do(Calls.request_approval("production_deploy", {"v": 3}, "ready"))
            subjects: list[str] = []
            with server.client() as founder:

                def expired() -> bool:
                    got = founder.do(Calls.inbox(inbox="founder", limit=20, wait=1))
                    subjects.extend(d.message.subject for d in got.deliveries)
                    return any(s.startswith("Expired without a decision") for s in subjects)

                wait_until("the expiry notice in the founder's inbox", expired, interval=0)
                assert subjects[0].startswith("Approval needed: production_deploy")
                assert any(
                    s.startswith("Reminder: your vote on production_deploy") for s in subjects
                )
                assert any(s.startswith("Expired without a decision") for s in subjects)
                assert founder.do(Calls.approval(req.id)).state == "expired"


class TestGovernedRevocation:
    """No single agent revokes a token; a quorum's approved request does, at once."""

    def test_alone_refused_with_quorum_done(self, live_server: LiveServer) -> None:
        with live_server.client() as op:
            victim = op.do(Calls.create_token(PrincipalKind.AGENT, "jarvis", label="spare"))
        with live_server.client("gene") as gene:
            with pytest.raises(Forbidden, match="revoke_token needs an approved request"):
                gene.do(Calls.revoke_token(victim.record.id))
            req = gene.do(
                Calls.request_approval("revoke_token", {"token_id": victim.record.id}, "leaked")
            )
        with live_server.client("sentinel") as sentinel:
            half = sentinel.do(Calls.vote(req.id, "approve", "seen in a paste"))
            assert half.state == "pending"  # security voted; the orchestrator has not
        with live_server.client("jarvis") as jarvis:
            done = jarvis.do(Calls.vote(req.id, "approve", "rotate it"))
            assert done.state == "approved"
        with live_server.client("gene") as gene:
            gene.do(Calls.revoke_token(victim.record.id, approval=req.id))
        with pytest.raises(AuthError), live_server.client(token=victim.token) as c:
            c.do(Calls.inbox())
        assert _refusals(live_server, "token.revoke")

    def test_the_only_orchestrators_request_is_decided_by_security(
        self, live_server: LiveServer
    ) -> None:
        """The only orchestrator's own revocation request fills the orchestrator's seat; the
        security agent's vote decides it (it used to dead-end: denied whatever anyone did)."""
        with live_server.client("jarvis") as jarvis:
            req = jarvis.do(Calls.request_approval("revoke_token", {"token_id": 1}, "mine"))
        assert req.notified == ["sentinel"]
        with live_server.client("sentinel") as sentinel:
            done = sentinel.do(Calls.vote(req.id, "approve", "ok"))
        assert done.state == "approved"

    def test_a_committee_that_cannot_finish_denies(self, live_server: LiveServer) -> None:
        """When no member left could make it pass, the request is denied at once."""
        with live_server.client("jarvis") as jarvis:
            req = jarvis.do(Calls.request_approval("revoke_token", {"token_id": 1}, "mine"))
        with live_server.client("sentinel") as sentinel:
            done = sentinel.do(Calls.vote(req.id, "deny", "not leaked"))
        assert done.state == "denied"  # the only other member said no


class TestForgery:
    """What a caller cannot forge: its identity, or a reused idempotency key."""

    def test_forged_sender_and_replayed_key(self, live_server: LiveServer) -> None:
        response = raw(live_server, "POST", "/v1/messages", live_server.tokens["gene"],
                       json={"to": "jarvis", "body": "x", "sender": "sentinel"})  # fmt: skip
        assert response.status_code == 403
        with live_server.client("gene") as gene:
            gene.do(Calls.send("jarvis", "one", idempotency_key="k1"))
            with pytest.raises(IdempotencyConflict):
                gene.do(Calls.send("jarvis", "two", idempotency_key="k1"))
        rules = _refusals(live_server, "message.send")
        assert "the sender of a message is the token's owner" in rules
        assert "an idempotency key names one message" in rules

    def test_a_revoked_token_used_once_more(self, live_server: LiveServer) -> None:
        with live_server.client() as op:
            spare = op.do(Calls.create_token(PrincipalKind.AGENT, "gene", label="spare"))
            op.do(Calls.revoke_token(spare.record.id))
        with pytest.raises(AuthError, match="revoked"), live_server.client(token=spare.token) as c:
            c.do(Calls.inbox())
        with live_server.client() as op:
            used = op.do(Calls.audit(action="auth.revoked_token_used"))
        assert [(r.actor, r.outcome) for r in used] == [("agent:gene", "refused")]

    def test_bad_severity_named(self, live_server: LiveServer) -> None:
        response = raw(live_server, "POST", "/v1/incidents", live_server.tokens["gene"],
                       json={"severity": "P9", "summary": "x"})  # fmt: skip
        assert response.status_code == 422
        assert "severity" in response.text


class TestNoDeadEnd:
    """The issue's two dead ends, in the test fleet where jarvis is the only orchestrator and
    the founder the only human: each report now reaches its confirmers and is decided."""

    def test_the_only_orchestrators_p1_is_confirmed_by_a_human(
        self, live_server: LiveServer
    ) -> None:
        with live_server.client("jarvis") as jarvis:
            made = jarvis.do(Calls.report_incident("P1", "checkout 500s", "5% of requests"))
            assert made.state == "reported"
            assert made.notified == ["founder"]  # it used to notify nobody
            with pytest.raises(Forbidden, match="never confirms its own report"):
                jarvis.do(Calls.decide_incident(made.id, "confirm", "mine"))
        with live_server.client("gene") as gene:
            with pytest.raises(Forbidden):
                gene.do(Calls.decide_incident(made.id, "confirm", "ops is not a P1 confirmer"))
            assert gene.do(Calls.inbox()).deliveries == []  # no alarm before it is confirmed
        with live_server.client() as founder:
            asked = founder.do(Calls.inbox(inbox="founder", limit=20)).deliveries
            assert [d.message.sender for d in asked] == ["mission-control"]
            assert asked[0].message.meta == {"incident": str(made.id), "gate": "P1"}
            done = founder.do(Calls.decide_incident(made.id, "confirm", "reproduced it"))
        assert (done.state, done.severity, done.gate_met) == ("confirmed", "P1", True)
        assert sorted(done.notified) == ["gene", "sentinel"]

    def test_the_only_humans_p0_is_confirmed_by_the_orchestrator(
        self, live_server: LiveServer
    ) -> None:
        with live_server.client() as founder:
            made = founder.do(Calls.report_incident("P0", "customer data on a paste site", "url"))
            assert made.state == "reported"
            assert made.notified == ["jarvis"]
            with pytest.raises(Forbidden, match="never confirms its own report"):
                founder.do(Calls.decide_incident(made.id, "confirm", "mine"))
        with live_server.client("sentinel") as sentinel, pytest.raises(Forbidden):
            sentinel.do(Calls.decide_incident(made.id, "confirm", "security may not confirm P0"))
        with live_server.client("jarvis") as jarvis:
            done = jarvis.do(Calls.decide_incident(made.id, "confirm", "the dump is ours"))
        # Two principals: the founder's report fills the human seat, jarvis the orchestrator's.
        assert (done.state, done.severity) == ("confirmed", "P0")
        assert sorted(done.notified) == ["gene", "sentinel"]

    def test_an_agents_p0_still_needs_a_human(self, live_server: LiveServer) -> None:
        """The reporter's seat never makes agents enough for a P0: jarvis reports, sentinel
        cannot vote, and the P0 waits for the founder."""
        with live_server.client("jarvis") as jarvis:
            made = jarvis.do(Calls.report_incident("P0", "all backups gone", "s3 ls: empty"))
        assert made.notified == ["founder"]
        with live_server.client("sentinel") as sentinel, pytest.raises(Forbidden):
            sentinel.do(Calls.decide_incident(made.id, "confirm", "agreed"))
        with live_server.client() as founder:
            assert founder.do(Calls.incident(made.id)).state == "reported"
            done = founder.do(Calls.decide_incident(made.id, "confirm", "checked the bucket"))
        assert done.state == "confirmed"


class TestVetoUntilAcknowledged:
    """A human's veto holds from the request until the executor acknowledges the directive."""

    def _approved_directive(self, server: LiveServer) -> int:
        with server.client("jarvis") as jarvis:
            req = jarvis.do(
                Calls.request_approval(
                    "issue_directive", {"plan": "migrate"}, "move the db",
                    executor="gene", constraints="staging only",
                )
            )  # fmt: skip
        with server.client() as founder:
            done = founder.do(Calls.vote(req.id, "approve", "go"))
        assert (done.state, done.directive_id is not None) == ("approved", True)
        return req.id

    def test_veto_after_approval_withdraws_the_directive(self, live_server: LiveServer) -> None:
        approval = self._approved_directive(live_server)
        with live_server.client() as founder:
            vetoed = founder.do(Calls.veto(approval, "not before the audit"))
        assert (vetoed.state, vetoed.decided_by) == ("vetoed", "operator:founder")
        assert vetoed.notified == ["gene", "jarvis"]
        with live_server.client("gene") as gene:
            got = [d.message for d in gene.do(Calls.inbox(limit=10)).deliveries]
            assert [m.kind for m in got] == [MessageKind.DIRECTIVE, MessageKind.DIRECTIVE]
            assert got[1].subject.startswith(f"Directive withdrawn (approval {approval})")
            assert got[1].meta == {"approval": str(approval), "withdrawn": "true"}
            with pytest.raises(Forbidden, match="vetoed by operator:founder"):
                gene.do(Calls.acknowledge_directive(approval))
            with pytest.raises(Forbidden):
                gene.do(Calls.authorize("issue_directive", {"plan": "migrate"}, approval))
        assert any("vetoed" in r for r in _refusals(live_server, "directive.acknowledge"))

    def test_veto_after_acknowledgement_is_refused_with_the_reason(
        self, live_server: LiveServer
    ) -> None:
        approval = self._approved_directive(live_server)
        with live_server.client("gene") as gene:
            gene.do(Calls.acknowledge_directive(approval))
        with live_server.client() as founder:
            with pytest.raises(Conflict, match="directive acknowledged by gene"):
                founder.do(Calls.veto(approval, "too late"))
            assert founder.do(Calls.approval(approval)).state == "approved"
        assert any("acknowledged" in r for r in _refusals(live_server, "approval.veto"))

    def test_the_dashboard_offers_the_veto_until_acknowledged(
        self, live_server: LiveServer
    ) -> None:
        approval = self._approved_directive(live_server)
        withdraw = f'action="/approvals/{approval}/veto"'
        with _signed_in(live_server) as (web, csrf):
            assert withdraw in web.get("/approvals").text
            done = web.post(f"/approvals/{approval}/veto", data={"reason": "no", "csrf": csrf})
            assert done.status_code == 303
            assert withdraw not in web.get("/approvals").text
        with live_server.client() as op:
            assert op.do(Calls.approval(approval)).state == "vetoed"

    def test_veto_of_a_decided_request_is_refused(self, live_server: LiveServer) -> None:
        with live_server.client("jarvis") as jarvis:
            req = jarvis.do(Calls.request_approval("production_deploy", {"v": "9"}, "ready"))
        with live_server.client() as founder:
            founder.do(Calls.veto(req.id, "no"))
            with pytest.raises(Conflict, match="already vetoed: nothing to veto"):
                founder.do(Calls.veto(req.id, "twice"))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def sweeping_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LiveServer]:
    """Mission Control whose reports expire after 1 s and requests after 2 s, swept every 0.2 s."""
    url = migrated_database(request.param, tmp_path)
    try:
        with serve(
            url,
            tmp_path,
            incident_expiry=timedelta(seconds=1),
            approval_expiry=timedelta(seconds=2),
            sweep_seconds=0.2,
        ) as server:
            yield server
    finally:
        if request.param == "postgres":
            drop_pg_database(url)


def _wait_for_subject(server: LiveServer, who: str, prefix: str) -> list[str]:
    """Long-poll ``who``'s inbox until a message whose subject starts with ``prefix`` comes."""
    subjects: list[str] = []
    deadline = time.monotonic() + 30
    with server.client(who) as c:
        while time.monotonic() < deadline:
            got = c.do(Calls.inbox(limit=20, wait=1))
            for d in got.deliveries:
                subjects.append(d.message.subject)
                c.do(Calls.ack(d.id, d.receipt))
            if any(s.startswith(prefix) for s in subjects):
                return subjects
    pytest.fail(f"no {prefix!r} message within 30 s; got {subjects}")


class TestExpiryToATerminalState:
    """Whatever nobody decides, the sweeper brings to a terminal state and says so."""

    def test_an_unconfirmed_report_expires_dismissed(self, sweeping_server: LiveServer) -> None:
        with sweeping_server.client("sentinel") as sentinel:
            made = sentinel.do(Calls.report_incident("P1", "odd ssh logins", "auth.log"))
        _wait_for_subject(sweeping_server, "sentinel", "Report expired unconfirmed")
        with sweeping_server.client() as op:
            done = op.do(Calls.incident(made.id))
            assert done.state == "dismissed"
            last = done.timeline[-1]
            assert (last.actor, last.action) == ("mission-control", "expired")
            with pytest.raises(Forbidden, match="can no longer be confirmed"):
                op.do(Calls.decide_incident(made.id, "confirm", "too late"))
            assert [r.actor for r in op.do(Calls.audit(action="incident.expired"))] == [
                "mission-control"
            ]

    def test_a_request_expires_and_the_requester_is_told(self, sweeping_server: LiveServer) -> None:
        with sweeping_server.client("jarvis") as jarvis:
            req = jarvis.do(Calls.request_approval("production_deploy", {"v": 4}, "ready"))
        _wait_for_subject(sweeping_server, "jarvis", f"Request {req.id} expired")
        with sweeping_server.client() as op:
            assert op.do(Calls.approval(req.id)).state == "expired"


class TestGatePages:
    """A report pages the humans whose vote can decide it, once per incident and level."""

    def test_a_p1_pages_its_human_confirmer_once(self, request: pytest.FixtureRequest) -> None:
        server, telegram = cast(tuple[LiveServer, FakeTelegram], request.getfixturevalue("paged"))
        with (
            server.client("jarvis") as jarvis,
            server.client("sentinel") as sentinel,
            server.client() as founder,
        ):
            # sentinel's P1 goes to the orchestrator only: the founder's vote could not meet it
            sentinel.do(Calls.report_incident("P1", "tls cert expired on api", "curl -v"))
            made = jarvis.do(Calls.report_incident("P1", "queue backlog 2h", "depth 90k"))
            again = jarvis.do(Calls.report_incident("P1", "backlog 2h queue", "depth 95k"))
            assert again.grouped
            wait_for(lambda: len(founder.do(Calls.pages())) == 1)
            wait_for(lambda: len(telegram.texts(TOKEN, FOUNDER)) == 1)
            (page,) = founder.do(Calls.pages())
            assert (page.kind, page.state, page.key) == ("urgent", "sent", f"incident:{made.id}:P1")
            (text,) = telegram.texts(TOKEN, FOUNDER)
            assert f"Incident {made.id}, reported by agent:jarvis as P1" in text


class TestSeatAttacks:
    """The reporter's seat cannot be stretched beyond what the reporter itself claimed."""

    def test_a_p2_report_is_nobodys_p0_confirmation(self, live_server: LiveServer) -> None:
        """jarvis reports a P2; the founder alone cannot escalate it to P0 on jarvis's seat."""
        with live_server.client("jarvis") as jarvis:
            made = jarvis.do(Calls.report_incident("P2", "disk errors on db-2", "dmesg"))
        with live_server.client("sentinel") as sentinel:
            sentinel.do(Calls.decide_incident(made.id, "confirm", "seen"))
        with live_server.client() as founder:
            up = founder.do(Calls.decide_incident(made.id, "confirm", "worse", "P0"))
        assert (up.state, up.severity, up.gate_met) == ("confirmed", "P2", False)

    def test_a_vote_then_a_re_report_does_not_count_twice(self, live_server: LiveServer) -> None:
        """jarvis confirms sentinel's P0, then re-reports it: its vote no longer counts, so the
        founder's vote fills the human seat but the orchestrator's seat is jarvis's report —
        two principals besides sentinel, still a human among them."""
        with live_server.client("sentinel") as sentinel:
            made = sentinel.do(Calls.report_incident("P0", "root login from abroad", "auth.log"))
        with live_server.client("jarvis") as jarvis:
            jarvis.do(Calls.decide_incident(made.id, "confirm", "seen"))
            again = jarvis.do(Calls.report_incident("P0", "login from abroad root", "auth.log"))
            assert again.grouped
        with live_server.client("gene") as gene:
            assert gene.do(Calls.inbox()).deliveries == []
        with live_server.client() as founder:
            assert founder.do(Calls.incident(made.id)).state == "reported"
            done = founder.do(Calls.decide_incident(made.id, "confirm", "verified"))
        assert (done.state, done.severity) == ("confirmed", "P0")


class TestConflictsAudited:
    """A 409 is a refusal too: audited with its rule, like every 403."""

    def test_second_vote_second_confirmation_and_duplicate_request_are_audited(
        self, live_server: LiveServer
    ) -> None:
        """Before: each answered 409 and left no trace in the audit log."""
        with live_server.client("gene") as gene:
            req = gene.do(Calls.request_approval("revoke_token", {"token_id": 998}, "leaked"))
            with pytest.raises(Conflict, match="already pending"):
                gene.do(Calls.request_approval("revoke_token", {"token_id": 998}, "again"))
        with live_server.client("sentinel") as sentinel:
            p0 = sentinel.do(Calls.report_incident("P0", "backups deleted", "ls /backups"))
        with live_server.client("jarvis") as jarvis:
            jarvis.do(Calls.vote(req.id, "approve", "leak confirmed"))
            second = raw(live_server, "POST", f"/v1/approvals/{req.id}/votes",
                         live_server.tokens["jarvis"],
                         json={"vote": "approve", "rationale": "again"})  # fmt: skip
            assert second.status_code == 409
            jarvis.do(Calls.decide_incident(p0.id, "confirm", "gone"))
            with pytest.raises(Conflict, match="counts once"):
                jarvis.do(Calls.decide_incident(p0.id, "confirm", "really gone"))
        assert _refusals(live_server, "approval.vote") == [
            f"agent:jarvis already voted on request {req.id} (a member votes once)"
        ]
        assert any("counts once" in r for r in _refusals(live_server, "incident.confirm"))
        assert any("already pending" in r for r in _refusals(live_server, "approval.request"))
        with live_server.client() as op:
            refused = op.do(Calls.audit(action="approval.vote"))
            assert [(r.actor, r.targets) for r in refused if r.outcome == "refused"] == [
                ("agent:jarvis", {"approval": str(req.id)})
            ]
