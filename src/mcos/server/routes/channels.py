"""Channel accounts: the one-poller lease of each account, and inbound items taken into the bus.

An item a channel received becomes a message to the bound agent, marked with its origin so the
agent fences it as untrusted; its ``ref`` is the idempotency key, so a channel that delivers
again after a crash creates nothing twice.
"""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter

from mcos.api_models import (
    ChannelInboundIn,
    ChannelInboundOut,
    ChannelLeaseAcquire,
    ChannelLeaseRelease,
    ChannelLeaseRenew,
    LeaseOut,
)
from mcos.domain.audit import AuditEvent
from mcos.domain.messages import MessageKind, NewMessage, Priority
from mcos.domain.tokens import Principal, PrincipalKind
from mcos.exceptions import Forbidden, NotFound
from mcos.server.context import ChannelBinding, MissionControl
from mcos.server.routes.deps import MC, Caller
from mcos.server.routes.messages import ERRORS

router = APIRouter(prefix="/v1/channels", tags=["channels"])


async def bound(mc: MissionControl, caller: Principal, channel: str, action: str) -> ChannelBinding:
    """The channel, if the caller may act for it: its bound agent, or an operator."""
    binding = mc.settings.channels.get(channel)
    if binding is None:
        raise NotFound(f"no channel {channel!r}", channel=channel)
    if caller.kind is PrincipalKind.OPERATOR or caller.name == binding.agent:
        return binding
    rule = f"only {binding.agent or 'an operator'} acts for channel {channel}"
    await mc.refuse(caller, action, rule, channel=channel)
    raise Forbidden(rule, rule=rule)


@router.post("/{channel}/lease/acquire", response_model=LeaseOut, responses=ERRORS)
async def acquire(channel: str, request: ChannelLeaseAcquire, mc: MC, caller: Caller) -> LeaseOut:
    """Become the one receiver of the account; 409 ``lease_held`` names who is."""
    await bound(mc, caller, channel, "channel.lease")
    before = await mc.store.lease(request.key)
    lease = await mc.store.acquire_lease(
        request.key, request.holder, request.host, timedelta(seconds=request.ttl_seconds)
    )
    if before is None or before.fence != lease.fence:
        await mc.store.record(
            AuditEvent(
                actor=caller.actor,
                action="lease.granted",
                targets={"channel": channel},
                detail={"key": request.key, "holder": lease.holder, "fence": lease.fence},
            )
        )
    return LeaseOut.of(lease)


@router.post("/{channel}/lease/renew", response_model=LeaseOut, responses=ERRORS)
async def renew(channel: str, request: ChannelLeaseRenew, mc: MC, caller: Caller) -> LeaseOut:
    """Keep receiving; 409 ``lease_lost`` means: stop polling now."""
    await bound(mc, caller, channel, "channel.lease")
    lease = await mc.store.renew_lease(
        request.key, request.holder, request.fence, timedelta(seconds=request.ttl_seconds)
    )
    return LeaseOut.of(lease)


@router.post("/{channel}/lease/release", status_code=204, responses=ERRORS)
async def release(channel: str, request: ChannelLeaseRelease, mc: MC, caller: Caller) -> None:
    """Stop receiving, so another process need not wait for the lease to expire."""
    await bound(mc, caller, channel, "channel.lease")
    await mc.store.release_lease(request.key, request.holder, request.fence)


async def take_inbound(
    mc: MissionControl, channel: str, agent: str, item: ChannelInboundIn
) -> ChannelInboundOut:
    """Store an inbound item as a message to the bound agent (once per ``ref``)."""
    binding = mc.settings.channels[channel]
    meta = {
        "origin": f"{binding.kind} channel {channel} (from {item.sender})",
        "channel": channel,
        "from": item.sender[:200],
        "from_id": item.sender_id[:200],
        "reply_to": item.reply_to[:200],
        "ref": item.ref,
    }
    if item.labels:
        meta["labels"] = ",".join(item.labels)[:500]
    result = await mc.store.send(
        NewMessage(
            sender=agent,
            recipient=agent,
            kind=MessageKind.REQUEST,
            priority=Priority.URGENT if item.urgent else Priority.NORMAL,
            subject=(item.subject or f"{binding.kind} message from {item.sender}")[:500],
            body=item.text,
            idempotency_key=f"channel:{channel}:{item.ref}"[:200],
            meta=meta,
        )
    )
    paged = 0
    if result.created and item.urgent and mc.pager is not None:
        paged = await mc.pager.page_urgent_item(channel, agent, item)
    return ChannelInboundOut(message_id=result.message.id, created=result.created, paged=paged)


@router.post("/{channel}/inbound", response_model=ChannelInboundOut, responses=ERRORS)
async def inbound(
    channel: str, item: ChannelInboundIn, mc: MC, caller: Caller
) -> ChannelInboundOut:
    """Take one received item into the bus for the channel's agent."""
    binding = await bound(mc, caller, channel, "channel.inbound")
    if binding.agent is None:
        raise NotFound(f"channel {channel!r} belongs to Mission Control, not an agent")
    return await take_inbound(mc, channel, binding.agent, item)
