"""The access log: one line per HTTP request — method, path, status, latency and who asked.

Never a token, a query string or a body: the path is the route's own (``/v1/messages/{id}``
is logged as requested, ``/v1/messages/42``, but nothing after ``?``), and the principal is
the name the bearer token resolved to (``agent:gene``), not the token. Written through
:mod:`mcos.logs`, so it lands as JSON lines in ``server.log``.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcos.domain.tokens import Principal
from mcos.logs import get_logger

log = get_logger("mcos.server.access")

PRINCIPAL = "principal"
"""The key under ``request.state`` where authentication leaves the caller."""


class AccessLog:
    """ASGI middleware writing the access log line once the response has started."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; log it when it ends (failed requests too, as 500)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def seen(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, seen)
        finally:
            who = scope.get("state", {}).get(PRINCIPAL)
            client = scope.get("client")
            log.info(
                "request",
                method=scope["method"],
                path=scope["path"],
                status=status,
                latency_ms=round((time.perf_counter() - started) * 1000, 1),
                principal=who.actor if isinstance(who, Principal) else None,
                client=client[0] if client else None,
            )
