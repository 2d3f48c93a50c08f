"""Claiming from an inbox with long-poll, acking, nacking, deferring, and dead letters."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.types import Receive

from mcos.api_models import (
    AckBatchRequest,
    AckBatchResponse,
    AckRequest,
    DeferBatchRequest,
    DeferBatchResponse,
    DeferRequest,
    DeliveryOut,
    InboxResponse,
    NackRequest,
)
from mcos.domain.audit import AuditEvent
from mcos.domain.messages import Delivery
from mcos.domain.tokens import Principal
from mcos.exceptions import Fenced
from mcos.server.context import MissionControl
from mcos.server.dead_letters import after_dead_lettering
from mcos.server.routes.deps import (
    MC,
    Caller,
    FencedWriter,
    RowId,
    Writer,
    fenced,
    inbox_of,
    require_operator,
)
from mcos.server.routes.messages import ERRORS

router = APIRouter(prefix="/v1", tags=["inbox"])
_TOUCH_EVERY = 5.0


async def _touch(mc: MissionControl, name: str) -> None:
    """Record that an agent polled, at most every few seconds (it is a write)."""
    clock = time.monotonic()
    if clock - mc.last_touch.get(name, 0.0) >= _TOUCH_EVERY:
        mc.last_touch[name] = clock
        await mc.store.touch_agent(name)


async def _claim_waiting(
    mc: MissionControl,
    inbox: str,
    limit: int,
    wait: float,
    visibility: timedelta,
    receive: Receive,
    gather: float = 0.0,
) -> list[Delivery]:
    """Claim now; if empty, wait for a wake-up (armed before claiming) and claim again —
    after ``gather`` s more, when asked, so what arrives together is claimed together (one
    answer instead of one per message; the deadline still holds).

    A client that hung up while waiting (a stopped or restarted agent) claims nothing more:
    a claim for nobody would hide the message until its visibility deadline. Its hang-up is
    heard as it happens (the server's ``http.disconnect``), with no polling of its own.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(wait, mc.settings.max_wait_seconds)
    hung_up: asyncio.Task[None] | None = None  # listened for only once there is a wait
    try:
        while hung_up is None or not hung_up.done():
            with mc.store.armed(inbox) as woken, mc.parked.armed(inbox) as rechecked:
                claimed = await mc.store.claim(inbox, limit=limit, visibility=visibility)
                remaining = deadline - loop.time()
                if claimed or remaining <= 0:
                    return claimed
                if hung_up is None:
                    hung_up = loop.create_task(_hang_up(receive), name=f"hang-up-{inbox}")
                # Until a send wakes us, or the shared re-check finds something here (a
                # lapsed claim, a deferred delivery now due: mcos.server.parked), or the
                # client hangs up.
                await asyncio.wait(
                    {woken, rechecked, hung_up},
                    timeout=remaining,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            if gather > 0 and not hung_up.done() and (woken.done() or rechecked.done()):
                await asyncio.wait({hung_up}, timeout=min(gather, deadline - loop.time()))
        return []
    finally:
        if hung_up is not None:
            hung_up.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await hung_up


async def _hang_up(receive: Receive) -> None:
    """Returns when the client disconnects (a GET's request body, if any, is read past)."""
    while (await receive())["type"] != "http.disconnect":
        pass


@router.get("/inbox", response_model=InboxResponse, responses=ERRORS)
async def claim(
    http: Request,
    mc: MC,
    caller: Caller,
    inbox: Annotated[str | None, Query(description="Operators only: whose inbox.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 10,
    wait: Annotated[float, Query(ge=0, le=30, description="Long-poll up to this long.")] = 0,
    visibility: Annotated[
        float, Query(ge=1, le=43_200, description="Seconds to ack before redelivery.")
    ] = 30,
    gather: Annotated[
        float,
        Query(
            ge=0,
            le=5,
            description="Once a long-poll is woken, wait this long more before claiming, so "
            "messages arriving together come in one answer.",
        ),
    ] = 0,
) -> InboxResponse:
    """Claim deliveries (urgent first, then oldest), waiting up to ``wait`` s for one."""
    return await claim_deliveries(mc, caller, inbox, limit, wait, visibility, http.receive, gather)


async def claim_deliveries(
    mc: MissionControl,
    caller: Principal,
    inbox: str | None,
    limit: int,
    wait: float,
    visibility: float,
    receive: Receive,
    gather: float = 0.0,
) -> InboxResponse:
    """``GET /v1/inbox`` after its request was read (shared with ``mcos.server.lean``)."""
    name = await inbox_of(mc, caller, inbox, "inbox.read")
    await _touch(mc, caller.name)
    seen = mc.store.dead_lettered
    hold = timedelta(seconds=visibility)
    claimed = await _claim_waiting(mc, name, limit, wait, hold, receive, gather)
    await after_dead_lettering(mc, seen)
    mc.metrics.delivered.inc(len(claimed))
    mc.metrics.redelivered.inc(sum(1 for d in claimed if d.attempts > 1))
    return InboxResponse(inbox=name, deliveries=[DeliveryOut.of(d) for d in claimed])


@router.post("/deliveries/{delivery_id}/ack", status_code=204, responses=ERRORS)
async def ack(
    delivery_id: RowId,
    request: AckRequest,
    mc: MC,
    writer: FencedWriter,
    inbox: Annotated[str | None, Query()] = None,
) -> None:
    """Finish a claimed delivery; 409 if the claim lapsed and another claim holds it."""
    await ack_deliveries(mc, writer, inbox, [(delivery_id, request.receipt)])


@router.post("/inbox/ack", response_model=AckBatchResponse, responses=ERRORS)
async def ack_batch(
    request: AckBatchRequest,
    mc: MC,
    writer: FencedWriter,
    inbox: Annotated[str | None, Query()] = None,
) -> AckBatchResponse:
    """Finish several deliveries of one inbox together (all or none)."""
    items = [(i.id, i.receipt) for i in request.items]
    await ack_deliveries(mc, writer, inbox, items)
    return AckBatchResponse(acked=len(items))


async def ack_deliveries(
    mc: MissionControl, writer: Writer, inbox: str | None, items: list[tuple[int, str]]
) -> None:
    """Both acks after their request was read (shared with ``mcos.server.lean``)."""
    name = await inbox_of(mc, writer.principal, inbox, "delivery.ack")
    try:
        await mc.store.ack_many(name, items, guard=writer.guard)
    except Fenced as e:
        raise await fenced(mc, writer.principal, e) from None
    mc.metrics.acked.inc(len(items))


@router.post("/deliveries/{delivery_id}/nack", response_model=DeliveryOut, responses=ERRORS)
async def nack(
    delivery_id: RowId,
    request: NackRequest,
    mc: MC,
    caller: Caller,
    inbox: Annotated[str | None, Query()] = None,
) -> DeliveryOut:
    """Give a claim back: retried after a backoff, or dead-lettered when out of attempts."""
    name = await inbox_of(mc, caller, inbox, "delivery.nack")
    delay = None if request.delay_seconds is None else timedelta(seconds=request.delay_seconds)
    seen = mc.store.dead_lettered
    result = await mc.store.nack(
        name, delivery_id, request.receipt, error=request.error, delay=delay
    )
    mc.metrics.nacked.inc()
    await after_dead_lettering(mc, seen)
    return DeliveryOut.of(result)


async def _defer(
    mc: MissionControl,
    inbox: str,
    items: list[tuple[int, str]],
    reason: str,
    not_before: datetime | None,
    delay_seconds: float | None,
) -> list[Delivery]:
    if not_before is None:
        not_before = await mc.store.now() + timedelta(seconds=delay_seconds or 0)
    result = await mc.store.defer(inbox, items, not_before=not_before, reason=reason)
    mc.metrics.deferred.inc(len(result))
    return result


@router.post("/deliveries/{delivery_id}/defer", response_model=DeliveryOut, responses=ERRORS)
async def defer(
    delivery_id: RowId,
    request: DeferRequest,
    mc: MC,
    caller: Caller,
    inbox: Annotated[str | None, Query()] = None,
) -> DeliveryOut:
    """Hand a claim back because the recipient could not act (rate limited, model down, over
    budget, paused, cooling down, stopping): no attempt is used; claimable from not-before."""
    name = await inbox_of(mc, caller, inbox, "delivery.defer")
    [result] = await _defer(
        mc,
        name,
        [(delivery_id, request.receipt)],
        request.reason,
        request.not_before,
        request.delay_seconds,
    )
    return DeliveryOut.of(result)


@router.post("/inbox/defer", response_model=DeferBatchResponse, responses=ERRORS)
async def defer_batch(
    request: DeferBatchRequest,
    mc: MC,
    caller: Caller,
    inbox: Annotated[str | None, Query()] = None,
) -> DeferBatchResponse:
    """Hand several claims of one inbox back together (all or none), as ``defer``."""
    name = await inbox_of(mc, caller, inbox, "delivery.defer")
    result = await _defer(
        mc,
        name,
        [(i.id, i.receipt) for i in request.items],
        request.reason,
        request.not_before,
        request.delay_seconds,
    )
    return DeferBatchResponse(
        deferred=len(result), visible_at=result[0].visible_at if result else None
    )


@router.get("/dead-letters", response_model=list[DeliveryOut], responses=ERRORS)
async def dead_letters(
    mc: MC,
    caller: Caller,
    inbox: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[DeliveryOut]:
    """Dead-lettered deliveries: an agent sees its own, an operator any or all."""
    if caller.kind == "agent":
        inbox = await inbox_of(mc, caller, inbox, "dead_letters.read")
    return [DeliveryOut.of(d) for d in await mc.store.dead_letters(inbox, limit)]


@router.post("/dead-letters/{delivery_id}/requeue", response_model=DeliveryOut, responses=ERRORS)
async def requeue(delivery_id: RowId, mc: MC, caller: Caller) -> DeliveryOut:
    """Put a dead letter back in its inbox with a fresh attempt count (operators)."""
    await require_operator(mc, caller, "dead_letter.requeue")
    result = await mc.store.requeue(
        delivery_id,
        audit=AuditEvent(caller.actor, "dead_letter.requeue", {"delivery": delivery_id}),
    )
    mc.metrics.requeued.inc()
    return DeliveryOut.of(result)
