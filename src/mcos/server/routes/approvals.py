"""Approval requests and committees: request, vote, veto, acknowledge a directive, read."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from mcos.api_models import (
    ApprovalOut,
    ApprovalRequest,
    AuthorizeOut,
    AuthorizeRequest,
    VetoRequest,
    VoteOut,
    VoteRequest,
)
from mcos.domain.approvals import Approval
from mcos.exceptions import NotFound
from mcos.server.governance import Governance, Outcome
from mcos.server.routes.deps import MC, Caller, RowId
from mcos.server.routes.messages import ERRORS

router = APIRouter(prefix="/v1/approvals", tags=["approvals"])


async def _out(gov: Governance, a: Approval, outcome: Outcome | None = None) -> ApprovalOut:
    votes = await gov.mc.store.votes(a.id)
    return ApprovalOut(
        id=a.id,
        action=a.action,
        payload=a.payload,
        requester=a.requester,
        rationale=a.rationale,
        quorum=a.quorum,
        state=a.state.value,
        executor=a.executor,
        constraints=a.constraints,
        report_every=a.report_every,
        created_at=a.created_at,
        expires_at=a.expires_at,
        decided_at=a.decided_at,
        decided_by=a.decided_by,
        reason=a.reason,
        directive_id=a.directive_id,
        acknowledged_at=a.acknowledged_at,
        votes=[VoteOut(voter=v.voter, vote=v.vote, rationale=v.rationale, at=v.at) for v in votes],
        notified=list(outcome.notified) if outcome else [],
    )


@router.post("", status_code=201, response_model=ApprovalOut, responses=ERRORS)
async def request_approval(request: ApprovalRequest, mc: MC, caller: Caller) -> ApprovalOut:
    """Ask the matrix's committee for a governed action (409 pointing at a pending duplicate)."""
    gov = Governance(mc)
    outcome = await gov.request(
        caller,
        request.action,
        request.payload,
        request.rationale,
        request.executor,
        request.constraints,
        request.report_every,
        tainted=request.tainted,
    )
    assert outcome.approval is not None
    return await _out(gov, outcome.approval, outcome)


@router.get("", response_model=list[ApprovalOut], responses=ERRORS)
async def list_approvals(
    mc: MC,
    caller: Caller,
    state: Annotated[str | None, Query(description="pending, approved, …")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[ApprovalOut]:
    """Requests, newest first (overdue ones are expired on the way)."""
    gov = Governance(mc)
    await gov.sweep()
    return [await _out(gov, a) for a in await mc.store.approvals(state, limit)]


@router.get("/{approval_id}", response_model=ApprovalOut, responses=ERRORS)
async def get_approval(approval_id: RowId, mc: MC, caller: Caller) -> ApprovalOut:
    """One request with its votes."""
    gov = Governance(mc)
    found = await mc.store.approval(approval_id)
    if found is None:
        raise NotFound(f"no request {approval_id}", approval=approval_id)
    return await _out(gov, found)


@router.post("/{approval_id}/votes", response_model=ApprovalOut, responses=ERRORS)
async def vote(approval_id: RowId, request: VoteRequest, mc: MC, caller: Caller) -> ApprovalOut:
    """A committee member votes once, with a rationale."""
    gov = Governance(mc)
    outcome = await gov.vote(caller, approval_id, request.vote, request.rationale)
    current = await mc.store.approval(approval_id)
    assert current is not None
    return await _out(gov, current, outcome)


@router.post("/{approval_id}/veto", response_model=ApprovalOut, responses=ERRORS)
async def veto(approval_id: RowId, request: VetoRequest, mc: MC, caller: Caller) -> ApprovalOut:
    """A human vetoes a request: pending, or approved until its directive is acknowledged (the
    directive is withdrawn and the executor told); after the acknowledgement, 409 saying so."""
    gov = Governance(mc)
    outcome = await gov.veto(caller, approval_id, request.reason)
    assert outcome.approval is not None
    return await _out(gov, outcome.approval, outcome)


@router.post("/authorize", response_model=AuthorizeOut, responses=ERRORS)
async def authorize(request: AuthorizeRequest, mc: MC, caller: Caller) -> AuthorizeOut:
    """May the caller do ``action`` now? Alone if the matrix lets it; else only with an
    approved request for that action and payload that it asked for or executes. A refusal is
    403 with the rule, audited. Tools that act outside Mission Control (sending external
    e-mail, deploying) ask here first: complete mediation. With ``tainted`` (the caller's turn
    holds untrusted content) being allowed alone does not count: only such a request does."""
    gov = Governance(mc)
    how = await gov.authorize(
        caller, request.action, request.payload, request.approval_id, tainted=request.tainted
    )
    return AuthorizeOut(action=request.action, allowed=True, by=how)


@router.post("/{approval_id}/acknowledge", response_model=ApprovalOut, responses=ERRORS)
async def acknowledge(approval_id: RowId, mc: MC, caller: Caller) -> ApprovalOut:
    """The executing agent acknowledges the directive an approval issued."""
    gov = Governance(mc)
    outcome = await gov.acknowledge(caller, approval_id)
    assert outcome.approval is not None
    return await _out(gov, outcome.approval, outcome)
