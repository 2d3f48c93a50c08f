"""The ``mcos`` command: thin — it parses, calls Mission Control or the store, and prints."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Optional
from urllib.parse import urlsplit

import typer
import uvicorn
from fastapi import FastAPI

from mcos.api_models import AgentOut, LeaseOut, TokenOut
from mcos.cli import common
from mcos.cli.common import age, connect, console, friendly_errors, print_json, table
from mcos.client import AsyncClient, Calls
from mcos.config import Fleet, check_fleet, parse_duration
from mcos.config.scaffold import init_fleet
from mcos.domain.agent_state import AgentStatus
from mcos.domain.messages import MessageKind, Priority
from mcos.domain.redaction import install_log_redaction
from mcos.domain.tokens import PrincipalKind, parse_prefix
from mcos.exceptions import Forbidden
from mcos.ops.doctor import diagnose
from mcos.ops.recover import RECOVERED, recover_operator
from mcos.runtime.main import title
from mcos.runtime.process import run_agent
from mcos.server.factory import FLEET_ENV, build_app, proxy_options
from mcos.store import make_store
from mcos.supervisor import systemd
from mcos.supervisor.local import LocalFleet
from mcos.supervisor.supervisor import Supervisor

app = typer.Typer(
    name="mcos",
    help="Mission Control OS: run and govern a fleet of LLM agents.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
token_app = typer.Typer(help="Create, list, rotate and revoke bearer tokens.", no_args_is_help=True)
db_app = typer.Typer(help="The store's schema.", no_args_is_help=True)
config_app = typer.Typer(help="The fleet file.", no_args_is_help=True)
audit_app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)
dead_app = typer.Typer(help="Dead-lettered deliveries.", no_args_is_help=True)
app.add_typer(token_app, name="token")
app.add_typer(db_app, name="db")
app.add_typer(config_app, name="config")
app.add_typer(audit_app, name="audit")
app.add_typer(dead_app, name="dead-letters")
agent_app = typer.Typer(help="One agent: run it, resume it.", no_args_is_help=True)
app.add_typer(agent_app, name="agent")
systemd_app = typer.Typer(help="systemd unit files: generate, check.", no_args_is_help=True)
app.add_typer(systemd_app, name="systemd")
channel_app = typer.Typer(help="Channels: follow a mock channel's posts.", no_args_is_help=True)
app.add_typer(channel_app, name="channel")
incidents_app = typer.Typer(help="Incidents at their gates.", no_args_is_help=True)
app.add_typer(incidents_app, name="incidents")
approvals_app = typer.Typer(help="Approval requests and committees.", no_args_is_help=True)
pages_app = typer.Typer(help="Pages to humans and their acknowledgements.", no_args_is_help=True)
app.add_typer(pages_app, name="pages")
app.add_typer(approvals_app, name="approvals")

app_from_env_path = "mcos.server.factory:app_from_env"

FleetOpt = Annotated[
    Optional[Path],  # noqa: UP045 (Typer reads the annotation at run time)
    typer.Option("--fleet", "-f", help="Fleet file (default: $MCOS_FLEET or ./fleet.toml)."),
]
UrlOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option("--url", help="Mission Control URL (default: $MCOS_URL or the fleet's)."),
]
TokenOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option("--token", help="Bearer token (default: $MCOS_TOKEN or the operator token)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def main() -> None:
    """Entry point of the ``mcos`` console script."""
    app()


# --- fleet file ------------------------------------------------------------------------------
@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Folder to create the fleet in.")],
    template: Annotated[
        str,
        typer.Option(
            help="small: orchestrator, ops, security. business: the field report's 12-agent fleet."
        ),
    ] = "small",
    force: Annotated[
        bool, typer.Option(help="Overwrite an existing fleet.toml and the workspace files.")
    ] = False,
) -> None:
    """Write a working fleet from a template, with a workspace folder per agent."""
    with friendly_errors():
        path = init_fleet(directory, template=template, force=force)
    console.print(f"wrote {path}; check it with `mcos config check -f {path}`")


@config_app.command("check")
def config_check(fleet: FleetOpt = None) -> None:
    """Validate the fleet file; every problem is named with its key path."""
    path = common.fleet_path(fleet)
    with friendly_errors():
        warnings = check_fleet(path)
    for w in warnings:
        console.print(common.styled("warning:", "yellow", w))
    console.print(f"{path}: ok")


# --- server ----------------------------------------------------------------------------------
async def _upgrade(url: str) -> list[int]:
    store = make_store(url)
    try:
        return await store.upgrade()
    finally:
        await store.close()


async def _start_once(app: FastAPI) -> None:
    """Run the app's start-up (and shut-down) once, outside any worker."""
    async with app.router.lifespan_context(app):
        pass


