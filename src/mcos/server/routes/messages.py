"""Sending and reading messages."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Response

from mcos.api_models import (
    ErrorResponse,
    MessageOut,
    SendBatchRequest,
    SendBatchResponse,
    SendRequest,
    SendResponse,
)
from mcos.domain.messages import Message, MessageKind, NewMessage, RecipientKind, SendResult
from mcos.domain.redaction import redact, scrub
from mcos.domain.tokens import Principal, PrincipalKind
from mcos.exceptions import Fenced, Forbidden, IdempotencyConflict
from mcos.server.context import MissionControl
from mcos.server.governance import Governance
from mcos.server.routes.deps import MC, Caller, FencedWriter, RowId, Writer, fenced
from mcos.server.severity import after_sends, gate_sends

router = APIRouter(prefix="/v1", tags=["messages"])
ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 409, 413, 422)
}


@router.post("/messages", status_code=201, response_model=SendResponse, responses=ERRORS)
async def send(
    request: SendRequest, mc: MC, writer: FencedWriter, response: Response
) -> SendResponse:
    """Send a message as the caller to an agent, a topic or a human.

    A repeat of an idempotency key with the same content returns the original (200); with
    different content, 409. An agent's alarm (urgent/high) to a topic or to several agents is
    the governed action ``broadcast_urgent``; see ``mcos.domain.severity`` for every rule.
    """
    result = await send_message(mc, writer, request)
    if not result.created:
        response.status_code = 200
    return result


async def send_message(mc: MissionControl, writer: Writer, request: SendRequest) -> SendResponse:
    """``POST /v1/messages`` after its request was read (shared with ``mcos.server.lean``)."""
    caller = writer.principal
    await _not_forged(mc, caller, [request])
    await gate_sends(mc, caller, [request])
    try:
        result = await mc.store.send(_new_message(caller, request), guard=writer.guard)
    except Fenced as e:
        raise await fenced(mc, caller, e) from None
    except IdempotencyConflict as e:
        await mc.refuse(caller, "message.send", "an idempotency key names one message",
                        key=request.idempotency_key or "")  # fmt: skip
        raise e from None
    _count(mc, request, result)
    await after_sends(mc, caller, [result])
    if result.created and mc.pager is not None and request.to in mc.settings.human_roles:
        await mc.pager.message_to_human(result.message)
    return _send_response(result)


@router.post("/messages/batch", status_code=201, response_model=SendBatchResponse, responses=ERRORS)
async def send_batch(request: SendBatchRequest, mc: MC, writer: FencedWriter) -> SendBatchResponse:
    """Send up to 100 messages as the caller in one transaction: all stored, in order, or none.

    Each item behaves as ``POST /v1/messages``; an error names the item (``messages[3]``) and
    stores nothing of the batch.
    """
    return await send_messages(mc, writer, request)


async def send_messages(
    mc: MissionControl, writer: Writer, request: SendBatchRequest
) -> SendBatchResponse:
    """``POST /v1/messages/batch`` after its request was read (shared with
    ``mcos.server.lean``)."""
    caller = writer.principal
    await _not_forged(mc, caller, request.messages)
    await gate_sends(mc, caller, request.messages)
    try:
        results = await mc.store.send_many(
            [_new_message(caller, m) for m in request.messages], guard=writer.guard
        )
    except Fenced as e:
        raise await fenced(mc, caller, e) from None
    for item, result in zip(request.messages, results, strict=True):
        _count(mc, item, result)
    await after_sends(mc, caller, results)
    return SendBatchResponse(results=[_send_response(r) for r in results])


async def _not_forged(mc: MC, caller: Principal, requests: list[SendRequest]) -> None:
    """A body naming another sender is refused (403, audited): the sender is the token's.

    A directive is the governed action ``issue_directive``: only who the matrix lets do it
    alone sends one directly (others ask for an approval, which issues it).
    """
    if any(r.kind is MessageKind.DIRECTIVE for r in requests):
        gov = Governance(mc)
        refusal = mc.settings.matrix.may_alone("issue_directive", await gov.party(caller))
        if refusal is not None:
            await mc.refuse(caller, "message.send", refusal, governed="issue_directive")
            raise Forbidden(refusal, rule=refusal)
    for r in requests:
        if r.sender is not None and r.sender != caller.name:
            rule = "the sender of a message is the token's owner"
            await mc.refuse(caller, "message.send", rule, claimed=r.sender)
            raise Forbidden(f"{rule} ({caller.name}), not {r.sender!r}", rule=rule)


def _new_message(caller: Principal, request: SendRequest) -> NewMessage:
    # Defence in depth: a secret-shaped string in a message is never stored (the runtime cuts
    # them from tool arguments first; this catches every other client).
    return NewMessage(
        sender=caller.name,
        recipient=request.to,
        kind=request.kind,
        priority=request.priority,
        subject=redact(request.subject),
        body=redact(request.body),
        reply_to=request.reply_to,
        idempotency_key=request.idempotency_key,
        meta=scrub(request.meta),
        expires_at=request.expires_at,
        ttl=None if request.ttl_seconds is None else timedelta(seconds=request.ttl_seconds),
    )


def _count(mc: MissionControl, request: SendRequest, result: SendResult) -> None:
    if result.created:
        mc.metrics.sent.labels(kind=request.kind.value).inc()
    else:
        mc.metrics.repeats.inc()


def _send_response(result: SendResult) -> SendResponse:
    return SendResponse(
        message=MessageOut.of(result.message), deliveries=result.deliveries, created=result.created
    )


async def _may_read(mc: MissionControl, caller: Principal, m: Message) -> bool:
    if caller.kind is PrincipalKind.OPERATOR or caller.name in (m.sender, m.recipient):
        return True
    if m.recipient_kind is RecipientKind.TOPIC:
        return m.recipient in await mc.store.subscriptions(caller.name)
    return False


@router.get("/messages/{message_id}", response_model=MessageOut, responses=ERRORS)
async def get_message(message_id: RowId, mc: MC, caller: Caller) -> MessageOut:
    """One message: to its sender, its recipients, and operators."""
    m = await mc.store.get_message(message_id)
    if not await _may_read(mc, caller, m):
        rule = "an agent may read only messages it sent or received"
        await mc.refuse(caller, "message.read", rule, message=str(message_id))
        raise Forbidden(rule, rule=rule)
    return MessageOut.of(m)


@router.get("/threads/{thread_id}", response_model=list[MessageOut], responses=ERRORS)
async def get_thread(thread_id: RowId, mc: MC, caller: Caller) -> list[MessageOut]:
    """The messages of a thread that the caller may read, oldest first."""
    visible = [m for m in await mc.store.thread(thread_id) if await _may_read(mc, caller, m)]
    return [MessageOut.of(m) for m in visible]
