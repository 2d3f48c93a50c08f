"""Model use: budget reservations before calls and call reports after (direct mode: the agent
holds its own key), spend per day."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Annotated

from fastapi import APIRouter, Query

from mcos.api_models import CallReport, ReservationOut, ReservationRequest, UsageOut
from mcos.domain.budget import MICROS, Limits, Usage, Verdict
from mcos.domain.tokens import PrincipalKind
from mcos.exceptions import Forbidden, InvalidRequest
from mcos.server.metering import GATEWAY_ONLY
from mcos.server.routes.deps import MC, Caller
from mcos.server.routes.messages import ERRORS

router = APIRouter(prefix="/v1/usage", tags=["usage"])
USAGE_ERRORS = {**ERRORS, 402: ERRORS[409]}


def _usd(micros: int | None) -> float | None:
    return None if micros is None else micros / MICROS


async def _direct(mc: MC, caller: Caller, action: str, who: str) -> None:
    """Only an agent reaching its model directly (its own key) reserves and reports here; a
    gateway-routed agent's calls are metered by Mission Control itself."""
    if caller.kind is not PrincipalKind.AGENT:
        raise Forbidden(who, rule=who)
    if mc.meter.gateway_routed(caller.name):
        rule = GATEWAY_ONLY.format(agent=caller.name)
        await mc.refuse(caller, action, rule, agent=caller.name)
        raise Forbidden(rule, rule=rule)


@router.post(
    "/reservations", status_code=201, response_model=ReservationOut, responses=USAGE_ERRORS
)
async def reserve(request: ReservationRequest, mc: MC, caller: Caller) -> ReservationOut:
    """Reserve a model call's worst case against the caller's and the fleet's daily caps
    (direct mode), priced by Mission Control for the agent's configured model.

    The answer's ``max_output`` is what the call may ask for: the whole request, or less when
    only that fits what the caps have left. 402 ``over_budget`` when not even the floor fits:
    the agent must not make the call.
    """
    await _direct(mc, caller, "usage.reserve", "reservations are made by agents for their calls")
    hold = await mc.meter.reserve(
        caller.name,
        request.model,
        prompt_tokens=request.prompt_tokens,
        max_output=request.max_output,
        cache_ttl=request.cache_ttl,
        purpose=request.purpose,
    )
    limits = mc.settings.budgets.get(caller.name, Limits())
    return ReservationOut(
        id=hold.id,
        day=hold.day,
        verdict=(Verdict.WARNING if hold.warning else Verdict.GRANTED).value,
        warning=hold.warning,
        max_output=hold.max_output,
        reserved_usd=hold.ask_micros / MICROS,
        committed_usd=hold.committed.usd_micros / MICROS,
        committed_tokens=hold.committed.tokens,
        budget_usd=_usd(limits.usd_micros),
        budget_tokens=limits.tokens,
    )


@router.post("/calls", status_code=204, responses=ERRORS)
async def report_call(request: CallReport, mc: MC, caller: Caller) -> None:
    """Record a model call's tokens (direct mode), settling its reservation: Mission Control
    prices them itself. Tokens beyond what the reservation allowed are recorded as reported
    and flagged in the audit log."""
    await _direct(
        mc, caller, "usage.report", "model calls are reported by the agent that made them"
    )
    usage = Usage(
        input=request.input_tokens,
        output=request.output_tokens,
        cache_read=request.cache_read_tokens,
        cache_write=request.cache_write_tokens,
        cache_write_1h=request.cache_write_1h_tokens,
    )
    await mc.meter.settle(
        caller.name,
        request.model,
        request.reservation_id,
        usage,
        request.purpose,
        provider=request.provider,
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