def _serve(loaded: Fleet, host: str | None, port: int | None, migrate: bool, workers: int) -> None:
    if migrate:
        applied = asyncio.run(_upgrade(loaded.store_url))
        if applied:
            console.print(f"store migrated to schema version {applied[-1]}")
    listen = urlsplit(loaded.server.url)
    bind_host = host or listen.hostname or "127.0.0.1"
    bind_port = port or listen.port or 8700
    if workers > 1 and not loaded.store_url.startswith("postgres"):
        common.fail("--workers above 1 needs the PostgreSQL store (SQLite has one writer)")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    install_log_redaction()
    console.print(
        f"Mission Control on http://{bind_host}:{bind_port} "
        f"(store: {loaded.store_url.split(':', 1)[0]}, workers: {workers}); "
        f"operator token: {loaded.state_dir / common.OPERATOR_TOKEN_FILE}"
    )
    options: dict[str, Any] = {
        "timeout_graceful_shutdown": 5,
        "host": bind_host,
        "port": bind_port,
        "log_level": "info",
        "access_log": False,
        **proxy_options(loaded),
    }
    if workers > 1:
        # Once, before the workers start: the shared token key, the directory sync and the
        # first operator token (workers racing to bootstrap would each mint one).
        asyncio.run(_start_once(build_app(loaded)))
        os.environ[FLEET_ENV] = str(loaded.path)
        uvicorn.run(app_from_env_path, factory=True, workers=workers, **options)
    else:
        uvicorn.run(build_app(loaded), **options)


@app.command()
def server(
    fleet: FleetOpt = None,
    host: Annotated[Optional[str], typer.Option(help="Bind address.")] = None,  # noqa: UP045
    port: Annotated[Optional[int], typer.Option(help="Bind port.")] = None,  # noqa: UP045
    migrate: Annotated[bool, typer.Option(help="Apply pending migrations first.")] = True,
    workers: Annotated[
        int, typer.Option(min=1, max=32, help="Server processes (PostgreSQL only).")
    ] = 1,
) -> None:
    """Run Mission Control: the HTTP API over the fleet's store."""
    with friendly_errors():
        _serve(common.load(fleet), host, port, migrate, workers)


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
        applied = asyncio.run(_upgrade(loaded.store_url))
        if applied:
            console.print(f"store migrated to schema version {applied[-1]}")
        _run_local(loaded)


def _run_local(loaded: Fleet) -> None:
    local = LocalFleet(loaded, say=console.print)
    try:
        local.start_server()
        providers = sorted({a.model.provider for a in loaded.agents.values()})
        console.print(
            f"Mission Control: {loaded.server.url} (API /v1, OpenAPI /docs) — starting "
            f"{len(loaded.agents)} agents ({', '.join(providers)} model"
            f"{'s' if len(providers) > 1 else ''}); logs in {local.logs}/\n"
            f"In another terminal: MCOS_FLEET={loaded.path} mcos status · Ctrl-C stops everything"
        )
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
        if host not in loaded.hosts:
            common.fail(f"no host {host!r} in {loaded.path} (known: {', '.join(loaded.hosts)})")
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
        asyncio.run(_supervise_hosts(loaded, {host: secret}, url or loaded.server.endpoints))


@systemd_app.command("generate")
def systemd_generate(
    host: Annotated[str, typer.Option(help="The host whose supervisor unit to write.")],
    out: Annotated[Path, typer.Option(help="Folder to write the unit files into.")] = Path("."),
    user: Annotated[Optional[str], typer.Option(help="User= for the services.")] = None,  # noqa: UP045
    fleet: FleetOpt = None,
) -> None:
    """Write unit files for Mission Control and this host's supervisor."""
    with friendly_errors():
        loaded = common.load(fleet)
        if host not in loaded.hosts:
            common.fail(f"no host {host!r} in {loaded.path} (known: {', '.join(loaded.hosts)})")
        out.mkdir(parents=True, exist_ok=True)
        for unit in systemd.generate(loaded, host, user=user):
            (out / unit.name).write_text(unit.text, encoding="utf-8")
            console.print(f"wrote {out / unit.name}")


