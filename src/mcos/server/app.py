"""The FastAPI application of Mission Control."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from mcos import __version__
from mcos.api_traces import MAX_TRACE_BYTES
from mcos.api_workspace import MAX_BLOB_REQUEST
from mcos.channels.base import Channel, Inbound, Outbound
from mcos.channels.runner import ChannelRunner
from mcos.domain.audit import AuditEvent, audit_key, checkpoint_key
from mcos.domain.bounded import PARSE_DEPTH
from mcos.domain.tokens import PrincipalKind
from mcos.exceptions import McosError
from mcos.server import dashboard, dead_letters, errors, lean, parked
from mcos.server.audit_checkpoint import CHECKPOINT_FILE, AuditCheckpoints
from mcos.server.auth import Authenticator
from mcos.server.context import MissionControl, ServerSettings
from mcos.server.dashboard import turns as dashboard_turns
from mcos.server.edge import Edge
from mcos.server.gateway import anthropic_batches
from mcos.server.gateway import routes as gateway_routes
from mcos.server.gateway.anthropic_batches import Batches
from mcos.server.gateway.proxy import Gateway
from mcos.server.governance import Governance
from mcos.server.limits import BodySizeLimit, JsonBodyGuard
from mcos.server.paging import Pager
from mcos.server.routes import (
    agent_control,
    agents,
    approvals,
    audit,
    channels,
    inbox,
    incidents,
    knowledge,
    leases,
    message_search,
    messages,
    system,
    tokens,
    traces,
    usage,
    workspace,
)
from mcos.store import Store

log = logging.getLogger("mcos.server")
OPERATOR_TOKEN_FILE = "operator.token"  # noqa: S105 (a file name, not a secret)


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
    """Expire overdue approval requests, send reminders, retry and re-send pages, once a minute."""
    while True:
        await asyncio.sleep(mc.settings.sweep_seconds)
        try:
            await Governance(mc).sweep()
            if mc.pager is not None:
                await mc.pager.sweep()
        except McosError as e:
            log.warning("governance sweep failed: %s", e.message)


async def _sweep_deliveries(mc: MissionControl) -> None:
    """Dead-letter lapsed and expired deliveries of every inbox and tell of every dead letter
    (a dead letter is never silent), as often as the governance sweep."""
    while True:
        await asyncio.sleep(mc.settings.sweep_seconds)
        try:
            await dead_letters.sweep(mc)
        except McosError as e:
            log.warning("delivery sweep failed: %s", e.message)


class StoreLeases:
    """Channel leases taken straight from the store (Mission Control's own channels)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def acquire(self, key: str, holder: str, ttl: float) -> int:
        """A grant or renewal; ``LeaseHeld`` while another process holds it."""
        lease = await self.store.acquire_lease(key, holder, _HOST, timedelta(seconds=ttl))
        return lease.fence

    async def renew(self, key: str, holder: str, fence: int, ttl: float) -> None:
        """Extend; ``LeaseLost`` when it passed on."""
        await self.store.renew_lease(key, holder, fence, timedelta(seconds=ttl))

    async def release(self, key: str, holder: str, fence: int) -> None:
        """Give it up."""
        await self.store.release_lease(key, holder, fence)


_HOST = socket.gethostname()


def own_channel_runners(mc: MissionControl) -> dict[str, ChannelRunner]:
    """A receiver for each of Mission Control's own channels: button presses and replies of
    the humans it pages."""
    if mc.pager is None:
        return {}
    pager = mc.pager
    holder = f"mission-control@{_HOST}:{os.getpid()}"

    async def report(what: str, detail: str) -> None:
        level = logging.INFO if what == "receiving" else logging.WARNING
        log.log(level, "%s", detail)

    runners = {}
    for name, channel in pager.channels.items():

        async def deliver(item: Inbound, name: str = name, channel: Channel = channel) -> None:
            reply = await pager.answer(name, channel.kind, item)
            answer = getattr(channel, "answer_button", None)
            if item.action and answer is not None:
                await answer(item, reply)
            elif item.reply_to:
                await channel.send(Outbound(name, reply, to=item.reply_to))

        runners[name] = ChannelRunner(channel, deliver, StoreLeases(mc.store), holder, report)
    return runners


def create_app(
    store: Store, settings: ServerSettings, own_channels: dict[str, Channel] | None = None
) -> FastAPI:
    """Mission Control over an opened-on-start ``store``; ``own_channels``: its own channel
    accounts (paging humans), received from while this process holds their leases."""
    mc = MissionControl(
        store=store,
        settings=settings,
        auth=Authenticator(store, settings.token_key, settings.token_cache_seconds),
    )
    if own_channels or settings.page_routes:
        mc.pager = Pager(mc, dict(own_channels or {}))
    store.use_audit_key(audit_key(settings.token_key))
    checkpoints = mc.checkpoints = AuditCheckpoints(
        store,
        Path(settings.state_dir) / CHECKPOINT_FILE if settings.state_dir else None,
        checkpoint_key(settings.token_key),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.webhook_secrets:
            # aiogram takes seconds to import (9 s under load): here, before serving, not in
            # the first webhook's request, which froze every request meanwhile.
            importlib.import_module("mcos.channels.telegram")
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
        await checkpoints.begin()
        tasks = [asyncio.create_task(_sweep_governance(mc), name="governance-sweep")]
        tasks.append(
            asyncio.create_task(
                checkpoints.run(settings.audit_checkpoint_seconds), name="audit-checkpoints"
            )
        )
        tasks += [
            asyncio.create_task(_sweep_deliveries(mc), name="delivery-sweep"),
            asyncio.create_task(parked.recheck(mc), name="parked-recheck"),
        ]
        tasks.append(asyncio.create_task(traces.sweep(mc), name="trace-retention"))
        tasks += [
            asyncio.create_task(runner.run(), name=f"channel-{name}")
            for name, runner in own_channel_runners(mc).items()
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if mc.pager is not None:
                for channel in mc.pager.channels.values():
                    with contextlib.suppress(Exception):
                        await channel.aclose()
            await gateway.aclose()
            try:
                await checkpoints.checkpoint()
            except (McosError, OSError) as e:
                log.warning("audit checkpoint at shutdown failed: %s", e)
            await store.close()

    app = FastAPIOffline(  # /docs and /redoc with their assets served from the package
        title="mcos Mission Control",
        favicon_url="/static/favicon.svg",
        version=__version__,
        description="The control plane of an mcos fleet: messages, agents, tokens, audit.",
        lifespan=lifespan,
        # FastAPI's own OpenTelemetry: its check ran on every request; mcos has its traces.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.mc = mc
    app.state.gateway = gateway = Gateway(mc)
    app.state.gateway_batches = Batches(gateway)
    errors.install(app)
    modules = (system, messages, inbox, agents, tokens, audit, usage, leases, incidents, approvals,
               channels, traces, message_search, agent_control, knowledge, workspace)  # fmt: skip
    for router in (
        *(module.router for module in modules),
        channels.pages,
        gateway_routes.router,
        anthropic_batches.router,
    ):
        app.include_router(router)
    dashboard.install(app)
    app.include_router(dashboard_turns.router)
    app.add_middleware(JsonBodyGuard, depth=PARSE_DEPTH)
    app.add_middleware(
        BodySizeLimit,
        limit=settings.max_body_bytes,
        wider={
            gateway_routes.PREFIX + "/": settings.max_model_body_bytes,
            "/v1/traces": MAX_TRACE_BYTES,
            workspace.PREFIX: MAX_BLOB_REQUEST,
        },
    )

    # Outermost, around the layers FastAPI and Starlette add (built now, not on the first
    # request): every request passes the edge (security headers, metric, access log; refused
    # ones and Starlette's own 500 page too), then the door of the lean routes.
    door = lean.Door(
        app.build_middleware_stack(),
        lean.routes(),
        body_limit=settings.max_body_bytes,
        depth=PARSE_DEPTH,
    )
    app.middleware_stack = Edge(door, metrics=mc.metrics)
    return app
