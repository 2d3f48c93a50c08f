"""The FastAPI application of Mission Control."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcos import __version__
from mcos.domain.audit import AuditEvent
from mcos.domain.tokens import PrincipalKind
from mcos.exceptions import McosError
from mcos.server import dashboard, errors
from mcos.server.auth import Authenticator
from mcos.server.context import MissionControl, ServerSettings
from mcos.server.governance import Governance
from mcos.server.limits import BodySizeLimit
from mcos.server.metrics import Metrics
from mcos.server.routes import (
    agents,
    approvals,
    audit,
    inbox,
    incidents,
    leases,
    messages,
    system,
    tokens,
    usage,
)
from mcos.store import Store

log = logging.getLogger("mcos.server")
OPERATOR_TOKEN_FILE = "operator.token"  # noqa: S105 (a file name, not a secret)


class RequestMetrics:
    """Times every request by its route template (not its raw path, which would explode)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(template, scope["method"], str(status)).observe(
                time.perf_counter() - started
            )


async def bootstrap_operator(mc: MissionControl) -> Path | None:
    """On a store with no operator token, write one for the configured operator (mode 0600)."""
    name, state_dir = mc.settings.bootstrap_operator, mc.settings.state_dir
    if name is None or state_dir is None:
        return None
    existing = [t for t in await mc.store.list_tokens() if t.kind is PrincipalKind.OPERATOR]
    if existing:
        return None
    created = await tokens.issue(mc, "system", PrincipalKind.OPERATOR, name, "bootstrap")
    path = Path(state_dir) / OPERATOR_TOKEN_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(created.token + "\n")
    log.warning("wrote the first operator token (for %s) to %s", name, path)
    return path


async def _sweep_governance(mc: MissionControl) -> None:
    """Expire overdue approval requests and send reminders, once a minute."""
    while True:
        await asyncio.sleep(mc.settings.sweep_seconds)
        try:
            await Governance(mc).sweep()
        except McosError as e:
            log.warning("governance sweep failed: %s", e.message)


def create_app(store: Store, settings: ServerSettings) -> FastAPI:
    """Mission Control over an opened-on-start ``store``."""
    mc = MissionControl(
        store=store,
        settings=settings,
        auth=Authenticator(store, settings.token_key, settings.token_cache_seconds),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await store.open()
        if settings.directory is not None:
            d = settings.directory
            await store.sync_directory(
                d,
                audit=AuditEvent(
                    "system",
                    "directory.sync",
                    detail={
                        "agents": len(d.agents),
                        "humans": len(d.humans),
                        "topics": len(d.topics),
                    },
                ),
            )
        await bootstrap_operator(mc)
        sweeper = asyncio.create_task(_sweep_governance(mc), name="governance-sweep")
        try:
            yield
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            await store.close()

    app = FastAPI(
        title="mcos Mission Control",
        version=__version__,
        description="The control plane of an mcos fleet: messages, agents, tokens, audit.",
        lifespan=lifespan,
    )
    app.state.mc = mc
    errors.install(app)
    for module in (
        system,
        messages,
        inbox,
        agents,
        tokens,
        audit,
        usage,
        leases,
        incidents,
        approvals,
    ):
        app.include_router(module.router)
    dashboard.install(app)
    app.add_middleware(RequestMetrics, metrics=mc.metrics)
    app.add_middleware(BodySizeLimit, limit=settings.max_body_bytes)
    return app
