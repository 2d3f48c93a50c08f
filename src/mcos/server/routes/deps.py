"""Dependencies shared by the routes: the caller, and who may touch which inbox."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from mcos.domain.audit import AuditEvent
from mcos.domain.leases import FENCE_HEADER, stale
from mcos.domain.tokens import Principal, PrincipalKind
from mcos.exceptions import Fenced, Forbidden
from mcos.server.context import MissionControl, mission_control

MC = Annotated[MissionControl, Depends(mission_control)]


READS = frozenset({"GET", "HEAD", "OPTIONS"})


async def current_principal(
    mc: MC,
    request: Request,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
    x_mcos_fence: Annotated[
        int | None,
        Header(description="The agent instance's fencing token (from its supervisor's lease)."),
    ] = None,
) -> Principal:
    """The authenticated caller (401 otherwise); an agent instance whose fencing token is older
    than its agent's current lease is refused (409 ``fenced``) — another instance took over —
    and so is an agent's write without a fencing token once one was issued for the agent."""
    principal = await mc.auth.principal(authorization)
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
