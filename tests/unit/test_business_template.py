"""`mcos init --template business`: the field report's fleet, loadable, with a workspace each."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mcos.cli import app
from mcos.config import load_fleet, parse_duration
from mcos.config.models import BUILTIN_TOOLS, Fleet
from mcos.config.scaffold import init_fleet
from mcos.config.secrets import key_uses, resolve_all
from mcos.exceptions import ConfigError
from mcos.runtime.workspace import (
    MAX_GUARDRAILS,
    ORDER,
    TurnKind,
    Workspace,
    guardrail_entries,
)

REPORT = Path(__file__).parent.parent / "fixtures" / "field_report.txt"
"""The field report the business template is modelled on, as published."""


def roster(report: str) -> dict[str, str]:
    """Agent name → host, read from the report's architecture lines: "Mac Mini — 5 core agents
    (Jarvis, …)" → mini, "Linux VPS — 9 … (Elon, …)" → vps, and the revenue team, which the
    report places on neither, is on the VPS (with Mission Control)."""
    hosts = {"Mac Mini": "mini", "Linux VPS": "vps", "Revenue team": "vps"}
    found: dict[str, str] = {}
    for line in report.splitlines():
        head, _, rest = line.removeprefix("- ").partition(" — ")
        if head in hosts:
            names = re.search(r"\(([^)]*)\)", rest)
            assert names is not None, line
            found |= {n.strip().lower(): hosts[head] for n in names.group(1).split(",")}
    return found


def support_count(report: str) -> int:
    """How many support agents the report's revenue team has ("… + 4 support")."""
    match = re.search(r"Revenue team — .*\+ (\d+) support", report)
    assert match is not None
    return int(match.group(1))


