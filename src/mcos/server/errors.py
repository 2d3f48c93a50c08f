"""One JSON shape for every error: ``{"error": {"code", "message", "details"}}``."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from mcos.domain.authority import UnknownAction
from mcos.domain.tokens import redact
from mcos.exceptions import AuthError, McosError

log = logging.getLogger("mcos.server")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
}


def error_response(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """The JSON response of an error."""
    body = {"error": {"code": code, "message": redact(message), "details": details or {}}}
    return JSONResponse(body, status_code=status, headers=headers)


def _field(loc: tuple[int | str, ...]) -> str:
    """``('body', 'priority')`` → ``priority``; query and path parameters keep their place."""
    parts = [str(p) for p in loc]
    if parts and parts[0] == "body":
        parts = parts[1:]
    return ".".join(parts) or "body"


def install(app: FastAPI) -> None:
    """Register the handlers that turn every failure into the one error shape."""

    @app.exception_handler(McosError)
    async def mcos_error(request: Request, exc: McosError) -> JSONResponse:
        if isinstance(exc, AuthError):
            request.app.state.mc.metrics.auth_failures.inc()
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        if exc.status == 503:
            headers = {"Retry-After": "1"}
        details = {k: v for k, v in exc.details.items() if _jsonable(v)}
        return error_response(exc.status, exc.code, exc.message, details, headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = [
            {"field": _field(tuple(e["loc"])), "problem": e["msg"].removeprefix("Value error, ")}
            for e in exc.errors()
        ]
        summary = "; ".join(f"{f['field']}: {f['problem']}" for f in fields)
        return error_response(422, "invalid_request", summary, {"fields": fields})

    @app.exception_handler(UnknownAction)
    async def unknown_action(request: Request, exc: UnknownAction) -> JSONResponse:
        details = {"field": "action", "action": exc.action, "known": exc.known}
        return error_response(422, "invalid_request", f"action: {exc}", details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "error")
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error(
            "unhandled error on %s %s: %s", request.method, request.url.path, redact(repr(exc))
        )
        return error_response(500, "internal", "internal error; the server log has the details")


def _jsonable(value: Any) -> bool:
    return isinstance(value, str | int | float | bool | list | dict | type(None))
