"""Incidents at their gates: report, confirm, resolve, dismiss, read (what the caller may see)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from mcos.api_models import IncidentDecision, IncidentEventOut, IncidentOut, IncidentReport
from mcos.domain.incidents import Incident, IncidentState, broadcast, reporters
from mcos.domain.tokens import Principal, PrincipalKind
from mcos.exceptions import NotFound
from mcos.server.governance import Governance, Outcome
from mcos.server.routes.deps import MC, Caller, RowId
from mcos.server.routes.messages import ERRORS

router = APIRouter(prefix="/v1/incidents", tags=["incidents"])
INCIDENT_ERRORS = {**ERRORS, 429: ERRORS[409]}


async def _out(gov: Governance, incident: Incident, outcome: Outcome | None = None) -> IncidentOut:
    events = await gov.mc.store.incident_events(incident.id)
    gate = gov.matrix.gate(incident.severity)
    return IncidentOut(
        id=incident.id,
        severity=incident.severity,
        reported_as=incident.reported_as,
        state=incident.state.value,
        summary=incident.summary,
        evidence=incident.evidence,
        reporter=incident.reporter,
        reports=incident.reports,
        created_at=incident.created_at,
        updated_at=incident.updated_at,
        gate=None if gate is None else gate.describe(),
        timeline=[
            IncidentEventOut(
                at=e.at, actor=e.actor, action=e.action, severity=e.severity, reason=e.reason
            )
            for e in events
        ],
        grouped=bool(outcome and outcome.grouped),
        gate_met=bool(outcome and outcome.gate_met),
        notified=list(outcome.notified) if outcome else [],
    )


async def _visible(gov: Governance, caller: Principal, incident: Incident) -> bool:
    """An unconfirmed report is a hypothesis: only its reporters and its gate's confirmers (and
    humans) see it; a confirmed P1+ is the fleet's; a confirmed P3/P2 its parties'."""
    if caller.kind is PrincipalKind.OPERATOR:
        return True
    events = await gov.mc.store.incident_events(incident.id)
    if caller.actor in reporters(events) | {e.actor for e in events}:
        return True
    if incident.state is not IncidentState.REPORTED and broadcast(incident.severity):
        return True
    me = await gov.party(caller)
    return gov.matrix.may_vote(f"confirm_incident:{max(incident.severity, 'P2')}", me)


@router.post("", status_code=201, response_model=IncidentOut, responses=INCIDENT_ERRORS)
async def report(request: IncidentReport, mc: MC, caller: Caller) -> IncidentOut:
    """Report an observation. P3 is logged by the reporter; above P3 it waits at its gate and
    reaches only those who can confirm it. 429 past the hourly limit; a repeat of an open
    observation is grouped into it (``grouped``)."""
    gov = Governance(mc)
    outcome = await gov.report(
        caller, request.severity, request.summary, request.evidence, request.observation
    )
    assert outcome.incident is not None
    return await _out(gov, outcome.incident, outcome)


@router.get("", response_model=list[IncidentOut], responses=ERRORS)
async def list_incidents(
    mc: MC,
    caller: Caller,
    state: Annotated[str | None, Query(description="reported, confirmed, …")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[IncidentOut]:
    """Incidents the caller may see, newest first."""
    gov = Governance(mc)
    found = await mc.store.incidents(state, limit)
    return [await _out(gov, i) for i in found if await _visible(gov, caller, i)]


@router.get("/{incident_id}", response_model=IncidentOut, responses=ERRORS)
async def get_incident(incident_id: RowId, mc: MC, caller: Caller) -> IncidentOut:
    """One incident with its timeline (404 to those it has not reached)."""
    gov = Governance(mc)
    found = await mc.store.incident(incident_id)
    if found is None or not await _visible(gov, caller, found):
        raise NotFound(f"no incident {incident_id}", incident=incident_id)
    return await _out(gov, found)


@router.post("/{incident_id}/confirm", response_model=IncidentOut, responses=ERRORS)
async def confirm(
    incident_id: RowId, request: IncidentDecision, mc: MC, caller: Caller
) -> IncidentOut:
    """Vote to confirm (at ``severity``, default the reported one); the gate decides."""
    gov = Governance(mc)
    if request.actor is not None and request.actor != caller.actor:
        rule = "a decision is the token owner's: nobody confirms as someone else"
        await gov.refuse(caller, "incident.confirm", rule, claimed=request.actor)
    outcome = await gov.confirm(caller, incident_id, request.severity, request.reason)
    assert outcome.incident is not None
    current = await mc.store.incident(incident_id) or outcome.incident
    return await _out(gov, current, outcome)


@router.post("/{incident_id}/resolve", response_model=IncidentOut, responses=ERRORS)
async def resolve(
    incident_id: RowId, request: IncidentDecision, mc: MC, caller: Caller
) -> IncidentOut:
    """Mark it resolved, with the reason."""
    gov = Governance(mc)
    outcome = await gov.close(caller, incident_id, "resolved", request.reason)
    assert outcome.incident is not None
    return await _out(gov, outcome.incident, outcome)


@router.post("/{incident_id}/dismiss", response_model=IncidentOut, responses=ERRORS)
async def dismiss(
    incident_id: RowId, request: IncidentDecision, mc: MC, caller: Caller
) -> IncidentOut:
    """Dismiss it (a false alarm), with the reason."""
    gov = Governance(mc)
    outcome = await gov.close(caller, incident_id, "dismissed", request.reason)
    assert outcome.incident is not None
    return await _out(gov, outcome.incident, outcome)