REPORTED = roster(REPORT.read_text(encoding="utf-8"))
REVENUE = {"vault", "scout", "ledger", "claw", "pulse"}
SUPPORT = {"echo", "reel", "lens", "mint"}
"""The four support agents: the report counts them without naming them; the names are ours."""


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

    def test_roster_matches_the_report(self, fleet: Fleet) -> None:
        """The report's 23 agents, each on the host the report puts it on, plus its support."""
        assert len(REPORTED) == 19
        assert support_count(REPORT.read_text(encoding="utf-8")) == len(SUPPORT)
        placed = {name: a.host for name, a in fleet.agents.items()}
        assert placed == REPORTED | dict.fromkeys(SUPPORT, "vps")
        assert len(fleet.agents) == 23
        assert set(fleet.hosts) == {"mini", "vps"}

    def test_every_agent_has_its_own_role(self, fleet: Fleet) -> None:
        """No two agents share a role (forge is not a second flow); the report's roles hold."""
        roles = [a.role for a in fleet.agents.values()]
        assert len(set(roles)) == len(roles)
        assert fleet.agents["flow"].role == "product-engineer"
        assert fleet.agents["forge"].role != "product-engineer"
        assert fleet.agents["sentinel"].role == "security"
        assert fleet.agents["jarvis"].role == "orchestrator"
        assert fleet.agents["donna"].role == "comms"

    def test_tools_narrowed_to_the_role(self, fleet: Fleet) -> None:
        """No agent keeps the default tool list; sentinel gets health checks and incident
        reports (and its P2 gate), nothing that acts: no recovery, votes, approvals, posts."""
        for name, agent in fleet.agents.items():
            assert agent.allowed_tools != list(BUILTIN_TOOLS), name
        sentinel = set(fleet.agents["sentinel"].allowed_tools)
        assert {"run_check", "report_incident", "confirm_incident"} <= sentinel
        assert not sentinel & {"recover", "vote", "request_approval", "post_to_channel"}
        assert fleet.agents["sentinel"].checks
        for name, agent in fleet.agents.items():
            if "run_check" in agent.allowed_tools:
                assert agent.checks, f"{name} may run checks but has none"
        holders = {n for n, a in fleet.agents.items() if "recover" in a.allowed_tools}
        assert holders == {"gene"}

    def test_donna_surfaces_urgent_items_to_telegram(self, fleet: Fleet) -> None:
        """donna posts to a shared Telegram group: a channel of hers with a key reference and a
        group chat, parked until its token exists, so the fleet starts without it."""
        [room] = [c for c in fleet.channels.values() if c.agent == "donna"]
        assert room.kind == "telegram"
        assert room.token is not None
        assert room.token.startswith("env:")
        assert room.chats
        assert room.chats[0].startswith("-100")  # a supergroup's chat id
        assert room.enabled is False
        assert "post_to_channel" in fleet.agents["donna"].allowed_tools

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
        """jarvis reports to the founder, everyone else up a chain that ends at jarvis."""
        assert fleet.agents["jarvis"].reports_to == "founder"
        assert fleet.agents["forge"].reports_to == "elon"
        assert fleet.agents["flow"].reports_to == "elon"
        assert {fleet.agents[n].reports_to for n in REVENUE - {"vault"}} == {"vault"}
        for name in fleet.agents:
            seen = [name]
            while seen[-1] != "jarvis":
                boss = fleet.agents[seen[-1]].reports_to
                assert boss in fleet.agents, f"{name}: chain {seen} leaves the fleet"
                assert boss not in seen, f"{name}: chain {seen} loops"
                seen.append(boss)

    def test_watchers_never_sleep(self, fleet: Fleet) -> None:
        """Ops and security beat every 30 minutes all day; the others keep active hours."""
        for name, agent in fleet.agents.items():
            if name in {"gene", "sentinel"}:
                assert agent.heartbeat.active_hours is None
                assert agent.heartbeat.interval == "30m"
            else:
                assert agent.heartbeat.active_hours is not None

    def test_revenue_agents_parked(self, fleet: Fleet) -> None:
        """Revenue and support agents beat rarely, cannot run checks or file incidents, and
        each has a mock channel of its own (lesson 4: mock channels before real ones)."""
        mocks = {c.agent for c in fleet.channels.values() if c.kind == "mock"}
        for name in REVENUE | SUPPORT:
            agent = fleet.agents[name]
            assert parse_duration(agent.heartbeat.interval) >= timedelta(hours=4)
            assert "run_check" not in agent.allowed_tools
            assert "report_incident" not in agent.allowed_tools
            assert name in mocks, name
        owned = {c.agent for c in fleet.channels.values() if c.agent is not None}
        assert {c.kind for c in fleet.channels.values() if c.agent in REVENUE | SUPPORT} == {"mock"}
        assert owned == REVENUE | SUPPORT | {"donna"}

    def test_checks_and_cron(self, fleet: Fleet) -> None:
        """gene checks Mission Control over HTTP and TCP; jarvis and atlas have cron jobs."""
        checks = {c.name: c for c in fleet.agents["gene"].checks}
        assert any(c.http == "http://127.0.0.1:8700/healthz" for c in checks.values())
        assert any(c.tcp == "127.0.0.1:8700" for c in checks.values())
        [briefing] = fleet.agents["jarvis"].cron
        assert briefing.schedule == "0 8 * * *"
        assert briefing.session == "isolated"
        assert {j.name for j in fleet.agents["atlas"].cron} == {
            "weekly-trends",
            "weekly-fleet-audit",
        }

    def test_topics(self, fleet: Fleet) -> None:
        """alerts, ops, revenue and all-hands exist; all-hands reaches every agent."""
        assert set(fleet.topics) == {"alerts", "ops", "revenue", "marketing", "all-hands"}
        assert set(fleet.topics["all-hands"].subscribers) == set(fleet.agents)
        assert set(fleet.topics["revenue"].subscribers) >= REVENUE | SUPPORT


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
            assert disabled is (name in REVENUE | SUPPORT), name


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

    def test_systemd_for_the_vps(self, tmp_path: Path) -> None:
        """`mcos systemd generate --host vps` writes Mission Control's and the VPS supervisor's
        units, which `mcos systemd check` passes; an unknown host is refused, naming both."""
        runner = CliRunner()
        made = runner.invoke(app, ["init", str(tmp_path / "biz"), "--template", "business"])
        assert made.exit_code == 0, made.output
        fleet_file = str(tmp_path / "biz" / "fleet.toml")
        units = tmp_path / "units"
        generated = runner.invoke(
            app, ["systemd", "generate", "--host", "vps", "--out", str(units), "-f", fleet_file]
        )
        assert generated.exit_code == 0, generated.output
        names = sorted(p.name for p in units.iterdir())
        assert names == ["mcos-business-server.service", "mcos-business-vps.service"]
        assert "up --host vps" in (units / "mcos-business-vps.service").read_text()
        checked = runner.invoke(app, ["systemd", "check", *(str(units / n) for n in names)])
        assert checked.exit_code == 0, checked.output
        wrong = runner.invoke(
            app, ["systemd", "generate", "--host", "local", "--out", str(units), "-f", fleet_file]
        )
        assert wrong.exit_code != 0
        assert "known: mini, vps" in wrong.output


class TestParkedChannel:
    """A channel with ``enabled = false`` is declared but never opened (donna's Telegram group)."""

    def test_agent_starts_without_its_token(self, fleet: Fleet) -> None:
        """With the bot token unset, config check has nothing to resolve for the parked channel;
        enabling it makes the missing variable the error, naming channel and variable."""
        assert not [u for u in key_uses(fleet) if u.where.startswith("channels.ops-room")]
        enabled = fleet.model_copy(deep=True)
        enabled.channels["ops-room"] = enabled.channels["ops-room"].model_copy(
            update={"enabled": True}
        )
        [broken] = [r for r in resolve_all(enabled, env={}) if r.problem]
        assert broken.use.where == "channels.ops-room.token"
        assert "TELEGRAM_BOT_TOKEN_DONNA is not set" in broken.problem
