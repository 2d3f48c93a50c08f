"""`mcos import openclaw`: an OpenClaw install (tests/fixtures/openclaw, built from OpenClaw's
documented formats) becomes a fleet file and workspaces that pass `mcos config check`; a second
import changes nothing; secrets stay key references; what cannot be mapped is reported."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mcos.cli import app
from mcos.config import check_fleet, load_fleet
from mcos.config.models import Fleet
from mcos.config.openclaw import REPORT_FILE, plan, write
from mcos.exceptions import ConfigError, ConfigErrors

INSTALL = Path(__file__).parent.parent / "fixtures" / "openclaw"
KEYS = {
    "TELEGRAM_BOT_TOKEN": "111:telegram-main",
    "TELEGRAM_OPS_TOKEN": "222:telegram-ops",
    "DISCORD_BOT_TOKEN": "discord-ops",
    "ANTHROPIC_API_KEY_MAIN": "sk-ant-main",
    "ANTHROPIC_API_KEY_OPS": "sk-ant-ops",
}
"""The variables the imported fleet names, as the operator sets them after reading the report."""


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture
def imported(tmp_path: Path) -> Path:
    """The fixture install imported into a fresh folder."""
    out = tmp_path / "fleet"
    write(plan(INSTALL), out)
    return out


class TestRoundTrip:
    """Import, check, import again."""

    def test_config_check_passes(self, imported: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """With the reported variables set, `config check` accepts the imported fleet."""
        for name, value in KEYS.items():
            monkeypatch.setenv(name, value)
        check_fleet(imported / "fleet.toml")

    def test_unset_keys_are_named(self, imported: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without them, `config check` names each missing variable (as the report did)."""
        for name in KEYS:
            monkeypatch.delenv(name, raising=False)
        with pytest.raises(ConfigErrors) as failed:
            check_fleet(imported / "fleet.toml")
        said = str(failed.value)
        assert all(name in said for name in KEYS), said

    def test_import_again_changes_nothing(self, imported: Path) -> None:
        """A second import writes no file and leaves every byte as it was."""
        before = _files(imported)
        assert write(plan(INSTALL), imported) == []
        assert _files(imported) == before

    def test_agent_edits_survive(self, imported: Path) -> None:
        """A workspace file the agent changed since is kept; --force takes OpenClaw's again."""
        memory = imported / "agents" / "ops" / "SOUL.md"
        memory.write_text("# SOUL.md - ops\n\nEdited in mcos.\n")
        assert write(plan(INSTALL), imported) == []
        assert "Edited in mcos" in memory.read_text()
        assert write(plan(INSTALL), imported, force=True) == [memory]
        assert "runbook" in memory.read_text()

    def test_an_edited_fleet_file_is_not_overwritten(self, imported: Path) -> None:
        """An operator's edit to fleet.toml stops the import, unless forced."""
        fleet = imported / "fleet.toml"
        fleet.write_text(fleet.read_text().replace('role = "ops"', 'role = "security"'))
        with pytest.raises(ConfigError, match="edited since the last import"):
            write(plan(INSTALL), imported)
        write(plan(INSTALL), imported, force=True)
        assert 'role = "ops"' in fleet.read_text()


