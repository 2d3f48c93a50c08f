"""`mcos init --template business`: the field report's fleet, loadable, with a workspace each."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mcos.cli import app
from mcos.config import load_fleet, parse_duration
from mcos.config.models import Fleet
from mcos.config.scaffold import init_fleet
from mcos.exceptions import ConfigError
from mcos.runtime.workspace import (
    MAX_GUARDRAILS,
    ORDER,
    TurnKind,
    Workspace,
    guardrail_entries,
)

ROLES = {
    "jarvis": "orchestrator",
    "donna": "comms",
    "elon": "cto",
    "gene": "ops",
    "forge": "product-engineer",
    "atlas": "cio",
    "sentinel": "security",
    "vault": "revenue-lead",
    "scout": "distribution",
    "ledger": "bookkeeping",
    "claw": "content",
    "pulse": "analytics",
}
REVENUE = {"vault", "scout", "ledger", "claw", "pulse"}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    """The business template written once into a fresh folder, and loaded."""
    return load_fleet(init_fleet(tmp_path_factory.mktemp("business"), template="business"))


class TestFleetFile:
    """The business fleet file loads and describes the field report's fleet."""

    def test_loads_without_warnings(self, fleet: Fleet) -> None:
        """`load_fleet` accepts it with no errors and no warnings; a founder has the final call."""
        assert fleet.warnings == []
        assert fleet.humans["founder"].role == "founder"

    def test_every_role(self, fleet: Fleet) -> None:
        """Each agent of the field report is there, with its role."""
        assert {name: a.role for name, a in fleet.agents.items()} == ROLES

    def test_runs_without_a_key(self, fleet: Fleet) -> None:
        """Every agent starts on the offline model, so no key is needed."""
        assert {a.model.provider for a in fleet.agents.values()} == {"offline"}
        assert all(a.key is None for a in fleet.agents.values())

    def test_budgets(self, fleet: Fleet) -> None:
        """Every agent has a daily dollar cap, and the fleet cap is below their sum."""
        caps = [a.budget.daily_usd for a in fleet.agents.values()]
        assert all(cap is not None and cap > 0 for cap in caps)
        assert fleet.fleet.daily_usd is not None
        assert fleet.fleet.daily_usd < sum(cap for cap in caps if cap is not None)

    def test_reporting_lines(self, fleet: Fleet) -> None:
        """jarvis reports to the founder, the revenue team to vault, forge to elon."""
        assert fleet.agents["jarvis"].reports_to == "founder"
        assert fleet.agents["forge"].reports_to == "elon"
        assert {fleet.agents[n].reports_to for n in REVENUE - {"vault"}} == {"vault"}

    def test_watchers_never_sleep(self, fleet: Fleet) -> None:
        """Ops and security beat every 30 minutes all day; the others keep active hours."""
        for name, agent in fleet.agents.items():
            if name in {"gene", "sentinel"}:
                assert agent.heartbeat.active_hours is None
                assert agent.heartbeat.interval == "30m"
            else:
                assert agent.heartbeat.active_hours is not None

    def test_revenue_agents_parked(self, fleet: Fleet) -> None:
        """Revenue agents beat rarely and cannot run checks or file incidents."""
        for name in REVENUE:
            agent = fleet.agents[name]
            assert parse_duration(agent.heartbeat.interval) >= timedelta(hours=4)
            assert "run_check" not in agent.allowed_tools
            assert "report_incident" not in agent.allowed_tools

    def test_checks_and_cron(self, fleet: Fleet) -> None:
        """gene checks Mission Control over HTTP and TCP; jarvis and atlas have cron jobs."""
        checks = {c.name: c for c in fleet.agents["gene"].checks}
        assert any(c.http == "http://127.0.0.1:8700/healthz" for c in checks.values())
        assert any(c.tcp == "127.0.0.1:8700" for c in checks.values())
        [briefing] = fleet.agents["jarvis"].cron
        assert briefing.schedule == "0 8 * * *"
        assert briefing.session == "isolated"
        assert fleet.agents["atlas"].cron

    def test_topics(self, fleet: Fleet) -> None:
        """alerts, ops, revenue and all-hands exist; all-hands reaches every agent."""
        assert set(fleet.topics) == {"alerts", "ops", "revenue", "all-hands"}
        assert set(fleet.topics["all-hands"].subscribers) == set(fleet.agents)
        assert set(fleet.topics["revenue"].subscribers) >= REVENUE


