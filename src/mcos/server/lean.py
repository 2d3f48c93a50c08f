"""The bus's hot endpoints — send, claim, ack — answered without FastAPI's per-request work.

FastAPI 0.165 re-inspects each parameter's annotation on every request, validates the answer it
was handed against its model again, and walks its included routers one by one: about a quarter
of Mission Control's CPU on a send, on the endpoints agents call for every message; the layers
FastAPI and Starlette wrap around every request cost a third more. A :class:`LeanRoute` stands
for one documented route and answers its plain requests — a JSON body of the documented model,
well-formed headers and query parameters — by calling the same function the documented route
calls, straight from the :class:`Door` at the edge. Anything else (a malformed or invalid body,
a parameter out of range, another content type, a repeated header, a body the limits refuse) is
*declined* before anything happens and handed, as it came, through every layer to the
documented FastAPI route: every error keeps FastAPI's shape and order, and the OpenAPI document
is FastAPI's, unchanged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import TypeVar

from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from mcos.api_models import (
    MAX_ID,
    AckBatchRequest,
    AckBatchResponse,
    AckRequest,
    SendBatchRequest,
    SendRequest,
)
from mcos.server.context import mission_control
from mcos.server.limits import json_problem, replay
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
    async def _unused(request: Request) -> Response:  # pragma: no cover (the door answers)
        raise AssertionError

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        """A full match of path and method (a wrong method, HEAD too, is the documented
        route's 405)."""
        if scope.get("method") != self.method:
            return Match.NONE, {}
        match, child = super().matches(scope)
        if match is not Match.FULL:
            return Match.NONE, {}
        child["route"] = self.documented  # metrics and host-route checks see the documented one
        return match, child


class Door:
    """The way in of every HTTP request, just inside :class:`mcos.server.edge.Edge`: a plain
    request to a lean route is answered here, the rest go on into the app.

    Between the edge and a route FastAPI and Starlette put seven layers (the error pages,
    telemetry, two body limits, the exception handlers, an exit stack, the router), each
    wrapping every message of the request once more: measured in process, a third of a send's
    CPU. A request answered here keeps what those layers give it: the body limit and the JSON
    guard's checks (a request that would fail them is declined, and refused by them), the
    exception handlers' error shape (the app's own handlers answer), and the 500 page.
    """

    def __init__(
        self, app: ASGIApp, routes: list[LeanRoute], *, body_limit: int, depth: int
    ) -> None:
        self.app = app
        self.routes = routes
        self.body_limit = body_limit
        self.depth = depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._route(scope)
        if route is None:
            await self.app(scope, receive, send)
            return
        if route.reads_body and not self._bounded(scope):
            await self._decline(scope, None, receive, send)  # the body limit's to refuse or read
            return
        request = Request(scope, receive, send)
        body: bytes | None = None
        try:
            if route.reads_body:
                body = await request.body()
                if len(body) > self.body_limit or json_problem(body, self.depth) is not None:
                    raise Declined
            response = await route.answer(request, body or b"")
        except Declined:
            await self._decline(scope, body, receive, send)
            return
        except Exception as exc:  # the handlers' answer, as behind the layers (a client gone too)
            await self._failed(request, exc, send)
            return
        await response(scope, receive, send)

    def _route(self, scope: Scope) -> LeanRoute | None:
        """The lean route this request is for (its path parameters and documented route put
        in ``scope``), or None."""
        if scope["type"] != "http" or scope.get(DECLINED):
            return None
        for route in self.routes:
            match, child = route.matches(scope)
            if match is Match.FULL:
                scope.update(child)
                return route
        return None

    def _bounded(self, scope: Scope) -> bool:
        """A single ``Content-Length`` within the body limit (a chunked body is not plain)."""
        lengths = [v for k, v in scope["headers"] if k == b"content-length"]
        return len(lengths) == 1 and lengths[0].isdigit() and int(lengths[0]) <= self.body_limit

    async def _decline(
        self, scope: Scope, body: bytes | None, receive: Receive, send: Send
    ) -> None:
        """Hand the request, its body (if read) replayed, to the documented route through
        every layer."""
        scope[DECLINED] = True
        scope.pop("route", None)
        scope.pop("path_params", None)
        if body is not None:
            receive = replay([{"type": "http.request", "body": body, "more_body": False}], receive)
        await self.app(scope, receive, send)

    async def _failed(self, request: Request, exc: Exception, send: Send) -> None:
        """Answer an exception as the app's handlers do; one none expected (the handler of
        ``Exception``, the 500) is raised again after its answer, as Starlette's error
        middleware does, so the server logs its traceback."""
        handlers = request.app.exception_handlers
        handler = next((handlers[c] for c in type(exc).__mro__ if c in handlers), None)
        if handler is None:
            raise exc
        response = await handler(request, exc)
        await response(request.scope, request.receive, send)
        if handler is handlers.get(Exception):
            raise exc


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


def routes() -> list[LeanRoute]:
    """The lean routes, each standing for its documented route."""
    documented = {
        route.endpoint: route
        for module in (messages, inbox)
        for route in module.router.routes
        if isinstance(route, APIRoute)
    }
    return [
        LeanRoute(documented[messages.send], "POST", _send),
        LeanRoute(documented[messages.send_batch], "POST", _send_batch),
        LeanRoute(documented[inbox.claim], "GET", _claim),
        LeanRoute(documented[inbox.ack_batch], "POST", _ack_batch),
        LeanRoute(documented[inbox.ack], "POST", _ack),
    ]
