"""The edge of every HTTP request: the security headers on its response, its latency in the
metrics, its line in the access log.

One ASGI layer for the three (they were three middlewares): each layer wraps every message of
every response once more, and Mission Control answers thousands of small requests a second —
a quarter of a plain request's CPU went to the layers around it. Outermost of Mission
Control's own middlewares, so refused requests (a body too large, JSON nested too deep) get the
headers and are logged and counted too.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcos.server import access_log
from mcos.server.metrics import Metrics
from mcos.server.security_headers import headers_for


class Edge:
    """Adds the security headers to every HTTP response (a route may not have set them), then
    times the request by its route template (not its raw path, which would explode the
    metric's labels) and writes its access-log line."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self._observers: dict[tuple[str, str, str], Callable[[float], None]] = {}
        """The request metric's child of each (route, method, status): ``labels()`` takes a
        lock and checks its labels on every call."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what a request that fails before its response is logged and counted as
        extra = headers_for(scope.get("path", ""))

        async def edge_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                message["headers"] = headers + [(n, v) for n, v in extra if n not in present]
            await send(message)

        try:
            await self.app(scope, receive, edge_send)
        finally:
            seconds = time.perf_counter() - started
            template = getattr(scope.get("route"), "path", "unmatched")
            key = (template, scope["method"], str(status))
            observe = self._observers.get(key)
            if observe is None:
                observe = self._observers[key] = self.metrics.requests.labels(*key).observe
            observe(seconds)
            access_log.write(scope, status, seconds)
