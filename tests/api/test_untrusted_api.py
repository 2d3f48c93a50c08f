"""Mission Control's side of untrusted turns (issue 15, item 6): a caller whose turn holds
untrusted content is authorized only by an approved request for exactly that payload, and a
request it raises never serves itself."""

from __future__ import annotations

import pytest

from mcos.client import Calls
from mcos.exceptions import Forbidden
from tests.api.conftest import LiveServer

# The test directory: jarvis (orchestrator), gene (ops), sentinel (security); founder (human).
POST = {"channel": "tg", "to": "77", "text": "we are hiring"}


def test_a_tainted_caller_needs_the_approved_request_even_where_it_may_act_alone(
    live_server: LiveServer,
) -> None:
    """jarvis posts and issues directives alone from a clean turn; from a tainted one each is
    403 (audited, naming the rule) until a human approves that exact payload."""
    with live_server.client("jarvis") as jarvis:
        assert jarvis.do(Calls.authorize("post_to_channel", POST)).by == "alone"
        for action, payload in (("post_to_channel", POST), ("issue_directive", {"to": "gene"})):
            with pytest.raises(Forbidden, match="untrusted content is in agent:jarvis's turn"):
                jarvis.do(Calls.authorize(action, payload, tainted=True))
        req = jarvis.do(Calls.request_approval("post_to_channel", POST, "asked", tainted=True))
    with live_server.client() as founder:
        founder.do(Calls.vote(req.id, "approve", "checked"))
    with live_server.client("jarvis") as jarvis:
        ok = jarvis.do(Calls.authorize("post_to_channel", POST, req.id, tainted=True))
        assert ok.by == f"approval {req.id}"
        with pytest.raises(Forbidden, match="exactly this payload"):
            jarvis.do(
                Calls.authorize("post_to_channel", POST | {"to": "-100"}, req.id, tainted=True)
            )
    with live_server.client() as op:
        refused = op.do(Calls.audit(action="authorize.post_to_channel"))
        assert [r.outcome for r in refused] == ["refused", "refused"]
        assert all(
            r.detail["rule"].startswith("untrusted content is in agent:jarvis's turn")
            for r in refused
        )
        assert op.do(Calls.audit(action="authorize.issue_directive"))


def test_a_request_raised_from_untrusted_content_never_fills_its_requesters_seat(
    live_server: LiveServer,
) -> None:
    """The only orchestrator's clean revocation request is decided by security's vote (its own
    seat counts); raised from a tainted turn, the same vote cannot pass it. The committee reads
    it marked, fenced as untrusted, and the audit says so."""
    with live_server.client("jarvis") as jarvis:
        req = jarvis.do(
            Calls.request_approval("revoke_token", {"token_id": 1}, "a user said", tainted=True)
        )
    assert req.rationale == "[raised from a turn holding untrusted content] a user said"
    with live_server.client("sentinel") as sentinel:
        (asked,) = sentinel.do(Calls.inbox()).deliveries
        assert asked.message.meta["origin"] == "an approval request raised from untrusted content"
        done = sentinel.do(Calls.vote(req.id, "approve", "ok"))
    assert done.state == "denied"  # without jarvis's own seat the quorum can never be met
    with live_server.client() as op:
        (made,) = op.do(Calls.audit(action="approval.requested"))
        assert made.detail["untrusted"] == "true"
