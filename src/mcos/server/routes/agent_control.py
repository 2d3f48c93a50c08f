"""An operator pauses, resumes and restarts an agent; supervisors follow restart requests.

Pause is the hold Mission Control already places on a ping-pong loop (``held_paused``): the
agent's state becomes ``paused`` with ``paused_by = mission-control``; the runtime's own reports
then change nothing, and it stops at its next report (before any model call). Resume sets the
state back to ``idle``; a paused runtime looks every ``pause_poll`` seconds and carries on.

Restart is a request recorded in the audit log (``agent.restart_requested``): the supervisor of
each host follows those records after a cursor (``GET /v1/restart-requests``), stops the agent
gracefully and starts it again at once — not counted as a crash — and then records
``agent.restarted`` (``POST /v1/restart-requests/{seq}/done``). A failed or misconfigured agent
is tried again from scratch. A request made while no supervisor runs is not replayed later: a
supervisor starting up starts its agents fresh anyway.
"""

from __future__ import annotations

from fastapi import APIRouter, Query

from mcos.api_models import MAX_ID, AgentOut
from mcos.api_operate import ControlRequest, RestartDone, RestartRequestOut, RestartRequestsOut
from mcos.domain.agent_state import AgentStatus
from mcos.domain.audit import AuditEvent
from mcos.domain.tokens import Principal, PrincipalKind
from mcos.exceptions import Forbidden, InvalidRequest, NotFound
from mcos.server.context import MissionControl
from mcos.server.routes.agents import get_agent
from mcos.server.routes.deps import MC, Caller, RowId, require_operator, require_supervisor
from mcos.server.routes.messages import ERRORS
from mcos.server.severity import PAUSED_BY
from mcos.store import AuditQuery

router = APIRouter(prefix="/v1", tags=["agents"])

REQUESTED = "agent.restart_requested"
RESTARTED = "agent.restarted"


async def _known(mc: MissionControl, name: str) -> None:
    if name not in {a.name for a in await mc.store.list_agents()}:
        raise NotFound(f"no agent {name!r}", agent=name)


async def pause(mc: MissionControl, who: Principal, name: str, reason: str) -> AgentOut:
    """Hold ``name`` paused as ``who`` (an operator), audited."""
    await require_operator(mc, who, "agent.pause")
    await _known(mc, name)
    state = next((s for s in await mc.store.agent_states() if s.name == name), None)
    info = dict(state.info) if state else {}
    info.update({"paused_by": PAUSED_BY, "paused_by_operator": who.name})
    detail = f"paused by {who.name}" + (f": {reason}" if reason else "")
    await mc.store.set_agent_state(name, AgentStatus.PAUSED.value, detail, None, info)
    await mc.store.record(AuditEvent(who.actor, "agent.pause", {"agent": name}, {"reason": reason}))
    return await get_agent(name, mc, who)


async def resume(mc: MissionControl, who: Principal, name: str, reason: str) -> AgentOut:
    """Lift a pause (Mission Control's or the runtime's own circuit breaker), audited."""
    await require_operator(mc, who, "agent.resume")
    await _known(mc, name)
    state = next((s for s in await mc.store.agent_states() if s.name == name), None)
    if state is None or state.state != AgentStatus.PAUSED.value:
        shown = state.state if state else "not started"
        raise InvalidRequest(f"{name} is not paused (it is {shown})", agent=name)
    info = {k: v for k, v in state.info.items() if k not in ("paused_by", "paused_by_operator")}
    detail = f"resumed by {who.name}" + (f": {reason}" if reason else "")
    await mc.store.set_agent_state(name, AgentStatus.IDLE.value, detail, None, info)
    await mc.store.record(
        AuditEvent(who.actor, "agent.resume", {"agent": name}, {"reason": reason})
    )
    return await get_agent(name, mc, who)


async def request_restart(
    mc: MissionControl, who: Principal, name: str, reason: str
) -> RestartRequestOut:
    """Record a restart request for the agent's supervisor to carry out."""
    await require_operator(mc, who, "agent.restart")
    await _known(mc, name)
    record = await mc.store.record(
        AuditEvent(who.actor, REQUESTED, {"agent": name}, {"reason": reason})
    )
    return RestartRequestOut(id=record.seq, agent=name, by=who.name, reason=reason, at=record.at)


@router.post("/agents/{name}/pause", response_model=AgentOut, responses=ERRORS)
async def pause_agent(name: str, mc: MC, caller: Caller, body: ControlRequest) -> AgentOut:
    """Hold the agent paused (operators): it stops before its next model call."""
    return await pause(mc, caller, name, body.reason)


@router.post("/agents/{name}/resume", response_model=AgentOut, responses=ERRORS)
async def resume_agent(name: str, mc: MC, caller: Caller, body: ControlRequest) -> AgentOut:
    """Lift a pause (operators); 422 when the agent is not paused."""
    return await resume(mc, caller, name, body.reason)


@router.post(
    "/agents/{name}/restart", status_code=202, response_model=RestartRequestOut, responses=ERRORS
)
async def restart_agent(
    name: str, mc: MC, caller: Caller, body: ControlRequest
) -> RestartRequestOut:
    """Ask the agent's supervisor to restart it (operators); 202: the supervisor does it."""
    return await request_restart(mc, caller, name, body.reason)


@router.get("/restart-requests", response_model=RestartRequestsOut, responses=ERRORS)
async def restart_requests(
    mc: MC,
    caller: Caller,
    after: int | None = Query(
        default=None, ge=0, le=MAX_ID, description="Cursor; omit to start now."
    ),
) -> RestartRequestsOut:
    """Restart requests recorded after ``after`` for agents the caller may run (a host token:
    its own agents; an operator: all). Without ``after``: none, and the current cursor."""
    if caller.kind not in (PrincipalKind.HOST, PrincipalKind.OPERATOR):
        rule = "restart requests are read by supervisors (host tokens) and operators"
        await mc.refuse(caller, "agent.restart_requests", rule)
        raise Forbidden(rule, rule=rule)
    if after is None:
        return RestartRequestsOut(requests=[], cursor=(await mc.store.audit_tip()).seq)
    mine = (
        None
        if caller.kind is PrincipalKind.OPERATOR
        else mc.settings.host_agents.get(caller.name, frozenset())
    )
    tip = (await mc.store.audit_tip()).seq  # read first: a request recorded later is > tip
    found = await mc.store.audit(AuditQuery(action=REQUESTED, after_seq=after, limit=100))
    cursor = max([after, *(r.seq for r in found)])
    if len(found) < 100:  # nothing more of that action up to the tip: skip to it
        cursor = max(cursor, tip)
    out = [
        RestartRequestOut(
            id=r.seq,
            agent=str(r.targets.get("agent", "")),
            by=r.actor.split(":", 1)[-1],
            reason=str(r.detail.get("reason", "")),
            at=r.at,
        )
        for r in found
        if r.outcome == "ok" and (mine is None or r.targets.get("agent") in mine)
    ]
    return RestartRequestsOut(requests=out, cursor=cursor)


@router.post("/restart-requests/{seq}/done", status_code=204, responses=ERRORS)
async def restart_done(seq: RowId, body: RestartDone, mc: MC, caller: Caller) -> None:
    """A supervisor started the agent again for request ``seq`` (recorded in the audit log)."""
    await require_supervisor(mc, caller, "agent.restarted", body.agent)
    await mc.store.record(
        AuditEvent(
            caller.actor,
            RESTARTED,
            {"agent": body.agent, "request": seq},
            {"pid": body.pid} if body.pid is not None else {},
        )
    )