class TestWorkspaces:
    """Each agent's workspace is complete, written for its role, and fits the prompt whole."""

    def test_load_whole(self, fleet: Fleet) -> None:
        """Every file of the load order is there, nothing is cut, no file is near its caps."""
        for name in fleet.agents:
            root = fleet.workspace_path(name)
            prompt = Workspace(root).prompt(TurnKind.HEARTBEAT)
            assert prompt.truncations == [], name
            assert prompt.missing == [], name
            assert (root / "memory").is_dir()
            for file in ORDER:
                text = (root / file).read_text()
                assert len(text) < 2_000, f"{name}/{file}"
                assert "$" not in text, f"{name}/{file} has an unfilled placeholder"

    def test_guardrails_within_limit(self, fleet: Fleet) -> None:
        """Every GUARDRAILS.md has between 5 and 15 entries."""
        for name in fleet.agents:
            text = (fleet.workspace_path(name) / "GUARDRAILS.md").read_text()
            assert 5 <= guardrail_entries(text) <= MAX_GUARDRAILS, name

    def test_written_for_the_role(self, fleet: Fleet) -> None:
        """SOUL.md names its agent, and no two agents share a SOUL or GUARDRAILS file."""
        for file in ("SOUL.md", "GUARDRAILS.md", "IDENTITY.md"):
            texts = {(fleet.workspace_path(n) / file).read_text() for n in fleet.agents}
            assert len(texts) == len(fleet.agents), file
        for name in fleet.agents:
            assert f"You are {name}" in (fleet.workspace_path(name) / "SOUL.md").read_text()
        sentinel = (fleet.workspace_path("sentinel") / "GUARDRAILS.md").read_text()
        assert "Never declare an incident above P3 alone" in sentinel

    def test_shared_files_filled_and_overridden(self, fleet: Fleet) -> None:
        """Shared AGENTS.md names each agent's manager; jarvis's own AGENTS.md replaces it."""
        donna = (fleet.workspace_path("donna") / "AGENTS.md").read_text()
        scout = (fleet.workspace_path("scout") / "AGENTS.md").read_text()
        jarvis = (fleet.workspace_path("jarvis") / "AGENTS.md").read_text()
        assert "Directives come from jarvis" in donna
        assert "Directives come from vault" in scout
        assert "engineering committee" in jarvis

    def test_revenue_heartbeats_are_empty(self, fleet: Fleet) -> None:
        """Revenue agents' HEARTBEAT.md says nothing (no model turns when idle); others' do."""
        for name in fleet.agents:
            disabled = Workspace(fleet.workspace_path(name)).heartbeat_disabled()
            assert disabled is (name in REVENUE), name


class TestRerun:
    """Running `mcos init` again never loses an edited workspace file without --force."""

    def test_keeps_edits(self, tmp_path: Path) -> None:
        """An existing fleet is refused; with the fleet file gone, edits stay, gaps are filled."""
        init_fleet(tmp_path, template="business")
        memory = tmp_path / "agents" / "jarvis" / "MEMORY.md"
        memory.write_text("# Long-term memory\n\n- The bank closes at 16:00.\n")
        (tmp_path / "agents" / "jarvis" / "SOUL.md").unlink()
        with pytest.raises(ConfigError, match="already exists"):
            init_fleet(tmp_path, template="business")
        (tmp_path / "fleet.toml").unlink()
        init_fleet(tmp_path, template="business")
        assert "The bank closes at 16:00." in memory.read_text()
        assert "You are jarvis" in (tmp_path / "agents" / "jarvis" / "SOUL.md").read_text()

    def test_force_rewrites(self, tmp_path: Path) -> None:
        """--force writes the template's files again."""
        init_fleet(tmp_path, template="business")
        memory = tmp_path / "agents" / "jarvis" / "MEMORY.md"
        memory.write_text("scratch\n")
        init_fleet(tmp_path, template="business", force=True)
        assert "Escalation gates" in memory.read_text()

    def test_unknown_template(self, tmp_path: Path) -> None:
        """An unknown template is refused, naming the known ones."""
        with pytest.raises(ConfigError, match="known: small, business"):
            init_fleet(tmp_path, template="enterprise")


class TestCli:
    """The command a user types."""

    def test_init_then_config_check(self, tmp_path: Path) -> None:
        """`mcos init DIR --template business` then `mcos config check` exits 0."""
        runner = CliRunner()
        directory = tmp_path / "biz"
        made = runner.invoke(app, ["init", str(directory), "--template", "business"])
        assert made.exit_code == 0, made.output
        checked = runner.invoke(app, ["config", "check", "-f", str(directory / "fleet.toml")])
        assert checked.exit_code == 0, checked.output
        assert "ok" in checked.output
        assert "warning" not in checked.output