@systemd_app.command("check")
def systemd_check(
    files: Annotated[list[Path], typer.Argument(help="Unit files to lint.")],
) -> None:
    """Lint unit files for what `systemd-analyze verify` lets pass (KillMode, secrets, restarts)."""
    problems = []
    for path in files:
        if not path.is_file():
            common.fail(f"{path}: no such file")
        problems += systemd.check(path)
    for p in problems:
        console.print(p.describe(), style="red", highlight=False)
    if problems:
        raise typer.Exit(1)
    console.print(f"{len(files)} unit file(s): ok")


@db_app.command("upgrade")
def db_upgrade(
    fleet: FleetOpt = None,
    store: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--store", help="Store URL (default: the fleet file's server.store)."),
    ] = None,
) -> None:
    """Apply pending schema migrations."""
    with friendly_errors():
        url = store or common.load(fleet).store_url  # relative SQLite paths: to the fleet file
        applied = asyncio.run(_upgrade(url))
    if applied:
        console.print(f"applied migrations {', '.join(map(str, applied))}")
    else:
        console.print("already at the latest schema version")


# --- messages --------------------------------------------------------------------------------
@app.command()
def send(
    to: Annotated[str, typer.Argument(help="Agent, topic or human.")],
    body: Annotated[str, typer.Argument(help="Message body ('-' reads standard input).")],
    subject: Annotated[str, typer.Option("--subject", "-s")] = "",
    kind: Annotated[MessageKind, typer.Option()] = MessageKind.REQUEST,
    priority: Annotated[Priority, typer.Option("--priority", "-p")] = Priority.NORMAL,
    reply_to: Annotated[Optional[int], typer.Option()] = None,  # noqa: UP045
    key: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--key", help="Idempotency key: resending with it stores nothing new."),
    ] = None,
    fleet: FleetOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Send a message as the token's owner."""
    text = sys.stdin.read() if body == "-" else body
    with friendly_errors(), connect(url, token, fleet) as client:
        result = client.do(
            Calls.send(
                to,
                text,
                subject=subject,
                kind=kind,
                priority=priority,
                reply_to=reply_to,
                idempotency_key=key,
            )
        )
    if as_json:
        print_json(result)
        return
    verb = "sent" if result.created else "already sent (same idempotency key)"
    console.print(
        f"{verb}: message {result.message.id} to {result.message.to} "
        f"({result.deliveries} deliveries, thread {result.message.thread_id})"
    )


