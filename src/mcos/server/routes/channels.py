"""Channel accounts: the one-poller lease of each account, and inbound items taken into the bus.

An item a channel received becomes a message to the bound agent, marked with its origin so the
agent fences it as untrusted; its ``ref`` is the idempotency key, so a channel that delivers
again after a crash creates nothing twice.
"""

from __future__ import annotations

import hmac
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Header, Request

from mcos.api_models import (
    ChannelInboundIn,
    ChannelInboundOut,
    ChannelLeaseAcquire,
    ChannelLeaseRelease,
    ChannelLeaseRenew,
    LeaseOut,
    PageOut,
)
from mcos.domain.audit import AuditEvent
from mcos.domain.messages import MessageKind, NewMessage, Priority
from mcos.domain.redaction import redact
from mcos.domain.tokens import Principal, PrincipalKind
from mcos.exceptions import AuthError, Conflict, Forbidden, InvalidRequest, NotFound
from mcos.server.context import ChannelBinding, MissionControl
from mcos.server.routes.deps import MC, Caller, RowId, require_operator
from mcos.server.routes.messages import ERRORS
from mcos.server.severity import outside_input

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


async def own_key(mc: MissionControl, caller: Principal, channel: str, key: str) -> None:
    """Refuse (403, audited) a lease key other than the channel's own account's: bound to one
    channel, an agent must not take (and so block) the receiver lease of another account."""
    binding = await bound(mc, caller, channel, "channel.lease")
    if binding.lease_key is not None and hmac.compare_digest(key, binding.lease_key):
        return
    if binding.lease_key is not None:
        rule = f"a lease of channel {channel} is for its own account's key only"
    elif binding.lease_key_problem:
        rule = (
            f"Mission Control cannot derive channel {channel}'s lease key "
            f"({binding.lease_key_problem}): give it the channel's token too"
        )
    else:
        rule = f"channel {channel} ({binding.kind}) takes no lease: its receiver needs none"
    await mc.refuse(caller, "channel.lease", rule, channel=channel, key=key)
    raise Forbidden(f"{rule} (asked for {key})", rule=rule, channel=channel)


@router.post("/{channel}/lease/acquire", response_model=LeaseOut, responses=ERRORS)
async def acquire(channel: str, request: ChannelLeaseAcquire, mc: MC, caller: Caller) -> LeaseOut:
    """Become the one receiver of the account (403 for any key but the channel's own account's,
    audited); 409 ``lease_held`` names who is."""
    await own_key(mc, caller, channel, request.key)
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
    await own_key(mc, caller, channel, request.key)
    lease = await mc.store.renew_lease(
        request.key, request.holder, request.fence, timedelta(seconds=request.ttl_seconds)
    )
    return LeaseOut.of(lease)


@router.post("/{channel}/lease/release", status_code=204, responses=ERRORS)
async def release(channel: str, request: ChannelLeaseRelease, mc: MC, caller: Caller) -> None:
    """Stop receiving, so another process need not wait for the lease to expire."""
    await own_key(mc, caller, channel, request.key)
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
            subject=redact(item.subject or f"{binding.kind} message from {item.sender}")[:500],
            body=redact(item.text),  # a secret pasted into a chat or an e-mail is not stored
            idempotency_key=f"channel:{channel}:{item.ref}"[:200],
            meta=meta,
        )
    )
    if result.created:
        outside_input(mc, agent, result.message.created_at)
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


@router.post("/{channel}/telegram", response_model=dict[str, bool], responses=ERRORS)
async def telegram_webhook(
    channel: str,
    request: Request,
    mc: MC,
    secret: Annotated[str | None, Header(alias="X-Telegram-Bot-Api-Secret-Token")] = None,
) -> dict[str, bool]:
    """Telegram's webhook: the secret-token header must match the channel's secret (401 and
    audited otherwise); the update then goes where a polled one would."""
    expected = mc.settings.webhook_secrets.get(channel)
    binding = mc.settings.channels.get(channel)
    if binding is None or binding.kind != "telegram" or expected is None:
        raise NotFound(f"no Telegram channel {channel!r} in webhook mode", channel=channel)
    if secret is None or not hmac.compare_digest(secret.encode(), expected.encode()):
        await mc.store.record(
            AuditEvent(
                actor="telegram:webhook",
                action="channel.webhook",
                targets={"channel": channel},
                detail={"rule": "the secret-token header must match"},
                outcome="refused",
            )
        )
        raise AuthError("missing or wrong X-Telegram-Bot-Api-Secret-Token")
    from mcos.channels.telegram import parse_update  # noqa: PLC0415 (aiogram: loaded at startup)

    try:
        item = parse_update(channel, await request.json())
    except ValueError as e:
        raise InvalidRequest(f"body: {e}", field="body") from None
    if item is None:
        return {"ok": True}
    if binding.agent is not None:
        from mcos.runtime.channels import inbound_body  # noqa: PLC0415

        await take_inbound(mc, channel, binding.agent, inbound_body(item))
    elif mc.pager is not None:
        reply = await mc.pager.answer(channel, "telegram", item)
        own = mc.pager.channels.get(channel)
        answer = getattr(own, "answer_button", None)
        if answer is not None:
            await answer(item, reply)
    return {"ok": True}


pages = APIRouter(prefix="/v1/pages", tags=["pages"])


@pages.get("", response_model=list[PageOut], responses=ERRORS)
async def list_pages(
    mc: MC, caller: Caller, human: str | None = None, state: str | None = None, limit: int = 100
) -> list[PageOut]:
    """Pages to humans, newest first (operators)."""
    await require_operator(mc, caller, "page.list")
    found = await mc.store.pages(human=human, state=state, limit=max(1, min(limit, 500)))
    return [PageOut.of(p) for p in found]


@pages.post("/{page_id}/ack", response_model=PageOut, responses=ERRORS)
async def ack_page(page_id: RowId, mc: MC, caller: Caller) -> PageOut:
    """The paged person acknowledges (from the CLI or dashboard); 409 when already done."""
    await require_operator(mc, caller, "page.ack")
    page = await mc.store.page(page_id)
    if page is None:
        raise NotFound(f"no page {page_id}", page=page_id)
    if page.human != caller.name:
        rule = "a page is acknowledged by the person paged"
        await mc.refuse(caller, "page.ack", rule, page=str(page_id))
        raise Forbidden(f"{rule} ({page.human})", rule=rule)
    done = await mc.store.ack_page(page_id, caller.name)
    if done is None:
        rule = f"page {page_id} was already acknowledged"
        await mc.refuse(caller, "page.ack", rule, page=str(page_id))
        raise Conflict(rule, page=page_id)
    await mc.store.record(
        AuditEvent(
            actor=caller.actor,
            action="page.acked",
            targets={"page": str(page_id)},
            detail={"key": done.key, "via": "api"},
        )
    )
    return PageOut.of(done)
