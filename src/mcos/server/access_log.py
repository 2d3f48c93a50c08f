"""The access log: one line per HTTP request — method, path, status, latency and who asked.

Never a token, a query string or a body: the path is the route's own (``/v1/messages/{id}``
is logged as requested, ``/v1/messages/42``, but nothing after ``?``), and the principal is
the name the bearer token resolved to (``agent:gene``), not the token. Written through
:mod:`mcos.logs`, so it lands as JSON lines in ``server.log``.
"""

from __future__ import annotations

from starlette.types import Scope

from mcos.domain.tokens import Principal
from mcos.logs import get_logger

log = get_logger("mcos.server.access")

PRINCIPAL = "principal"
"""The key under ``request.state`` where authentication leaves the caller."""


def write(scope: Scope, status: int, seconds: float) -> None:
    """The line of one request that ended with ``status`` after ``seconds`` (written by
    :class:`mcos.server.edge.Edge` for every request, refused ones too; 500 when it failed)."""
    who = scope.get("state", {}).get(PRINCIPAL)
    client = scope.get("client")
    log.info(
        "request",
        method=scope["method"],
        path=scope["path"],
        status=status,
        latency_ms=round(seconds * 1000, 1),
        principal=who.actor if isinstance(who, Principal) else None,
        client=client[0] if client else None,
    )