@app.command()
def inbox(
    agent: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--inbox", help="Operators: whose inbox (an agent reads its own)."),
    ] = None,
    wait: Annotated[float, typer.Option(help="Wait up to this many seconds for a message.")] = 0,
    limit: Annotated[int, typer.Option()] = 10,
    ack: Annotated[bool, typer.Option(help="Acknowledge what is shown (else redelivered).")] = True,
    fleet: FleetOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Claim messages from an inbox and show them."""
    with friendly_errors(), connect(url, token, fleet) as client:
        result = client.do(Calls.inbox(wait=wait, limit=limit, inbox=agent))
        if ack and result.deliveries:
            client.do(
                Calls.ack_many([(d.id, d.receipt or "") for d in result.deliveries], inbox=agent)
            )
    if as_json:
        print_json(result)
        return
    rows = [
        (
            d.message.id,
            d.message.sender,
            d.message.priority,
            d.message.kind,
            d.message.subject,
            d.message.body[:80],
            d.attempts,
        )
        for d in result.deliveries
    ]
    table(
        f"inbox of {result.inbox}: {len(rows)} message(s)",
        ["id", "from", "priority", "kind", "subject", "body", "attempt"],
        rows,
    )


@app.command()
def status(
    fleet: FleetOpt = None, url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False
) -> None:
    """The fleet at a glance: every agent, when it was last seen, its queue."""
    with friendly_errors(), connect(url, token, fleet) as client:
        health = client.do(Calls.health())
        now = client.do(Calls.time()).now
        agents = client.do(Calls.agents())
        try:
            leases = {x.agent: x for x in client.do(Calls.leases())}
        except Forbidden:  # an agent's token: who holds which agent is the operators' business
            leases = {}
    if as_json:
        print_json({"health": health, "now": now, "agents": agents, "leases": leases})
        return
    console.print(
        f"Mission Control {client.base_url}: {health.status} "
        f"(store {health.store}, schema v{health.schema_version}), "
        f"clock {now:%Y-%m-%d %H:%M:%S} UTC"
    )
    table(
        f"{len(agents)} agent(s)",
        ["agent", "role", "host", "state", "pid", "lease (fence)", "restarts", "last seen",
         "queued", "dead", "spent today", "notes"],
        [
            (
                a.name,
                a.role,
                a.host,
                _state(a, now),
                a.state_info.get("pid", ""),
                _lease(leases.get(a.name), now),
                a.state_info.get("restarts", ""),
                age(a.last_seen_at, now),
                a.queued,
                a.dead,
                f"${a.spent_today_usd:.2f}"
                + (f" / ${a.budget_usd:.2f}" if a.budget_usd is not None else ""),
                _notes(a),
            )
            for a in agents
        ],
    )  # fmt: skip


def _lease(lease: LeaseOut | None, now: datetime) -> str:
    if lease is None:
        return "none"
    holder = lease.holder.split("/")[0] if lease.expires_at > now else "expired"
    return f"{holder} ({lease.fence})"


def _state(agent: AgentOut, now: datetime) -> str:
    if agent.state is None:
        return "not started"
    text = agent.state.replace("_", " ")
    if agent.state_until is not None and agent.state_until > now:
        text += f" until {agent.state_until:%H:%M:%S}"
    beat = agent.state_info.get("last_beat") or {}
    if beat:
        text += f" · beat {beat.get('outcome', '?')}"
    return text


def _notes(agent: AgentOut) -> str:
    info = agent.state_info
    notes = [f"truncated {t}" for t in info.get("truncations", [])]
    if agent.state in (
        "misconfigured",
        "paused",
        "over_budget",
        "cooling_down",
        "failed",
        "starting",
    ) or agent.state_detail.startswith("last model call failed"):
        notes.append(agent.state_detail)
    if info.get("label") == "offline model":
        notes.append("offline model")
    triage = info.get("triage")
    if isinstance(triage, dict):
        notes.append(
            f"first look: {triage.get('settled', 0)} settled, {triage.get('to_main', 0)} to the "
            f"main model, {triage.get('skipped', 0)} straight to it"
        )
    if agent.dead:
        notes.append(f"{agent.dead} dead letter(s): mcos dead-letters list --inbox {agent.name}")
    channels = info.get("channels") or {}
    if isinstance(channels, dict) and channels:
        notes.append(
            "channels "
            + ", ".join(
                f"{n} {'receiving' if on else 'not receiving'}" for n, on in channels.items()
            )
        )
    return "; ".join(n for n in notes if n)


# --- agents ----------------------------------------------------------------------------------
@agent_app.command("run")
def agent_run(
    name: Annotated[str, typer.Argument(help="The agent, as named in the fleet file.")],
    fleet: FleetOpt = None,
    token: TokenOpt = None,
) -> None:
    """Run one agent in this process (its token from --token or $MCOS_TOKEN)."""
    with friendly_errors():
        loaded = common.load(fleet)
        if name not in loaded.agents:
            common.fail(f"no agent {name!r} in {loaded.path} (known: {', '.join(loaded.agents)})")
        secret = token or os.environ.get("MCOS_TOKEN")
        if not secret:
            common.fail("no token: pass --token or set MCOS_TOKEN (an agent token for this agent)")
        logging.basicConfig(
            level=logging.INFO, format=f"%(asctime)s %(levelname)s {name}: %(message)s"
        )
        logging.getLogger("httpx").setLevel(logging.WARNING)
        install_log_redaction()
        title(name, loaded.path)
        code = asyncio.run(run_agent(loaded, name, secret))
    raise typer.Exit(code)


@agent_app.command("resume")
def agent_resume(
    name: Annotated[str, typer.Argument(help="The paused agent.")],
    fleet: FleetOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Resume an agent paused by its circuit breaker or by Mission Control (ping-pong)."""
    with friendly_errors(), connect(url, token, fleet) as client:
        client.do(Calls.report_state(name, AgentStatus.IDLE, "resumed by an operator"))
    console.print(f"{name}: resumed")


