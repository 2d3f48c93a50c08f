"""Model use: budget reservations before calls, call reports after, spend per day."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Annotated

from fastapi import APIRouter, Query

from mcos.api_models import CallReport, ReservationOut, ReservationRequest, UsageOut
from mcos.domain.budget import MICROS, Limits, Usage, Verdict
from mcos.domain.tokens import PrincipalKind
from mcos.exceptions import Forbidden, InvalidRequest
from mcos.server.routes.deps import MC, Caller
from mcos.server.routes.messages import ERRORS
from mcos.store.protocol import BudgetAsk, ModelCall

router = APIRouter(prefix="/v1/usage", tags=["usage"])
USAGE_ERRORS = {**ERRORS, 402: ERRORS[409]}


def _usd(micros: int | None) -> float | None:
    return None if micros is None else micros / MICROS


@router.post(
    "/reservations", status_code=201, response_model=ReservationOut, responses=USAGE_ERRORS
)
async def reserve(request: ReservationRequest, mc: MC, caller: Caller) -> ReservationOut:
    """Reserve a model call's worst case against the caller's and the fleet's daily caps.

    402 ``over_budget`` when it does not fit: the agent must not make the call.
    """
    if caller.kind is not PrincipalKind.AGENT:
        rule = "reservations are made by agents for their own model calls"
        raise Forbidden(rule, rule=rule)
    limits = mc.settings.budgets.get(caller.name, Limits())
    granted = await mc.store.reserve_budget(
        BudgetAsk(
            caller.name, round(request.max_usd * MICROS), request.max_tokens, request.purpose
        ),
        limits,
        mc.settings.fleet_budget,
    )
    return ReservationOut(
        id=granted.id,
        day=granted.day,
        verdict=granted.verdict.value,
        warning=granted.verdict is Verdict.WARNING,
        committed_usd=granted.committed.usd_micros / MICROS,
        committed_tokens=granted.committed.tokens,
        budget_usd=_usd(limits.usd_micros),
        budget_tokens=limits.tokens,
    )


@router.post("/calls", status_code=204, responses=ERRORS)
async def report_call(request: CallReport, mc: MC, caller: Caller) -> None:
    """Record a model call's tokens and cost, settling its reservation."""
    if caller.kind is not PrincipalKind.AGENT:
        rule = "model calls are reported by the agent that made them"
        raise Forbidden(rule, rule=rule)
    usage = Usage(
        input=request.input_tokens,
        output=request.output_tokens,
        cache_read=request.cache_read_tokens,
        cache_write=request.cache_write_tokens,
    )
    await mc.store.settle(
        request.reservation_id,
        ModelCall(
            caller.name,
            request.provider,
            request.model,
            usage,
            round(request.cost_usd * MICROS),
            request.purpose,
        ),
    )


@router.get("", response_model=list[UsageOut], responses=ERRORS)
async def usage(
    mc: MC,
    caller: Caller,
    since: Annotated[str | None, Query(description="First UTC day, YYYY-MM-DD.")] = None,
    agent: Annotated[str | None, Query()] = None,
) -> list[UsageOut]:
    """Model use per agent per UTC day (default: the last 14 days). Agents see their own."""
    if caller.kind is PrincipalKind.AGENT:
        if agent not in (None, caller.name):
            rule = "an agent may read only its own usage"
            await mc.refuse(caller, "usage.read", rule, agent=agent or "")
            raise Forbidden(rule, rule=rule)
        agent = caller.name
    if since is None:
        since = ((await mc.store.now()).date() - timedelta(days=13)).isoformat()
    else:
        try:
            date.fromisoformat(since)
        except ValueError as e:
            raise InvalidRequest(f"since: {since!r} is not YYYY-MM-DD", field="since") from e
    return [
        UsageOut(
            day=r.day,
            agent=r.agent,
            calls=r.calls,
            input_tokens=r.usage.input,
            output_tokens=r.usage.output,
            cache_read_tokens=r.usage.cache_read,
            cache_write_tokens=r.usage.cache_write,
            cost_usd=r.cost_micros / MICROS,
            held_usd=r.held_micros / MICROS,
        )
        for r in await mc.store.usage(since, agent)
    ]
