"""Finding messages: ``GET /v1/messages`` with filters and text search, newest first, paged."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from mcos.api_models import MAX_ID, MessageOut
from mcos.api_operate import MessageHitOut, MessageSearchOut
from mcos.domain.message_search import MAX_PAGE, MessageHit, MessageSearch, MessageState
from mcos.domain.messages import MessageKind, Priority
from mcos.domain.tokens import Principal, PrincipalKind
from mcos.exceptions import Forbidden
from mcos.server.context import MissionControl
from mcos.server.routes.deps import MC, Caller
from mcos.server.routes.messages import ERRORS

router = APIRouter(prefix="/v1", tags=["messages"])


async def search(mc: MissionControl, caller: Principal, query: MessageSearch) -> MessageSearchOut:
    """One page of ``query``: operators see every message; an agent only what it sent or was
    sent (it must filter on itself as sender or recipient)."""
    if caller.kind is not PrincipalKind.OPERATOR and caller.name not in (
        query.sender,
        query.recipient,
    ):
        rule = "an agent searches only its own messages (from= or to= its name)"
        await mc.refuse(caller, "message.search", rule)
        raise Forbidden(rule, rule=rule)
    ask = replace(query, limit=query.limit + 1)
    hits = await mc.store.search_messages(ask)
    more = len(hits) > query.limit
    shown = hits[: query.limit]
    return MessageSearchOut(
        messages=[_out(h) for h in shown],
        next_before=shown[-1].message.id if more and shown else None,
    )


def _out(hit: MessageHit) -> MessageHitOut:
    return MessageHitOut(**MessageOut.of(hit.message).model_dump(), state=hit.state)


@router.get("/messages", response_model=MessageSearchOut, responses=ERRORS)
async def search_messages(
    mc: MC,
    caller: Caller,
    q: Annotated[
        str | None, Query(max_length=200, description="Substring of subject or body.")
    ] = None,
    sender: Annotated[str | None, Query(alias="from", max_length=100)] = None,
    to: Annotated[str | None, Query(max_length=100)] = None,
    kind: MessageKind | None = None,
    priority: Priority | None = None,
    state: MessageState | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    thread: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    before: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description="The previous page's next_before.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
) -> MessageSearchOut:
    """Messages matching every filter given, newest first. Text search is a case-insensitive
    substring match on subject and body (LIKE on SQLite, ILIKE on PostgreSQL)."""
    query = MessageSearch(
        text=q or None,
        sender=sender or None,
        recipient=to or None,
        kind=kind,
        priority=priority,
        state=state,
        since=since,
        until=until,
        thread_id=thread,
        before=before,
        limit=limit,
    )
    return await search(mc, caller, query)