# --- tokens ----------------------------------------------------------------------------------
@token_app.command("create")
def token_create(
    agent: Annotated[Optional[str], typer.Option(help="For this agent.")] = None,  # noqa: UP045
    operator: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="For this operator (a configured human votes as that human)."),
    ] = None,
    host: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="For the supervisor (`mcos up`) of this host of the fleet."),
    ] = None,
    label: Annotated[str, typer.Option()] = "",
    expires: Annotated[
        Optional[str], typer.Option(help="Lifetime, e.g. 30d, 12h.")  # noqa: UP045
    ] = None,
    save: Annotated[
        bool,
        typer.Option(help="With --host: write it to STATE/hosts/HOST.token (0600) for `mcos up`."),
    ] = False,
    local: Annotated[
        bool,
        typer.Option(
            help="With --operator: recover a locked-out fleet on the server's machine — write "
            "the token straight into the store with the server's key (no server needed)."
        ),
    ] = False,
    fleet: FleetOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a token; it is printed once and never shown again."""
    given = [(k, n) for k, n in ((PrincipalKind.AGENT, agent), (PrincipalKind.OPERATOR, operator),
                                 (PrincipalKind.HOST, host)) if n is not None]  # fmt: skip
    if len(given) != 1:
        common.fail("give exactly one of --agent NAME, --operator NAME or --host NAME")
    kind, name = given[0]
    if local and kind is not PrincipalKind.OPERATOR:
        common.fail("--local recovers an operator token: use it with --operator NAME")
    if save and kind is not PrincipalKind.HOST:
        common.fail("--save writes a host token: use it with --host NAME")
    if local:
        _recover(name, label, fleet, as_json)
        return
    lifetime = None
    if expires is not None:
        try:
            lifetime = int(_duration(expires).total_seconds())
        except ValueError as e:
            common.fail(f"--expires: {e}")
    assert name is not None
    with friendly_errors(), connect(url, token, fleet) as client:
        created = client.do(
            Calls.create_token(kind, name, label=label, expires_in_seconds=lifetime)
        )
    if save:
        with friendly_errors():
            path = common.host_token_file(common.load(fleet), name)
        common.write_secret(path, created.token)
        console.print(f"token {created.record.id} for host {name} written to {path} (mode 0600)")
        return
    if as_json:
        print_json(created)
        return
    console.print(f"token {created.record.id} for {kind} {name} (shown once, store it now):")
    sys.stdout.write(created.token + "\n")


def _recover(name: str, label: str, fleet: Path | None, as_json: bool) -> None:
    """`mcos token create --operator NAME --local`: straight into the store, audited."""
    with friendly_errors():
        loaded = common.load(fleet)
        recovered = asyncio.run(recover_operator(loaded, name, label))
    if as_json:
        print_json({"token": recovered.token, "record": TokenOut.of(recovered.record)})
        return
    console.print(
        f"token {recovered.record.id} for operator {name}, written to the store locally "
        f"(audited as {RECOVERED}; shown once, store it now):"
    )
    sys.stdout.write(recovered.token + "\n")


def _duration(text: str) -> timedelta:
    if text.endswith("d") and text[:-1].isdigit():
        return timedelta(days=int(text[:-1]))
    return parse_duration(text)


@token_app.command("list")
def token_list(
    name: Annotated[Optional[str], typer.Option(help="Only this principal.")] = None,  # noqa: UP045
    fleet: FleetOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List tokens (never their secrets)."""
    with friendly_errors(), connect(url, token, fleet) as client:
        records = client.do(Calls.tokens(name))
    if as_json:
        print_json(records)
        return
    table(
        "tokens",
        ["id", "prefix", "kind", "name", "label", "created", "expires", "revoked"],
        [
            (t.id, t.prefix, t.kind, t.name, t.label, t.created_at, t.expires_at, t.revoked_at)
            for t in records
        ],
    )


