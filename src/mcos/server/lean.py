"""The bus's hot endpoints — send, claim, ack — answered without FastAPI's per-request work.

FastAPI 0.165 re-inspects each parameter's annotation on every request, validates the answer it
was handed against its model again, and walks its included routers one by one: about a quarter
of Mission Control's CPU on a send, on the endpoints agents call for every message. A
:class:`LeanRoute` stands in front of one documented route and answers its plain requests — a
JSON body of the documented model, well-formed headers and query parameters — by calling the
same function the documented route calls. Anything else (a malformed or invalid body, a
parameter out of range, another content type, a repeated header) is *declined* before anything
happens and handed, as it came, to the documented FastAPI route: every error keeps FastAPI's
shape and order, and the OpenAPI document is FastAPI's, unchanged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import TypeVar

from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Message, Receive, Scope, Send

from mcos.api_models import (
    MAX_ID,
    AckBatchRequest,
    AckBatchResponse,
    AckRequest,
    SendBatchRequest,
    SendRequest,
)
from mcos.server.context import mission_control
from mcos.server.routes import inbox, messages
from mcos.server.routes.deps import current_principal, fenced_writer

DECLINED = "mcos.lean.declined"
"""Set in the scope of a request a lean route declined: the router then passes it by."""

Answer = Callable[[Request, bytes], Awaitable[Response]]
M = TypeVar("M", bound=BaseModel)

_ID = re.compile(r"[1-9][0-9]{0,18}")
_COUNT = re.compile(r"[0-9]{1,4}")
_SECONDS = re.compile(r"[0-9]{1,6}(\.[0-9]{1,6})?")


class Declined(Exception):
    """The request is not a plain one: the documented route answers it."""


class LeanRoute(Route):
    """One documented route's plain requests, answered by ``answer(request, body)``, which
    raises :class:`Declined` — before anything happens — for any other."""

    def __init__(self, documented: APIRoute, method: str, answer: Answer) -> None:
        super().__init__(documented.path, self._unused, methods=[method], include_in_schema=False)
        self.documented = documented
        self.method = method
        self.answer = answer
        self.reads_body = method != "GET"

    @staticmethod
    async def _unused(request: Request) -> Response:  # pragma: no cover (handle() answers)
        raise AssertionError

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        """A full match of path and method (a wrong method, HEAD too, is the documented
        route's 405), unless declined."""
        if scope.get(DECLINED) or scope.get("method") != self.method:
            return Match.NONE, {}
        match, child = super().matches(scope)
        if match is not Match.FULL:
            return Match.NONE, {}
        child["route"] = self.documented  # metrics and host-route checks see the documented one
        return match, child

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer, or hand the request on with its body replayed."""
        request = Request(scope, receive, send)
        body = await request.body() if self.reads_body else b""
        try:
            response = await self.answer(request, body)
        except Declined:
            scope[DECLINED] = True
            replayed = _replay(body, receive) if self.reads_body else receive
            await scope["router"](scope, replayed, send)
            return
        await response(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` with the already-read body given out once more first."""
    given = False

    async def replay() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _json(request: Request, body: bytes, model: type[M]) -> M:
    """The body as ``model``, when it is plain JSON that validates; else declined."""
    content_type = request.headers.getlist("content-type")
    if content_type != ["application/json"] or not body:
        raise Declined
    try:
        return model.model_validate(json.loads(body))
    except (ValueError, ValidationError):  # also a JSON or UTF-8 decode error
        raise Declined from None


def _header(request: Request, name: str) -> str | None:
    """A header sent at most once."""
    values = request.headers.getlist(name)
    if len(values) > 1:
        raise Declined
    return values[0] if values else None


def _fence(request: Request) -> int | None:
    """``X-Mcos-Fence``: absent, or an integer 0 to 2^63-1 written plainly."""
    raw = _header(request, "x-mcos-fence")
    if raw is None:
        return None
    if raw != "0" and not _ID.fullmatch(raw):
        raise Declined
    return _within(int(raw), 0, MAX_ID)


N = TypeVar("N", int, float)


def _within(value: N, low: N, high: N) -> N:
    if not low <= value <= high:
        raise Declined
    return value


def _query(request: Request) -> dict[str, str]:
    """The query parameters, each given at most once."""
    items = request.query_params.multi_items()
    params = dict(items)
    if len(params) != len(items):
        raise Declined
    return params


def _count(raw: str | None, default: int, low: int, high: int) -> int:
    if raw is None:
        return default
    if not _COUNT.fullmatch(raw):
        raise Declined
    return _within(int(raw), low, high)


def _seconds(raw: str | None, default: float, low: float, high: float) -> float:
    if raw is None:
        return default
    if not _SECONDS.fullmatch(raw):
        raise Declined
    return _within(float(raw), low, high)


def _answer(model: BaseModel, status: int = 200) -> Response:
    """JSON as FastAPI writes a response model (by alias)."""
    return Response(model.model_dump_json(by_alias=True), status, media_type="application/json")


async def _send(request: Request, body: bytes) -> Response:
    message = _json(request, body, SendRequest)
    authorization, fence = _header(request, "authorization"), _fence(request)
    mc = mission_control(request)
    writer = await fenced_writer(mc, request, authorization, fence)
    result = await messages.send_message(mc, writer, message)
    return _answer(result, 201 if result.created else 200)


async def _send_batch(request: Request, body: bytes) -> Response:
    batch = _json(request, body, SendBatchRequest)
    authorization, fence = _header(request, "authorization"), _fence(request)
    mc = mission_control(request)
    writer = await fenced_writer(mc, request, authorization, fence)
    return _answer(await messages.send_messages(mc, writer, batch), 201)


async def _claim(request: Request, body: bytes) -> Response:
    query = _query(request)
    limit = _count(query.get("limit"), 10, 1, 500)
    wait = _seconds(query.get("wait"), 0, 0, 30)
    visibility = _seconds(query.get("visibility"), 30, 1, 43_200)
    gather = _seconds(query.get("gather"), 0, 0, 5)
    authorization, fence = _header(request, "authorization"), _fence(request)
    mc = mission_control(request)
    caller = await current_principal(mc, request, authorization, fence)
    name = query.get("inbox")
    claimed = await inbox.claim_deliveries(
        mc, caller, name, limit, wait, visibility, request.receive, gather
    )
    return _answer(claimed)


async def _ack_batch(request: Request, body: bytes) -> Response:
    acks = _json(request, body, AckBatchRequest)
    name = _query(request).get("inbox")
    authorization, fence = _header(request, "authorization"), _fence(request)
    mc = mission_control(request)
    writer = await fenced_writer(mc, request, authorization, fence)
    items = [(i.id, i.receipt) for i in acks.items]
    await inbox.ack_deliveries(mc, writer, name, items)
    return _answer(AckBatchResponse(acked=len(items)))


async def _ack(request: Request, body: bytes) -> Response:
    raw_id = request.path_params["delivery_id"]
    if not _ID.fullmatch(raw_id):
        raise Declined
    delivery_id = _within(int(raw_id), 1, MAX_ID)
    ack = _json(request, body, AckRequest)
    name = _query(request).get("inbox")
    authorization, fence = _header(request, "authorization"), _fence(request)
    mc = mission_control(request)
    writer = await fenced_writer(mc, request, authorization, fence)
    await inbox.ack_deliveries(mc, writer, name, [(delivery_id, ack.receipt)])
    return Response(status_code=204, media_type="application/json")  # as FastAPI answers


def install(app: FastAPI) -> None:
    """Put the lean routes in front of the documented ones they stand for."""
    documented = {
        route.endpoint: route
        for module in (messages, inbox)
        for route in module.router.routes
        if isinstance(route, APIRoute)
    }
    lean = [
        LeanRoute(documented[messages.send], "POST", _send),
        LeanRoute(documented[messages.send_batch], "POST", _send_batch),
        LeanRoute(documented[inbox.claim], "GET", _claim),
        LeanRoute(documented[inbox.ack_batch], "POST", _ack_batch),
        LeanRoute(documented[inbox.ack], "POST", _ack),
    ]
    app.router.routes[:0] = lean
