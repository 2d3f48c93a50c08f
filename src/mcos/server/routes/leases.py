"""Agent leases for supervisors: acquire, renew, release, list (operators)."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter

from mcos.api_models import (
    ErrorBody,
    LeaseAcquire,
    LeaseOut,
    LeaseRelease,
    LeaseRenew,
    LeaseRenewBatch,
    LeaseRenewBatchOut,
    LeaseRenewResult,
)
from mcos.domain.audit import AuditEvent
from mcos.domain.tokens import PrincipalKind
from mcos.exceptions import Forbidden, LeaseLost, McosError, NotFound
from mcos.server.routes.deps import MC, Caller, require_operator, require_supervisor
from mcos.server.routes.messages import ERRORS

router = APIRouter(prefix="/v1/leases", tags=["leases"])


async def _agent(mc: MC, agent: str) -> None:
    if await mc.store.recipient_kind(agent) != "agent":
        raise NotFound(f"no agent {agent!r}", agent=agent)


@router.post("/{agent}/acquire", response_model=LeaseOut, responses=ERRORS)
async def acquire(agent: str, request: LeaseAcquire, mc: MC, caller: Caller) -> LeaseOut:
    """Take (or keep) the right to run ``agent``; 409 ``lease_held`` names the holder."""
    await require_supervisor(mc, caller, "lease.acquire", agent)
    await _agent(mc, agent)
    before = await mc.store.lease(agent)
    lease = await mc.store.acquire_lease(
        agent, request.holder, request.host, timedelta(seconds=request.ttl_seconds)
    )
    if before is None or before.fence != lease.fence:
        # A new instance: what the one it replaces claimed and never acked (it may have lost
        # its network with a long-poll parked here, whose answer went nowhere) is offered again
        # now, not after its visibility (10 minutes for an agent); that instance is fenced out.
        released = await mc.store.release_claims(agent)
        await mc.store.record(
            AuditEvent(
                actor=caller.actor,
                action="lease.granted",
                targets={"agent": agent},
                detail={
                    "holder": lease.holder,
                    "host": lease.host,
                    "fence": lease.fence,
                    "released_claims": released,
                },
            )
        )
    return LeaseOut.of(lease)


@router.post("/{agent}/renew", response_model=LeaseOut, responses=ERRORS)
async def renew(agent: str, request: LeaseRenew, mc: MC, caller: Caller) -> LeaseOut:
    """Extend a live lease; 409 ``lease_lost`` means: stop the agent now."""
    await require_supervisor(mc, caller, "lease.renew", agent)
    lease = await mc.store.renew_lease(
        agent, request.holder, request.fence, timedelta(seconds=request.ttl_seconds)
    )
    return LeaseOut.of(lease)


@router.post("/renew-batch", response_model=LeaseRenewBatchOut, responses=ERRORS)
async def renew_batch(request: LeaseRenewBatch, mc: MC, caller: Caller) -> LeaseRenewBatchOut:
    """Extend every lease listed in one request (a supervisor renews all of its host's leases
    at once, so its cost does not grow with its agents): one result per lease, in order, each
    what the single renewal would answer — a lease no longer held is ``lease_lost`` (stop that
    agent now) while the others are renewed all the same."""
    agents = [x.agent for x in request.leases]
    refused: set[str] = set()
    if caller.kind is PrincipalKind.HOST:
        mine = mc.settings.host_agents.get(caller.name, frozenset())
        refused = {a for a in agents if a not in mine}
        if refused:
            rule = f"host {caller.name} may act only for the agents it may run"
            await mc.refuse(caller, "lease.renew", rule, agents=",".join(sorted(refused)))
    elif caller.kind is not PrincipalKind.OPERATOR:
        await require_supervisor(mc, caller, "lease.renew", agents[0])  # refuses, audited
    renewed = await mc.store.renew_leases(
        request.holder,
        [(x.agent, x.fence) for x in request.leases if x.agent not in refused],
        timedelta(seconds=request.ttl_seconds),
    )
    outcomes = iter(renewed)
    results: list[LeaseRenewResult] = []
    for agent in agents:
        if agent in refused:
            rule = f"host {caller.name} may act only for the agents it may run"
            results.append(LeaseRenewResult(agent=agent, error=_body(Forbidden(rule, rule=rule))))
            continue
        outcome = next(outcomes)
        if not isinstance(outcome, LeaseLost):
            results.append(LeaseRenewResult(agent=agent, lease=LeaseOut.of(outcome)))
        elif await mc.store.recipient_kind(agent) != "agent":
            unknown = NotFound(f"no agent {agent!r}", agent=agent)
            results.append(LeaseRenewResult(agent=agent, error=_body(unknown)))
        else:
            results.append(LeaseRenewResult(agent=agent, error=_body(outcome)))
    return LeaseRenewBatchOut(results=results)


def _body(error: McosError) -> ErrorBody:
    return ErrorBody(code=error.code, message=error.message, details=error.details)


@router.post("/{agent}/release", status_code=204, responses=ERRORS)
async def release(agent: str, request: LeaseRelease, mc: MC, caller: Caller) -> None:
    """Give the lease up (the agent stopped), so another supervisor need not wait for expiry."""
    await require_supervisor(mc, caller, "lease.release", agent)
    await mc.store.release_lease(agent, request.holder, request.fence)


@router.get("", response_model=list[LeaseOut], responses=ERRORS)
async def list_leases(mc: MC, caller: Caller) -> list[LeaseOut]:
    """Every agent's current (or last) lease, with Mission Control's time to judge it by
    (operators: 403 for agents, audited — who runs where is not an agent's business)."""
    # Hook for the host principal: the supervisor does not read this route today (it learns
    # its own leases from acquire/renew answers; only `mcos status` lists them). Should a host
    # ever need it, answer it its own agents' leases only, never the fleet's.
    await require_operator(mc, caller, "lease.list")
    now = await mc.store.now()
    return [LeaseOut.of(x, now) for x in await mc.store.leases()]