@token_app.command("rotate")
def token_rotate(
    token_id: Annotated[int, typer.Argument(help="Token id (see `mcos token list`).")],
    fleet: FleetOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Replace a token with a new one for the same principal; the old one is revoked."""
    with friendly_errors(), connect(url, token, fleet) as client:
        created = client.do(Calls.rotate_token(token_id))
    if as_json:
        print_json(created)
        return
    console.print(f"token {token_id} revoked; new token {created.record.id} (shown once):")
    sys.stdout.write(created.token + "\n")


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[int, typer.Argument(help="Token id (see `mcos token list`).")],
    fleet: FleetOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Revoke a token from now on."""
    with friendly_errors(), connect(url, token, fleet) as client:
        record = client.do(Calls.revoke_token(token_id))
    console.print(f"token {record.id} ({record.kind} {record.name}) revoked at {record.revoked_at}")


# --- audit -----------------------------------------------------------------------------------
@audit_app.command("verify")
def audit_verify(
    fleet: FleetOpt = None, url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False
) -> None:
    """Walk the audit chain and compare it with the signed checkpoint file; exit 1 and name
    each finding (gap, rewritten, truncated, head moved back, triggers missing, checkpoint)."""
    with friendly_errors(), connect(url, token, fleet) as client:
        result = client.do(Calls.audit_verify())
    if as_json:
        print_json(result)
        if not result.intact:
            raise typer.Exit(1)
        return
    cp = result.checkpoint
    keyed = f"HMAC-SHA256 from seq {result.keyed_from}"
    if result.legacy_records:
        keyed += f"; records 1..{result.legacy_records} are unkeyed SHA-256 (older mcos)"
    checkpoint = (
        f"checkpoint {cp.path}: {cp.lines} signed lines, latest seq {cp.latest_seq} "
        f"at {cp.latest_at}, begun at seq {cp.first_seq}"
        if cp.lines
        else f"checkpoint {cp.path}: no signed lines"
    )
    console.print(f"{keyed}; {checkpoint}")
    if result.intact:
        console.print(f"audit log intact: {result.records} records, head {result.head_seq}")
        return
    for f in result.findings:
        where = f"record {f.seq}" if f.seq is not None else "audit log"
        common.err_console.print(common.styled(f"{f.kind} ({where}):", "bold red", f.message))
    raise typer.Exit(1)


@audit_app.command("list")
def audit_list(
    actor: Annotated[Optional[str], typer.Option()] = None,  # noqa: UP045
    action: Annotated[Optional[str], typer.Option()] = None,  # noqa: UP045
    limit: Annotated[int, typer.Option()] = 50,
    fleet: FleetOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show audit records, oldest first."""
    with friendly_errors(), connect(url, token, fleet) as client:
        records = client.do(Calls.audit(actor=actor, action=action, limit=limit))
    if as_json:
        print_json(records)
        return
    table(
        "audit",
        ["seq", "at", "actor", "action", "targets", "outcome"],
        [(r.seq, r.at, r.actor, r.action, r.targets, r.outcome) for r in records],
    )


@audit_app.command("export")
def audit_export(
    fmt: Annotated[str, typer.Option("--format", help="csv or json.")] = "csv",
    out: Annotated[Optional[Path], typer.Option(help="File (default: stdout).")] = None,  # noqa: UP045
    fleet: FleetOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Export the whole audit log as CSV or JSON."""
    if fmt not in {"csv", "json"}:
        common.fail(f"--format must be csv or json, not {fmt!r}")
    with friendly_errors(), connect(url, token, fleet) as client:
        if fmt == "csv":
            text = client.do(Calls.audit_csv())
        else:
            import json  # noqa: PLC0415

            records = client.do(Calls.audit(limit=10_000))
            text = json.dumps([r.model_dump(mode="json") for r in records], indent=2) + "\n"
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text)
        console.print(f"wrote {out}")


# --- pages -----------------------------------------------------------------------------------
@pages_app.command("list")
def pages_list(
    human: Annotated[Optional[str], typer.Option("--human")] = None,  # noqa: UP045
    state: Annotated[Optional[str], typer.Option("--state", help="sent, failed, acked")] = None,  # noqa: UP045
    fleet: FleetOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Urgent items, P0s and approval requests paged to humans, newest first."""
    with friendly_errors(), connect(url, token, fleet) as client:
        found = client.do(Calls.pages(human=human, state=state))
    if as_json:
        print_json(found)
        return
    table(
        "pages",
        ["page", "human", "kind", "subject", "state", "channel", "acked by", "error"],
        [
            (p.id, p.human, p.kind, p.subject, p.state, p.channel, p.acked_by, p.error)
            for p in found
        ],
    )


@pages_app.command("ack")
def pages_ack(
    page_id: Annotated[int, typer.Argument()],
    fleet: FleetOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Acknowledge a page sent to you (your operator token names you)."""
    with friendly_errors(), connect(url, token, fleet) as client:
        page = client.do(Calls.ack_page(page_id))
    console.print(f"page {page.id} acknowledged by {page.acked_by}")


# --- dead letters ----------------------------------------------------------------------------
@dead_app.command("list")
def dead_list(
    agent: Annotated[Optional[str], typer.Option("--inbox")] = None,  # noqa: UP045
    fleet: FleetOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Deliveries that ran out of attempts (tried and failed), expired, or lapsed."""
    with friendly_errors(), connect(url, token, fleet) as client:
        dead = client.do(Calls.dead_letters(inbox=agent))
    if as_json:
        print_json(dead)
        return
    table(
        "dead letters",
        ["delivery", "inbox", "message", "from", "subject", "attempts", "deferrals", "reason"],
        [
            (
                d.id,
                d.inbox,
                d.message.id,
                d.message.sender,
                d.message.subject,
                d.attempts,
                d.deferrals,
                d.last_error,
            )
            for d in dead
        ],
    )


@dead_app.command("requeue")
def dead_requeue(
    delivery_id: Annotated[int, typer.Argument()],
    fleet: FleetOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Put a dead letter back in its inbox."""
    with friendly_errors(), connect(url, token, fleet) as client:
        d = client.do(Calls.requeue(delivery_id))
    console.print(f"delivery {d.id} requeued to {d.inbox}")


# --- channels --------------------------------------------------------------------------------
@channel_app.command("tail")
def channel_tail(
    name: Annotated[str, typer.Argument(help="A mock channel of the fleet file.")],
    follow: Annotated[
        bool, typer.Option("--follow", "-F", help="Keep printing new posts.")
    ] = False,
    fleet: FleetOpt = None,
) -> None:
    """Print what agents posted to a mock channel (its outbox)."""
    with friendly_errors():
        loaded = common.load(fleet)
        if name not in loaded.channels:
            known = ", ".join(loaded.channels) or "none"
            common.fail(f"no channel {name!r} in {loaded.path} (known: {known})")
        posts = loaded.channel_path(name) / "outbox" / "posts.jsonl"
    offset = 0
    while True:
        if posts.exists():
            with posts.open(encoding="utf-8") as f:
                f.seek(offset)
                for line in f:
                    post = json.loads(line)
                    to = f" → {post['to']}" if post.get("to") else ""
                    console.print(f"{post['at'][:19]}{to}: {post['text']}", highlight=False)
                offset = f.tell()
        if not follow:
            return
        time.sleep(0.5)


# --- doctor ----------------------------------------------------------------------------------
@app.command()
def doctor(
    fleet: FleetOpt = None,
    units: Annotated[
        Optional[list[Path]],  # noqa: UP045
        typer.Option("--units", help="Unit files or folders of them to lint."),
    ] = None,
    live: Annotated[
        bool, typer.Option(help="Check each key with one free call to its provider.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Check everything: configuration, secrets, store, Mission Control, clock, units, disk."""
    verdicts = asyncio.run(diagnose(common.fleet_path(fleet), units=units or [], live=live))
    if as_json:
        print_json([v.as_dict() for v in verdicts])
    else:
        marks = {"ok": ("ok  ", "green"), "warn": ("warn", "yellow"), "fail": ("FAIL", "red")}
        for v in verdicts:
            fix = f" — fix: {v.fix}" if v.fix and v.status != "ok" else ""
            line = common.styled(*marks[v.status], f"{v.check}: {v.detail}{fix}")
            console.print(line, highlight=False)
    failed = sum(v.failed for v in verdicts)
    if failed:
        if not as_json:
            console.print(f"{failed} check(s) failed")
        raise typer.Exit(1)


# --- governance ------------------------------------------------------------------------------
@incidents_app.command("list")
def incidents_list(
    state: Annotated[Optional[str], typer.Option(help="reported, confirmed, …")] = None,  # noqa: UP045
    fleet: FleetOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Incidents at their gates: who reported, who must confirm, who confirmed."""
    with friendly_errors(), connect(url, token, fleet) as client:
        found = client.do(Calls.incidents(state=state))
    if as_json:
        print_json(found)
        return
    table(
        f"{len(found)} incident(s)",
        ["id", "severity", "state", "summary", "reporter", "reports", "gate", "confirmed by"],
        [
            (
                i.id, _severity(i.severity, i.reported_as),
                i.state, i.summary, i.reporter, i.reports, i.gate or "self-logged",
                ", ".join(sorted({e.actor for e in i.timeline if e.action == "confirm"})),
            )
            for i in found
        ],
    )  # fmt: skip


def _severity(now: str, reported: str) -> str:
    return now if now == reported else f"{now} (reported {reported})"


@incidents_app.command("decide")
def incidents_decide(
    incident_id: Annotated[int, typer.Argument()],
    decision: Annotated[str, typer.Argument(help="confirm, resolve or dismiss")],
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why (recorded).")],
    severity: Annotated[Optional[str], typer.Option(help="Confirm at another severity.")] = None,  # noqa: UP045
    fleet: FleetOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Confirm (a vote), resolve or dismiss an incident, with a reason."""
    if decision not in ("confirm", "resolve", "dismiss"):
        common.fail(f"{decision!r}: use confirm, resolve or dismiss")
    with friendly_errors(), connect(url, token, fleet) as client:
        i = client.do(Calls.decide_incident(incident_id, decision, reason, severity))
    console.print(f"incident {i.id}: {i.state} at {i.severity} (gate: {i.gate or 'none'})")


@approvals_app.command("list")
def approvals_list(
    state: Annotated[Optional[str], typer.Option(help="pending, approved, …")] = None,  # noqa: UP045
    fleet: FleetOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Approval requests with their committee, votes and expiry."""
    with friendly_errors(), connect(url, token, fleet) as client:
        found = client.do(Calls.approvals(state=state))
    if as_json:
        print_json(found)
        return
    table(
        f"{len(found)} request(s)",
        ["id", "action", "state", "requester", "committee", "votes", "expires", "payload"],
        [
            (
                a.id, a.action, a.state, a.requester, a.quorum,
                "; ".join(f"{v.voter} {v.vote}: {v.rationale}" for v in a.votes),
                f"{a.expires_at:%Y-%m-%d %H:%M}", a.payload,
            )
            for a in found
        ],
    )  # fmt: skip


def _vote(approval_id: int, vote: str, reason: str, fleet: Path | None, url: str | None,
          token: str | None) -> None:  # fmt: skip
    with friendly_errors(), connect(url, token, fleet) as client:
        a = client.do(Calls.vote(approval_id, vote, reason))
    console.print(f"request {a.id} ({a.action}): {a.state}")


@app.command()
def approve(
    approval_id: Annotated[int, typer.Argument()],
    reason: Annotated[str, typer.Option("--reason", "-r", help="Your rationale (recorded).")],
    fleet: FleetOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Vote to approve a request."""
    _vote(approval_id, "approve", reason, fleet, url, token)


@app.command()
def deny(
    approval_id: Annotated[int, typer.Argument()],
    reason: Annotated[str, typer.Option("--reason", "-r", help="Your rationale (recorded).")],
    veto: Annotated[
        bool,
        typer.Option(
            help="A human's veto: stops a pending request, or an approved one until its "
            "directive is acknowledged (the directive is withdrawn).",
        ),
    ] = False,
    fleet: FleetOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Vote to deny a request (or, as a human, veto it)."""
    if not veto:
        _vote(approval_id, "deny", reason, fleet, url, token)
        return
    with friendly_errors(), connect(url, token, fleet) as client:
        a = client.do(Calls.veto(approval_id, reason))
    console.print(f"request {a.id} ({a.action}): {a.state}")


__all__ = ["app", "main"]
