"""Building Mission Control from a fleet file (for `mcos server`, including worker processes)."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from fastapi import FastAPI

from mcos.channels.factory import lease_key, open_channel
from mcos.config import Fleet, load_fleet
from mcos.config.secrets import resolve_key
from mcos.domain.authority import Matrix
from mcos.domain.budget import Limits
from mcos.domain.paging import PageRoute
from mcos.domain.workspace_sync import SyncLimits
from mcos.exceptions import ConfigError
from mcos.logs import configure as configure_logging
from mcos.ops.filemodes import private_dir, private_file
from mcos.server.app import OPERATOR_TOKEN_FILE, create_app
from mcos.server.context import ChannelBinding, ServerSettings
from mcos.server.gateway.keys import gateway_agents
from mcos.store import make_store

log = logging.getLogger(__name__)

TOKEN_KEY_FILE = "server.key"  # noqa: S105 (a file name)
FLEET_ENV = "MCOS_FLEET"


def token_key(state_dir: Path) -> bytes:
    """The token-hashing key: ``$MCOS_TOKEN_KEY_FILE`` or ``STATE/server.key``.

    Created (64 hex characters, mode 0600) on first use. Every server of one fleet must share it.
    """
    path = Path(os.environ.get("MCOS_TOKEN_KEY_FILE", state_dir / TOKEN_KEY_FILE))
    if path.exists():
        private_file(path)
        key = path.read_bytes().strip()
        if len(key) < 32:
            raise ConfigError(str(path), "", "the token key file holds fewer than 32 bytes")
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another worker created it first
        return token_key(state_dir)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key


def settings_for(fleet: Fleet) -> ServerSettings:
    """Server settings from the fleet file: directory, token key, bootstrap operator."""
    founders = [n for n, h in fleet.humans.items() if h.role == "founder"]
    operator = (founders or sorted(fleet.humans) or ["admin"])[0]
    state_dir = private_dir(fleet.state_dir)
    private_file(state_dir / OPERATOR_TOKEN_FILE)
    return ServerSettings(
        token_key=token_key(state_dir),
        directory=fleet.directory(),
        bootstrap_operator=operator,
        state_dir=str(state_dir),
        budgets={
            name: Limits.of(a.budget.daily_usd, a.budget.daily_tokens)
            for name, a in fleet.agents.items()
        },
        fleet_budget=Limits.of(fleet.fleet.daily_usd, fleet.fleet.daily_tokens),
        matrix=Matrix.build(fleet.authority),
        human_roles={name: h.role for name, h in fleet.humans.items()},
        workspaces={name: str(fleet.workspace_path(name)) for name in fleet.agents},
        knowledge=knowledge_owners(fleet),
        workspace_sync=sync_limits(fleet),
        channels=channel_bindings(fleet),
        page_routes=page_routes(fleet),
        send_limits=fleet.messaging.limits(),
        pingpong=fleet.messaging.pingpong(),
        metrics_token=(
            None
            if fleet.server.metrics_token is None
            else resolve_key(
                fleet.server.metrics_token,
                where=f"{fleet.path}: server.metrics_token",
                base_dir=fleet.base_dir,
            )
        ),
        host_agents=host_agents(fleet),
        gateway=gateway_agents(fleet),
        models={name: a.model for name, a in fleet.agents.items()},
        triage_models={
            name: a.triage_model for name, a in fleet.agents.items() if a.triage_model is not None
        },
        prices=fleet.price_table(),
        trace_days=fleet.server.trace_days,
        webhook_secrets={
            name: resolve_key(
                c.webhook_secret, where=f"{fleet.path}: channels.{name}", base_dir=fleet.base_dir
            )
            for name, c in fleet.channels.items()
            if c.kind == "telegram" and c.mode == "webhook" and c.webhook_secret and c.enabled
        },
    )


def host_agents(fleet: Fleet) -> dict[str, frozenset[str]]:
    """Each host and the agents it may run: placed on it, or failing over to it."""
    return {
        host: frozenset(
            n for n, a in fleet.agents.items() if a.host == host or host in a.failover_hosts
        )
        for host in fleet.hosts
    }


def channel_bindings(fleet: Fleet) -> dict[str, ChannelBinding]:
    """Each channel's agent and the one lease key its receiver may hold. A bot token that does
    not resolve where Mission Control runs leaves the key unknown: that channel's leases are
    refused, saying so, until the token is given to Mission Control too."""
    out = {}
    for name, c in fleet.channels.items():
        if not c.enabled:
            continue
        try:
            key, problem = lease_key(name, fleet), ""
        except ConfigError as e:
            key, problem = None, e.problem
            log.warning("channel %s: no lease can be granted: %s", name, problem)
        out[name] = ChannelBinding(c.kind, c.agent, key, problem)
    return out


def page_routes(fleet: Fleet) -> dict[str, tuple[PageRoute, ...]]:
    """Each human's paging channels with their address there (mock: their name)."""
    routes = {}
    for human, h in fleet.humans.items():
        found = []
        for channel in h.page:
            kind = fleet.channels[channel].kind
            address = human if kind == "mock" else getattr(h, kind)
            if address:
                found.append(PageRoute(channel, kind, str(address)))
        if found:
            routes[human] = tuple(found)
    return routes


def build_app(fleet: Fleet) -> FastAPI:
    """Mission Control for ``fleet``, over the store its file names."""
    store = make_store(fleet.store_url, fleet.delivery.policy())
    own = {
        name: open_channel(name, fleet)
        for name, c in fleet.channels.items()
        if c.agent is None and c.enabled
    }
    return create_app(store, settings_for(fleet), own)


def app_from_env() -> FastAPI:
    """Uvicorn factory for worker processes: the fleet file comes from ``$MCOS_FLEET``."""
    configure_logging()  # a spawned worker inherits no logging setup
    return build_app(load_fleet(os.environ[FLEET_ENV]))


def proxy_options(fleet: Fleet) -> dict[str, object]:
    """Uvicorn's proxy settings from ``[server] trusted_proxies``: X-Forwarded-For/-Proto are
    believed only from those addresses (uvicorn otherwise trusts 127.0.0.1, where agents run)."""
    trusted = fleet.server.trusted_proxies
    return {"proxy_headers": bool(trusted), "forwarded_allow_ips": ",".join(trusted) or None}


def knowledge_owners(fleet: Fleet) -> dict[str, dict[str, str]]:
    """Each agent's knowledge folder labels → the owner its chunks are kept under in the store:
    ``shared:NAME`` for a ``[knowledge.NAME]`` folder naming it, else ``agent:AGENT``."""
    owners: dict[str, dict[str, str]] = {}
    for agent in fleet.agents:
        labels: dict[str, str] = {}
        for label in fleet.knowledge_folders(agent):
            shared = [n for n, k in sorted(fleet.knowledge.items())
                      if k.path.rstrip("/") == label and agent in k.agents]  # fmt: skip
            labels[label] = f"shared:{shared[0]}" if shared else f"agent:{agent}"
        if labels:
            owners[agent] = labels
    return owners


def sync_limits(fleet: Fleet) -> dict[str, SyncLimits]:
    """Each agent's ``[workspace_sync]`` as Mission Control enforces it on pushes."""
    limits = {}
    for agent in fleet.agents:
        c = fleet.workspace_sync_for(agent)
        limits[agent] = SyncLimits(c.enabled, c.max_file_bytes, c.max_total_bytes)
    return limits
