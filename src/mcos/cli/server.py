"""Mission Control itself: ``mcos server``."""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, Annotated, Any, Optional
from urllib.parse import urlsplit

import typer

from mcos.cli import common, endpoint
from mcos.cli.common import FleetOpt, friendly_errors
from mcos.cli.fleetfile import upgrade
from mcos.config import Fleet
from mcos.logs import configure as configure_logging
from mcos.logs import get_logger

if TYPE_CHECKING:
    from fastapi import FastAPI

app = typer.Typer()

APP_FROM_ENV = "mcos.server.factory:app_from_env"


async def _start_once(app: FastAPI) -> None:
    """Run the app's start-up (and shut-down) once, outside any worker."""
    async with app.router.lifespan_context(app):
        pass


def _serve(loaded: Fleet, host: str | None, port: int | None, migrate: bool, workers: int) -> None:
    import uvicorn  # noqa: PLC0415 (heavy; `mcos status` need not load it)

    from mcos.server.factory import FLEET_ENV, build_app, proxy_options  # noqa: PLC0415 (heavy; `mcos status` need not load it)

    configure_logging()  # JSON lines in server.log, key=value on a terminal
    log = get_logger("mcos.server")
    if migrate:
        applied = asyncio.run(upgrade(loaded.store_url))
        if applied:
            log.info("store migrated", schema_version=applied[-1])
    listen = urlsplit(loaded.server.url)
    bind_host = host or listen.hostname or "127.0.0.1"
    bind_port = port or listen.port or 8700
    if workers > 1 and not loaded.store_url.startswith("postgres"):
        common.fail("--workers above 1 needs the PostgreSQL store (SQLite has one writer)")
    log.info(
        f"Mission Control on {endpoint.connect_url(bind_host, bind_port)}",
        store=loaded.store_url.split(":", 1)[0],
        workers=workers,
        operator_token=str(loaded.state_dir / common.OPERATOR_TOKEN_FILE),  # the file, not it
    )
    options: dict[str, Any] = {
        "timeout_graceful_shutdown": 5,
        "host": bind_host,
        "port": bind_port,
        "log_level": "info",
        "access_log": False,
        "log_config": None,  # uvicorn's records go through ours (mcos.logs)
        **proxy_options(loaded),
    }
    with endpoint.recorded(loaded, bind_host, bind_port):
        if workers > 1:
            # Once, before the workers start: the shared token key, the directory sync and the
            # first operator token (workers racing to bootstrap would each mint one).
            asyncio.run(_start_once(build_app(loaded)))
            os.environ[FLEET_ENV] = str(loaded.path)
            uvicorn.run(APP_FROM_ENV, factory=True, workers=workers, **options)
        else:
            uvicorn.run(build_app(loaded), **options)


@app.command()
def server(
    fleet: FleetOpt = None,
    host: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="Bind address (default: the host of the fleet's [server] url)."),
    ] = None,
    port: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(help="Bind port (default: the port of the fleet's [server] url)."),
    ] = None,
    migrate: Annotated[bool, typer.Option(help="Apply pending migrations first.")] = True,
    workers: Annotated[
        int, typer.Option(min=1, max=32, help="Server processes (PostgreSQL only).")
    ] = 1,
) -> None:
    """Run Mission Control: the HTTP API over the fleet's store.

    While it runs, the address it listens on is kept in STATE/server.json, where the other
    commands look for it (so `mcos status` finds a server started with --port)."""
    from mcos.supervisor.portable import watch_parent_from_env  # noqa: PLC0415

    watch_parent_from_env()  # under `mcos run` on the portable path: stop with the launcher
    with friendly_errors():
        _serve(common.load(fleet), host, port, migrate, workers)