class TestMapping:
    """What OpenClaw's settings become."""

    @pytest.fixture
    def fleet(self, imported: Path, monkeypatch: pytest.MonkeyPatch) -> Fleet:
        for name, value in KEYS.items():
            monkeypatch.setenv(name, value)
        return load_fleet(imported / "fleet.toml")

    def test_agents_models_and_keys(self, fleet: Fleet) -> None:
        """Three agents; model ids carried over; one key variable per agent; an unsupported
        provider (ollama) runs offline; the default agent is the orchestrator."""
        assert set(fleet.agents) == {"main", "ops", "comms"}
        main, ops, comms = (fleet.agents[n] for n in ("main", "ops", "comms"))
        assert (main.model.provider, main.model.id) == ("anthropic", "claude-sonnet-4-5")
        assert (ops.model.provider, ops.model.id) == ("anthropic", "claude-haiku-4-5")
        assert comms.model.provider == "offline"
        assert (main.key, ops.key, comms.key) == (
            "env:ANTHROPIC_API_KEY_MAIN", "env:ANTHROPIC_API_KEY_OPS", None,
        )  # fmt: skip
        assert main.role == "orchestrator"
        assert fleet.fleet.timezone == "Europe/London"

    def test_heartbeats(self, fleet: Fleet) -> None:
        """every and activeHours carried over; OpenClaw's rule that only agents with a heartbeat
        block beat once any has one, and every 0m, both become a daily beat with routines off."""
        ops = fleet.agents["ops"].heartbeat
        assert (ops.interval, ops.active_hours, ops.timezone) == ("1h", "00:00-24:00", "UTC")
        for name in ("main", "comms"):
            beat = fleet.agents[name].heartbeat
            assert (beat.interval, beat.task_interval) == ("24h", "off"), name

    def test_cron(self, fleet: Fleet) -> None:
        """Cron-expression jobs land on their agent with session and time zone; one-shot and
        disabled jobs do not."""
        [brief] = fleet.agents["main"].cron
        assert (brief.name, brief.schedule, brief.session, brief.timezone) == (
            "morning-brief", "0 7 * * *", "isolated", "Europe/London",
        )  # fmt: skip
        assert brief.prompt == "Summarise overnight updates for the founder."
        [disk] = fleet.agents["ops"].cron
        assert (disk.schedule, disk.session) == ("*/30 * * * *", "main")
        assert fleet.agents["comms"].cron == []

    def test_channels_are_key_references(self, fleet: Fleet, imported: Path) -> None:
        """Bindings become channels of their agent; ${VAR} and env SecretRefs become env:
        references; a literal token is never written anywhere, nor an auth profile's key."""
        channels = {n: (c.kind, c.agent, c.token) for n, c in fleet.channels.items()}
        assert channels == {
            "telegram-default": ("telegram", "main", "env:TELEGRAM_BOT_TOKEN"),
            "telegram-ops": ("telegram", "ops", "env:TELEGRAM_OPS_TOKEN"),
            "discord-default": ("discord", "ops", "env:DISCORD_BOT_TOKEN"),
        }
        assert fleet.channels["discord-default"].chats == ["5555"]
        assert fleet.channels["telegram-default"].chats == ["-1001111111111"]
        for data in _files(imported).values():
            assert b"LITERAL-TOKEN" not in data
            assert b"FIXTURE-NEVER-COPIED" not in data

    def test_workspaces_copied(self, imported: Path) -> None:
        """Each workspace's files, daily logs included, under agents/<name>/."""
        assert (imported / "agents" / "main" / "SOUL.md").read_bytes() == (
            INSTALL / "workspace" / "SOUL.md"
        ).read_bytes()
        assert (imported / "agents" / "ops" / "memory" / "2026-03-05.md").is_file()
        assert (imported / "agents" / "comms" / "memory").is_dir()

    def test_report_names_what_was_not_mapped(self, imported: Path) -> None:
        """Each loss is named with what to do: literal secrets, keys to set, unsupported
        channels and providers, fallbacks, one-shot and disabled jobs, peer routing."""
        report = (imported / REPORT_FILE).read_text()
        for expected in (
            "channels.telegram.accounts.ops: a literal secret in openclaw.json, not copied; "
            "set TELEGRAM_OPS_TOKEN",
            "set ANTHROPIC_API_KEY_MAIN",
            "channel 'whatsapp' has no mcos kind",
            "provider 'ollama' not supported",
            "fallback models ['openai/gpt-5-mini'] not mapped",
            "cron job 'Reminder': schedule",
            "cron job 'old-report': disabled",
            "peer/guild routing not mapped",
            "agent 'Comms' is named 'comms' here",
            "agents.list[ops].sandbox: not mapped",
            "openclaw.json: gateway: not mapped",
        ):
            assert expected in report, expected


class TestCli:
    """`mcos import openclaw PATH --out DIR`, as typed."""

    def test_import_twice(self, tmp_path: Path) -> None:
        """The first run lists what it wrote and what it could not map; the second, nothing."""
        runner = CliRunner()
        out = tmp_path / "fleet"
        first = runner.invoke(app, ["import", "openclaw", str(INSTALL), "--out", str(out)])
        assert first.exit_code == 0, first.output
        assert "3 agent(s) imported" in first.output
        assert "not mapped" in first.output
        second = runner.invoke(app, ["import", "openclaw", str(INSTALL), "--out", str(out)])
        assert second.exit_code == 0, second.output
        assert "already up to date" in second.output

    def test_bad_install_is_named(self, tmp_path: Path) -> None:
        """No config, or a config that is not JSON5: exit 78 naming the file."""
        runner = CliRunner()
        missing = runner.invoke(app, ["import", "openclaw", str(tmp_path), "--out", str(tmp_path)])
        assert missing.exit_code == 78
        assert "no OpenClaw config here" in missing.output
        broken = tmp_path / "broken"
        shutil.copytree(INSTALL, broken)
        (broken / "openclaw.json").write_text("{ agents: [ }")
        result = runner.invoke(app, ["import", "openclaw", str(broken), "--out", str(tmp_path)])
        assert result.exit_code == 78
        assert "not JSON5" in result.output
