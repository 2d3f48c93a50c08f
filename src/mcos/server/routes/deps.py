"""Dependencies shared by the routes: the caller, and who may touch which inbox."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Path, Request
from pydantic import WithJsonSchema

from mcos.api_models import MAX_ID
from mcos.domain.audit import AuditEvent
from mcos.domain.leases import FENCE_HEADER, stale
from mcos.domain.tokens import Principal, PrincipalKind
from mcos.exceptions import Fenced, Forbidden
from mcos.server.access_log import PRINCIPAL
from mcos.server.context import MissionControl, mission_control


async def _mission_control(request: Request) -> MissionControl:
    """:func:`mission_control` as an ``async`` dependency: FastAPI runs a plain ``def``
    dependency in its thread pool, a thread hop on every request for an attribute read."""
    return mission_control(request)


MC = Annotated[MissionControl, Depends(_mission_control)]
RowId = Annotated[int, Path(ge=1, le=MAX_ID, description="A stored id (1 to 2^63-1).")]
"""An id in a path: out of range is a 422, never an overflow in the store."""
FENCE_SCHEMA = WithJsonSchema({"type": "integer", "minimum": 0, "maximum": MAX_ID})
"""The fence header is an integer when sent (a header cannot be null; leave it out instead)."""


HOST_ROUTES = frozenset(
    {
        ("POST", "/v1/leases/{agent}/acquire"),
        ("POST", "/v1/leases/{agent}/renew"),
        ("POST", "/v1/leases/{agent}/release"),
        ("PUT", "/v1/agents/{name}/state"),
        ("GET", "/v1/agents/{name}"),
        ("POST", "/v1/tokens"),
        ("POST", "/v1/tokens/{token_id}/revoke"),
        ("GET", "/v1/restart-requests"),  # operators' restart requests (routes/agent_control.py)
        ("POST", "/v1/restart-requests/{seq}/done"),
        ("POST", "/v1/leases/renew-batch"),  # every lease of the host in one request
    }
)
"""Everything a host principal (a supervisor) may call; each route then checks the agent is one
the host may run. Every other route refuses a host token (403, audited)."""


async def _host_route(mc: MissionControl, principal: Principal, request: Request) -> None:
    """Refuse a host token anywhere but the supervisor's routes (403, audited)."""
    route = getattr(request.scope.get("route"), "path", request.url.path)
    if (request.method, route) in HOST_ROUTES:
        return
    rule = "a host token may only hold its agents' leases, report their state and mint their tokens"
    await mc.refuse(principal, "host.route", rule, route=f"{request.method} {route}")
    raise Forbidden(f"{rule}; not {request.method} {route}", rule=rule)


READS = frozenset({"GET", "HEAD", "OPTIONS"})


async def current_principal(
    mc: MC,
    request: Request,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
    x_mcos_fence: Annotated[
        int | None,
        Header(
            ge=0,
            le=MAX_ID,
            description="The agent instance's fencing token (from its supervisor's lease).",
        ),
        FENCE_SCHEMA,
    ] = None,
) -> Principal:
    """The authenticated caller (401 otherwise); an agent instance whose fencing token is older
    than its agent's current lease is refused (409 ``fenced``) — another instance took over —
    and so is an agent's write without a fencing token once one was issued for the agent."""
    principal = await mc.auth.principal(authorization)
    setattr(request.state, PRINCIPAL, principal)  # for the access log
    if principal.kind is PrincipalKind.HOST:
        await _host_route(mc, principal, request)
    if (
        x_mcos_fence is None
        and principal.kind is PrincipalKind.AGENT
        and request.method not in READS
    ):
        await unfenced_write(mc, principal)
    if x_mcos_fence is not None and principal.kind is PrincipalKind.AGENT:
        current = await mc.store.lease(principal.name)
        if stale(x_mcos_fence, current):
            assert current is not None
            await mc.store.record(
                AuditEvent(
                    actor=principal.actor,
                    action="lease.fenced",
                    targets={"agent": principal.name},
                    detail={"presented": x_mcos_fence, "current": current.fence},
                    outcome="refused",
                )
            )
            msg = (
                f"fencing token {x_mcos_fence} of {principal.name} is stale: "
                f"{current.holder} on {current.host or '?'} runs it now (fence {current.fence})"
            )
            raise Fenced(msg, presented=x_mcos_fence, current=current.fence)
    return principal


Caller = Annotated[Principal, Depends(current_principal)]


async def unfenced_write(mc: MissionControl, principal: Principal) -> None:
    """Refuse (409 ``fenced``, audited) a write of an agent without a fencing token once a
    lease was granted for it: under a supervisor every instance carries its fence, so a write
    without one comes from outside the one live instance. An agent never leased (run by hand,
    embedded) writes without a fence as before."""
    current = await mc.store.lease(principal.name)
    if current is None or current.fence <= 0:
        return
    await mc.store.record(
        AuditEvent(
            actor=principal.actor,
            action="lease.fenced",
            targets={"agent": principal.name},
            detail={"presented": "none", "current": current.fence},
            outcome="refused",
        )
    )
    msg = (
        f"a write of {principal.name} without a fencing token ({FENCE_HEADER} missing): "
        f"a fence was issued for it ({current.holder} on {current.host or '?'}, fence "
        f"{current.fence}); send the instance's current fence"
    )
    raise Fenced(msg, presented=None, current=current.fence, missing=FENCE_HEADER)


async def require_operator(mc: MC, caller: Caller, action: str) -> None:
    """Refuse (403, audited) unless the caller is an operator."""
    if caller.kind is not PrincipalKind.OPERATOR:
        rule = f"{action} is for operators only"
        await mc.refuse(caller, action, rule)
        raise Forbidden(rule, rule=rule)


async def require_supervisor(mc: MC, caller: Caller, action: str, agent: str) -> None:
    """Refuse (403, audited) unless the caller is an operator, or the host principal of a host
    that may run ``agent`` (placed there or failing over to it)."""
    if caller.kind is PrincipalKind.OPERATOR:
        return
    if caller.kind is PrincipalKind.HOST:
        if agent in mc.settings.host_agents.get(caller.name, frozenset()):
            return
        rule = f"host {caller.name} may act only for the agents it may run"
    else:
        rule = f"{action} is for operators and supervisors (host tokens) only"
    await mc.refuse(caller, action, rule, agent=agent)
    raise Forbidden(rule, rule=rule)


async def inbox_of(mc: MissionControl, caller: Principal, inbox: str | None, action: str) -> str:
    """The inbox ``caller`` may use: an agent only its own, an operator any it names."""
    if caller.kind is PrincipalKind.OPERATOR:
        if inbox is None:
            rule = "operators must name the inbox (?inbox=NAME)"
            raise Forbidden(rule, rule=rule)
        return inbox
    if inbox is not None and inbox != caller.name:
        rule = "an agent may read only its own inbox"
        await mc.refuse(caller, action, rule, inbox=inbox)
        raise Forbidden(f"{rule} (asked for {inbox!r})", rule=rule)
    return caller.name
