"""Running the fleet's agents: ``mcos run`` (everything on this machine) and ``mcos up``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from mcos.cli import common, endpoint
from mcos.cli.common import FleetOpt, UrlOpt, console, friendly_errors
from mcos.cli.fleetfile import say_migrated, upgrade
from mcos.client import AsyncClient, Calls
from mcos.config import Fleet
from mcos.config.scaffold import init_fleet
from mcos.domain.tokens import PrincipalKind, parse_prefix

if TYPE_CHECKING:
    from mcos.supervisor.local import LocalFleet

app = typer.Typer()


@app.command()
def run(
    directory: Annotated[
        Path, typer.Argument(help="The fleet's folder (created from a template on first run).")
    ] = Path(common.DEMO_DIR),
    template: Annotated[str, typer.Option(help="Template for a new fleet.")] = "business",
) -> None:
    """Start Mission Control and every agent of the fleet on this machine; Ctrl-C stops all."""
    path = directory / "fleet.toml"
    with friendly_errors():
        if not path.exists():
            init_fleet(directory, template=template)
            console.print(
                f"created the {template} fleet in {directory}/ (edit {path} to change it)"
            )
        loaded = common.load(path)
        say_migrated(asyncio.run(upgrade(loaded.store_url)))
        _run_local(loaded)


def banner(loaded: Fleet, logs: Path) -> str:
    """What `mcos run` says once Mission Control answers: where it is and a command to try
    that works as printed in another terminal opened in the same folder."""
    providers = sorted({a.model.provider for a in loaded.agents.values()})
    fleet = common.shown_path(loaded.path)
    default = common.fleet_path(None).absolute() == loaded.path.absolute()
    status = f"{common.mcos_command()} status" + ("" if default else f" -f {fleet}")
    return (
        f"Mission Control: {loaded.server.url} (API /v1, OpenAPI /docs) — starting "
        f"{len(loaded.agents)} agents ({', '.join(providers)} model"
        f"{'s' if len(providers) > 1 else ''}); logs in {common.shown_path(logs)}/\n"
        f"In another terminal, in this folder: {status} · Ctrl-C stops everything"
    )


def _run_local(loaded: Fleet) -> None:
    from mcos.supervisor.local import LocalFleet  # noqa: PLC0415 (heavy; `mcos status` need not load it)

    local = LocalFleet(loaded, say=console.print)
    try:
        local.start_server()
        console.print(banner(loaded, local.logs))
        hosts = _local_host_tokens(loaded, local)
        asyncio.run(_supervise_hosts(loaded, hosts, loaded.server.url))
    finally:
        console.print("stopping Mission Control…")
        local.stop()
        console.print("stopped")


def _local_host_tokens(loaded: Fleet, local: LocalFleet) -> dict[str, str]:
    """`mcos run`: each host's own token, kept in STATE/hosts/HOST.token — minted at the first
    run (or when the kept one no longer works) with the operator token of the one who runs it.
    The supervisors never hold the operator token."""
    found: dict[str, str] = {}
    with local.operator() as operator:
        for host in loaded.hosts:
            path = common.host_token_file(loaded, host)
            kept = common.read_host_token(path)
            prefix = None if kept is None else parse_prefix(kept)
            live = {
                t.prefix
                for t in operator.do(Calls.tokens(host))
                if t.kind is PrincipalKind.HOST and t.revoked_at is None
            }
            if kept is None or prefix not in live:
                created = operator.do(
                    Calls.create_token(PrincipalKind.HOST, host, label="mcos run")
                )
                common.write_secret(path, created.token)
                kept = created.token
            found[host] = kept
    return found


async def _supervise_hosts(loaded: Fleet, hosts: dict[str, str], url: str | list[str]) -> None:
    """Run one supervisor per host, each with that host's token, until SIGINT or SIGTERM.
    An agent is supervised once: by its own host when that host runs here."""
    from mcos.supervisor.supervisor import Supervisor  # noqa: PLC0415 (heavy; `mcos status` need not load it)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        supervisors = []
        for host, token in sorted(hosts.items()):
            client = await stack.enter_async_context(AsyncClient(url, token, timeout=30))
            supervisor = Supervisor.for_fleet(loaded, {host}, client, console.print)
            supervisor.slots = {
                n: s
                for n, s in supervisor.slots.items()
                if s.primary or loaded.agents[n].host not in hosts
            }
            supervisors.append(supervisor)
        await asyncio.gather(*(s.run(stop) for s in supervisors))
    console.print("agents stopped")


@app.command()
def up(
    host: Annotated[str, typer.Option(help="Run the agents the fleet file places on this host.")],
    fleet: FleetOpt = None,
    url: UrlOpt = None,
    token: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--token",
            help="This host's token (default: $MCOS_HOST_TOKEN, then STATE/hosts/HOST.token).",
        ),
    ] = None,
) -> None:
    """Supervise this host's agents: one live instance each (leases), restarts that back off.

    It acts with the host's own token (`mcos token create --host HOST --save`), never an
    operator's: it may hold its agents' leases, report their state and mint their tokens."""
    with friendly_errors():
        loaded = common.load(fleet)
        common.known_host(loaded, host)
        token_file = common.host_token_file(loaded, host)
        secret = (
            token or os.environ.get(common.HOST_TOKEN_ENV) or common.read_host_token(token_file)
        )
        if not secret:
            common.fail(
                f"no host token: pass --token, set {common.HOST_TOKEN_ENV}, or have an operator "
                f"run `mcos token create --host {host} --save` (writes {token_file})"
            )
        console.print(f"supervising host {host} of {loaded.path}")
        given = url or os.environ.get("MCOS_URL")  # comma-separated replicas allowed
        target = [u for u in (given or "").split(",") if u.strip()] or endpoint.server_urls(loaded)
        asyncio.run(_supervise_hosts(loaded, {host: secret}, target))
