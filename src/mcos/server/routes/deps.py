"""Dependencies shared by the routes: the caller, and who may touch which inbox."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Path, Request
from pydantic import WithJsonSchema

from mcos.api_models import MAX_ID
from mcos.domain.audit import AuditEvent
from mcos.domain.leases import FenceGuard
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


AuthorizationHeader = Annotated[str | None, Header(include_in_schema=False)]
FenceHeader = Annotated[
    int | None,
    Header(
        ge=0,
        le=MAX_ID,
        description="The agent instance's fencing token (from its supervisor's lease).",
    ),
    FENCE_SCHEMA,
]


async def _authenticated(
    mc: MissionControl, request: Request, authorization: str | None
) -> Principal:
    """The caller (401 otherwise), noted for the access log; a host token off its routes is
    refused."""
    principal = await mc.auth.principal(authorization)
    setattr(request.state, PRINCIPAL, principal)  # for the access log
    if principal.kind is PrincipalKind.HOST:
        await _host_route(mc, principal, request)
    return principal


async def current_principal(
    mc: MC,
    request: Request,
    authorization: AuthorizationHeader = None,
    x_mcos_fence: FenceHeader = None,
) -> Principal:
    """The authenticated caller (401 otherwise); an agent instance whose fencing token is older
    than its agent's current lease is refused (409 ``fenced``) — another instance took over —
    and so is an agent's write without a fencing token once one was issued for the agent
    (under a supervisor every instance carries its fence, so a write without one comes from
    outside the one live instance; an agent never leased writes without one as before)."""
    principal = await _authenticated(mc, request, authorization)
    if principal.kind is PrincipalKind.AGENT and (
        x_mcos_fence is not None or request.method not in READS
    ):
        guard = FenceGuard(principal.name, x_mcos_fence)
        current = await mc.store.lease(principal.name)
        if current is not None and guard.refuses(current):
            raise await fenced(mc, principal, guard.refusal(current))
    return principal


Caller = Annotated[Principal, Depends(current_principal)]


@dataclass(frozen=True)
class Writer:
    """The caller of a write whose store call checks the fence itself, in the statement that
    writes (:class:`FenceGuard`): the hot paths — send, ack — skip :data:`Caller`'s read of
    the lease, a database round trip, and the gap between that read and the write."""

    principal: Principal
    guard: FenceGuard | None
    """For an agent; None for operators and humans, who hold no lease."""


async def fenced_writer(
    mc: MC,
    request: Request,
    authorization: AuthorizationHeader = None,
    x_mcos_fence: FenceHeader = None,
) -> Writer:
    """The authenticated caller and, for an agent, the guard its write must pass."""
    principal = await _authenticated(mc, request, authorization)
    if principal.kind is not PrincipalKind.AGENT:
        return Writer(principal, None)
    return Writer(principal, FenceGuard(principal.name, x_mcos_fence))


FencedWriter = Annotated[Writer, Depends(fenced_writer)]


async def fenced(mc: MissionControl, principal: Principal, error: Fenced) -> Fenced:
    """Audit a write refused for its fence (``lease.fenced``); the error, to raise."""
    presented = error.details.get("presented")
    await mc.store.record(
        AuditEvent(
            actor=principal.actor,
            action="lease.fenced",
            targets={"agent": principal.name},
            detail={
                "presented": "none" if presented is None else presented,
                "current": error.details.get("current"),
            },
            outcome="refused",
        )
    )
    return error


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
