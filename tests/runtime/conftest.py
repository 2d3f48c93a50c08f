"""A real Mission Control on loopback and a fleet whose agents the runtime tests run."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mcos.client import AsyncClient
from mcos.config import load_fleet
from mcos.config.models import Fleet
from mcos.config.scaffold import init_fleet
from mcos.domain.budget import Limits
from mcos.models.base import ModelProvider
from mcos.models.offline import OfflineModel
from mcos.runtime.agent import AgentRuntime, RuntimeSettings
from mcos.runtime.clock import MissionClock
from mcos.server.factory import channel_bindings, knowledge_owners, page_routes
from mcos.server.gateway.keys import gateway_agents
from tests.api.conftest import LiveServer, serve
from tests.store.conftest import drop_pg_database, migrated_database

FAST = RuntimeSettings(batch_window=0, visibility=60)


def write_fleet(root: Path, agent_extra: dict[str, str] | None = None, tail: str = "") -> Fleet:
    """The small template's fleet (jarvis, gene, sentinel), with extra TOML per agent."""
    path = init_fleet(root, template="small")
    text = path.read_text()
    for agent, extra in (agent_extra or {}).items():
        head = f"[agents.{agent}]\n"
        start = text.index(head) + len(head)
        end = text.find("\n[", start)
        end = len(text) if end < 0 else end + 1
        keys = {line.split("=", 1)[0].strip() for line in extra.splitlines() if "=" in line}
        kept = [
            line
            for line in text[start:end].splitlines()
            if line.split("=", 1)[0].strip() not in keys
        ]
        text = text[:start] + extra + "\n" + "\n".join(kept) + "\n" + text[end:]
    path.write_text(text + "\n" + tail)
    return load_fleet(path)


@dataclass
class Rig:
    """Mission Control, the fleet and a way to build runtimes against both."""

    server: LiveServer
    fleet: Fleet
    clients: list[AsyncClient]
    runtimes: list[AgentRuntime] = field(default_factory=list)

    def client(self, name: str | None = None) -> AsyncClient:
        """An async client as ``name`` (or the operator), closed at teardown."""
        token = self.server.tokens[name] if name else self.server.operator_token
        c = AsyncClient(self.server.url, token, timeout=45)
        self.clients.append(c)
        return c

    def runtime(
        self,
        name: str,
        provider: ModelProvider | None = None,
        settings: RuntimeSettings = FAST,
    ) -> AgentRuntime:
        """Agent ``name`` of the fleet, on the real clock corrected to Mission Control's."""
        runtime = AgentRuntime(
            name,
            self.fleet,
            self.client(name),
            provider or OfflineModel(),
            MissionClock(),
            settings=settings,
        )
        self.runtimes.append(runtime)
        return runtime


RigFactory = Callable[..., Rig]


@pytest.fixture
async def rig_factory(tmp_path: Path) -> AsyncIterator[RigFactory]:
    """Build a rig: ``rig_factory(agent_extra={...}, budgets={...})`` (SQLite store)."""
    stack: list[Any] = []
    rigs: list[Rig] = []
    dropped: list[str] = []

    def build(
        agent_extra: dict[str, str] | None = None,
        budgets: dict[str, Limits] | None = None,
        tail: str = "",
        store: str = "sqlite",
        **overrides: Any,
    ) -> Rig:
        fleet = write_fleet(tmp_path / "fleet", agent_extra, tail)
        url = migrated_database(store, tmp_path)
        if store == "postgres":  # the fleet file names it, as a PostgreSQL fleet's would
            dropped.append(url)
            text = fleet.path.read_text().replace('"sqlite:///state/mcos.db"', f'"{url}"', 1)
            fleet.path.write_text(text)
            fleet = load_fleet(fleet.path)
        channels = channel_bindings(fleet)
        cm = serve(
            url,
            tmp_path,
            budgets=budgets or {},
            channels=channels | overrides.pop("channels", {}),
            page_routes=overrides.pop("page_routes", None) or page_routes(fleet),
            gateway=overrides.pop("gateway", None) or gateway_agents(fleet),
            models=overrides.pop("models", None) or {n: a.model for n, a in fleet.agents.items()},
            triage_models={n: a.triage_model for n, a in fleet.agents.items() if a.triage_model},
            prices=overrides.pop("prices", None) or fleet.price_table(),
            knowledge=knowledge_owners(fleet),
            **overrides,
        )
        server = cm.__enter__()
        stack.append(cm)
        rig = Rig(server, fleet, [])
        rigs.append(rig)
        return rig

    yield build
    for rig in rigs:
        for runtime in rig.runtimes:
            await runtime.aclose()
        for c in rig.clients:
            await c.aclose()
    for cm in reversed(stack):
        cm.__exit__(None, None, None)
    for url in dropped:
        drop_pg_database(url)


@pytest.fixture
async def rig(rig_factory: RigFactory) -> Rig:
    """The default rig: no extras, no budgets."""
    return rig_factory()
