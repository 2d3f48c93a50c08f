"""Incidents and approvals on both stores: timelines, one vote each, compare-and-set decisions."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from mcos.domain.approvals import ApprovalState, payload_hash
from mcos.domain.incidents import IncidentState, fingerprint
from mcos.exceptions import Conflict
from mcos.store import Store
from mcos.store.protocol import NewApproval, NewIncident


def _report(reporter: str = "agent:sentinel", severity: str = "P0") -> NewIncident:
    summary = "metric directories missing fleet-wide"
    return NewIncident(
        severity, "reported", summary, "ls /var/metrics: empty", reporter,
        fingerprint(summary), ((reporter, "reported", severity, summary),),
    )  # fmt: skip


def _request(payload: dict[str, object] | None = None) -> NewApproval:
    body = payload or {"plan": "phase 1", "env": "staging"}
    return NewApproval(
        "production_deploy", body, payload_hash("production_deploy", body), "agent:jarvis",
        "phase 1 is ready", "founder", "forge", "staging only", timedelta(hours=24),
    )  # fmt: skip


class TestIncidents:
    """A timeline per incident; votes counted once; transitions compare-and-set."""

    async def test_report_find_and_group(self, store: Store) -> None:
        made = await store.create_incident(_report())
        assert (made.state, made.severity, made.reports) == (IncidentState.REPORTED, "P0", 1)
        found = await store.open_incident(fingerprint("Fleet-wide: metric directories missing"))
        assert found is not None
        assert found.id == made.id
        assert await store.reports_since("agent:sentinel", 3600) == 1
        assert await store.reports_since("agent:gene", 3600) == 0

    async def test_one_vote_per_confirmer_and_severity(self, store: Store) -> None:
        made = await store.create_incident(_report())
        await store.record_incident_event(made.id, "agent:jarvis", "confirm", "P1", "checked")
        with pytest.raises(Conflict, match="counts once"):
            await store.record_incident_event(made.id, "agent:jarvis", "confirm", "P1", "again")
        await store.record_incident_event(made.id, "agent:jarvis", "confirm", "P0", "worse")
        actions = [(e.actor, e.action, e.severity) for e in await store.incident_events(made.id)]
        assert actions == [
            ("agent:sentinel", "reported", "P0"),
            ("agent:jarvis", "confirm", "P1"),
            ("agent:jarvis", "confirm", "P0"),
        ]

    async def test_transitions_compare_and_set(self, store: Store) -> None:
        made = await store.create_incident(_report())
        moved = await store.transition_incident(
            made.id, "reported", "confirmed", "P1", ("agent:jarvis", "confirmed", "gate met")
        )
        assert (moved.state, moved.severity, moved.reported_as) == ("confirmed", "P1", "P0")
        with pytest.raises(Conflict, match="no longer reported"):
            await store.transition_incident(
                made.id, "reported", "dismissed", "P1", ("human:founder", "dismissed", "no")
            )
        assert [i.id for i in await store.incidents(state="confirmed")] == [made.id]
        assert await store.open_incident("nothing like it") is None


class TestApprovals:
    """One pending request per action and payload; one vote per member; decided once."""

    async def test_duplicate_pending_request_points_at_the_open_one(self, store: Store) -> None:
        first = await store.create_approval(_request())
        assert first.state is ApprovalState.PENDING
        assert first.payload == {"plan": "phase 1", "env": "staging"}
        with pytest.raises(Conflict, match=f"request {first.id} for production_deploy"):
            await store.create_approval(_request())
        other = await store.create_approval(_request({"plan": "phase 2"}))
        assert other.id != first.id

    async def test_votes_once_and_decided_once(self, store: Store) -> None:
        req = await store.create_approval(_request())
        await store.add_vote(req.id, "human:founder", "approve", "looks safe")
        with pytest.raises(Conflict, match="votes once"):
            await store.add_vote(req.id, "human:founder", "deny", "changed my mind")
        assert [v.vote for v in await store.votes(req.id)] == ["approve"]
        done = await store.decide_approval(req.id, "approved", "human:founder", "quorum met")
        assert done.state is ApprovalState.APPROVED
        assert done.decided_at is not None
        with pytest.raises(Conflict, match="no longer pending"):
            await store.decide_approval(req.id, "vetoed", "human:founder", "too late")
        linked = await store.set_directive(req.id, 42)
        assert linked.directive_id == 42
        assert await store.acknowledge_directive(req.id) is not None
        assert await store.acknowledge_directive(req.id) is None
        # Once decided, the same action and payload may be requested again.
        assert (await store.create_approval(_request())).id != req.id


def _overdue(n: int) -> NewApproval:
    payload = {"n": n}
    return NewApproval(
        "production_deploy", payload, payload_hash("production_deploy", payload),
        "agent:jarvis", "r", "founder", None, "", timedelta(0),
    )  # fmt: skip


class TestTerminalStates:
    """The store's side of 'every item reaches a terminal state'."""

    async def test_veto_and_acknowledgement_exclude_each_other(self, store: Store) -> None:
        """An approved request is either withdrawn or acknowledged, never both."""
        made = await store.create_approval(_request())
        await store.decide_approval(made.id, "approved", "operator:founder", "go")
        withdrawn = await store.withdraw_approval(made.id, "operator:founder", "stop")
        assert withdrawn is not None
        assert (withdrawn.state, withdrawn.decided_by) == (ApprovalState.VETOED, "operator:founder")
        assert await store.acknowledge_directive(made.id) is None  # the veto won
        other = await store.create_approval(_request({"plan": "phase 2"}))
        await store.decide_approval(other.id, "approved", "operator:founder", "go")
        acked = await store.acknowledge_directive(other.id)
        assert acked is not None
        assert acked.acknowledged_at is not None
        assert await store.withdraw_approval(other.id, "operator:founder", "late") is None
        pending = await store.create_approval(_request({"plan": "phase 3"}))
        assert await store.withdraw_approval(pending.id, "operator:founder", "x") is None

    async def test_due_lists_reach_past_any_page(self, store: Store) -> None:
        """Every overdue request and every stale report is listed, oldest first, however many
        newer ones there are."""
        overdue = [await store.create_approval(_overdue(i)) for i in range(3)]
        fresh = await store.create_approval(_request())
        due = await store.approvals_due(limit=10)
        assert [a.id for a in due] == [a.id for a in overdue]
        assert fresh.id not in {a.id for a in due}
        old = await store.create_incident(_report())
        assert [i.id for i in await store.incidents_unconfirmed(0, limit=10)] == [old.id]
        assert await store.incidents_unconfirmed(3600, limit=10) == []

    async def test_a_racing_veto_and_acknowledgement_have_one_winner(self, store: Store) -> None:
        """Fired together, many times: exactly one of them takes effect each time."""
        for n in range(10):
            made = await store.create_approval(_request({"race": n}))
            await store.decide_approval(made.id, "approved", "operator:founder", "go")
            vetoed, acked = await asyncio.gather(
                store.withdraw_approval(made.id, "operator:founder", "stop"),
                store.acknowledge_directive(made.id),
            )
            assert (vetoed is None) != (acked is None)
            final = await store.approval(made.id)
            assert final is not None
            assert (final.state is ApprovalState.VETOED) == (final.acknowledged_at is None)
