"""The fleet file: valid files load; every problem is named with file, key path and cause."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcos.config import check_fleet, load_fleet, parse_duration
from mcos.config.scaffold import init_fleet
from mcos.config.secrets import GATEWAY_NOTE
from mcos.exceptions import ConfigError, ConfigErrors

BASE = """
[hosts.mini]
[hosts.vps]
[humans.founder]
role = "founder"
[agents.jarvis]
role = "orchestrator"
host = "mini"
reports_to = "founder"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fleet.toml"
    path.write_text(text)
    return path


def messages(path: Path) -> list[str]:
    with pytest.raises(ConfigErrors) as err:
        load_fleet(path)
    return [e.message for e in err.value.errors]


class TestLoad:
    """Valid fleet files load with paths resolved."""

    def test_minimal(self, tmp_path: Path) -> None:
        """A small fleet loads; the SQLite store path is made absolute against the file."""
        fleet = load_fleet(write(tmp_path, BASE))
        assert fleet.agents["jarvis"].role == "orchestrator"
        assert fleet.store_url == f"sqlite:///{tmp_path.resolve()}/state/mcos.db"
        assert fleet.workspace_path("jarvis") == (tmp_path / "agents" / "jarvis").resolve()
        # Only warnings: with no security agent, P2 reports and revocation requests wait for
        # one (and expire); nothing else can dead-end.
        assert len(fleet.warnings) == 2
        assert "a P2 incident could never be decided yet" in fleet.warnings[0]
        assert "a request for revoke_token could never be decided yet" in fleet.warnings[1]

    def test_no_founder_warns(self, tmp_path: Path) -> None:
        """A fleet without a founder loads with a warning."""
        fleet = load_fleet(write(tmp_path, BASE.replace('role = "founder"', 'role = "ops"')))
        assert any("no human has role 'founder'" in w for w in fleet.warnings)


class TestErrors:
    """Problems are named precisely, all at once, never as a traceback."""

    def test_unknown_host(self, tmp_path: Path) -> None:
        """The issue's example message, exactly."""
        text = BASE + '[agents.donna]\nrole = "comms"\nhost = "vps2"\n'
        assert messages(write(tmp_path, text)) == [
            f"{tmp_path / 'fleet.toml'}: agents.donna.host: unknown host 'vps2' (known: mini, vps)"
        ]

    def test_many_problems_at_once(self, tmp_path: Path) -> None:
        """Several problems are reported together."""
        text = BASE + '[agents.x]\nrole = "ops"\nhost = "nowhere"\nreports_to = "ghost"\n'
        found = messages(write(tmp_path, text))
        assert any("agents.x.host" in m for m in found)
        assert any("agents.x.reports_to: unknown agent or human 'ghost'" in m for m in found)

    def test_unknown_key(self, tmp_path: Path) -> None:
        """A misspelt key is named with the keys allowed there."""
        found = messages(write(tmp_path, BASE + 'hots = "x"\n'))
        assert "agents.jarvis.hots: unknown key (allowed:" in found[0]
        assert "host" in found[0]

    def test_bad_cron_missed_policy(self, tmp_path: Path) -> None:
        """A cron job's ``missed`` must be run-once or skip; the error names the job's key."""
        job = '[[agents.jarvis.cron]]\nname = "r"\nschedule = "0 9 * * *"\nprompt = "x"\n'
        found = messages(write(tmp_path, BASE + job + 'missed = "twice"\n'))
        assert found == [
            f"{tmp_path / 'fleet.toml'}: agents.jarvis.cron.0.missed: "
            "'twice' is not one of run-once or skip"
        ]
        fleet = load_fleet(write(tmp_path, BASE + job + 'missed = "skip"\n'))
        assert fleet.agents["jarvis"].cron[0].missed == "skip"
        assert load_fleet(write(tmp_path, BASE + job)).agents["jarvis"].cron[0].missed == (
            "run-once"
        )

    def test_bad_provider(self, tmp_path: Path) -> None:
        """An unknown model provider lists the known ones."""
        found = messages(write(tmp_path, BASE + 'model = { provider = "gpt" }\n'))
        assert "agents.jarvis.model.provider: 'gpt' is not one of" in found[0]
        assert "anthropic" in found[0]

    def test_inline_secret_not_echoed(self, tmp_path: Path) -> None:
        """A key put inline is refused and the secret is not repeated in the error."""
        secret = "sk-ant-api03-verysecretvalue"
        text = BASE + f'model = {{ provider = "anthropic", id = "m" }}\nkey = "{secret}"\n'
        found = messages(write(tmp_path, text))
        assert any("agents.jarvis.key" in m and "reference" in m for m in found)
        assert all(secret not in m for m in found)

    def test_missing_key_reference(self, tmp_path: Path) -> None:
        """A hosted model without a key reference is refused."""
        found = messages(write(tmp_path, BASE + 'model = { provider = "anthropic", id = "m" }\n'))
        assert any("agents.jarvis.key: missing" in m for m in found)

    def test_duplicate_names_across_kinds(self, tmp_path: Path) -> None:
        """A topic may not share a name with an agent."""
        found = messages(write(tmp_path, BASE + "[topics.jarvis]\n"))
        assert any("topics.jarvis" in m and "already used by a agent" in m for m in found)

    def test_reporting_cycle(self, tmp_path: Path) -> None:
        """A reports_to cycle is refused, showing the cycle."""
        text = (
            BASE.replace('reports_to = "founder"', 'reports_to = "gene"')
            + '[agents.gene]\nrole = "ops"\nhost = "mini"\nreports_to = "jarvis"\n'
        )
        found = messages(write(tmp_path, text))
        assert any("reporting cycle: jarvis → gene → jarvis" in m for m in found)

    def test_toml_syntax(self, tmp_path: Path) -> None:
        """Broken TOML names the line."""
        found = messages(write(tmp_path, BASE + "[agents.x\n"))
        assert "not valid TOML" in found[0]
        assert "line" in found[0]

    def test_missing_file(self, tmp_path: Path) -> None:
        """A missing file says how to make one."""
        found = messages(tmp_path / "nope.toml")
        assert "mcos init" in found[0]

    def test_bad_duration(self, tmp_path: Path) -> None:
        """A heartbeat interval that is not a duration is named."""
        found = messages(write(tmp_path, BASE + 'heartbeat = { interval = "soon" }\n'))
        assert "agents.jarvis.heartbeat.interval" in found[0]
        assert "not a duration" in found[0]


class TestDuration:
    """Durations like 90s, 30m, 1h30m."""

    @given(st.integers(0, 48), st.integers(0, 59), st.integers(0, 59))
    def test_round_trip(self, h: int, m: int, s: int) -> None:
        """Formatting hours, minutes and seconds parses back to the same span."""
        if h == m == s == 0:
            return
        text = (f"{h}h" if h else "") + (f"{m}m" if m else "") + (f"{s}s" if s else "")
        assert parse_duration(text) == timedelta(hours=h, minutes=m, seconds=s)

    @pytest.mark.parametrize("text", ["", "0s", "5", "1d", "m5", "-1m"])
    def test_refused(self, text: str) -> None:
        """Non-durations and zero are refused."""
        with pytest.raises(ValueError, match=r"duration|zero"):
            parse_duration(text)


class TestScaffold:
    """`mcos init` writes a fleet that loads, with workspaces."""

    def test_small_fleet(self, tmp_path: Path) -> None:
        """The small template loads without warnings and has each agent's workspace files."""
        path = init_fleet(tmp_path / "demo")
        fleet = load_fleet(path)
        assert {a.role for a in fleet.agents.values()} == {"orchestrator", "ops", "security"}
        assert fleet.warnings == []
        for name in fleet.agents:
            ws = fleet.workspace_path(name)
            for f in ("SOUL.md", "USER.md", "AGENTS.md", "GUARDRAILS.md", "HEARTBEAT.md"):
                assert (ws / f).read_text().strip()
            assert (ws / "memory").is_dir()
            assert name in (ws / "SOUL.md").read_text()

    def test_refuses_overwrite(self, tmp_path: Path) -> None:
        """An existing fleet file is not overwritten without --force."""
        init_fleet(tmp_path)
        with pytest.raises(ConfigError, match="already exists"):
            init_fleet(tmp_path)
        init_fleet(tmp_path, force=True)


CLAUDE = 'model = { provider = "anthropic", id = "claude-sonnet-4-6" }'
TWO = (
    BASE
    + f'{CLAUDE}\nkey = "env:MCOS_TEST_KEY_A"\n'
    + f'[agents.gene]\nrole = "ops"\nhost = "mini"\n{CLAUDE}\nkey = "env:MCOS_TEST_KEY_B"\n'
)


def checked(path: Path) -> list[str]:
    with pytest.raises(ConfigErrors) as err:
        check_fleet(path)
    return [e.message for e in err.value.errors]


class TestConfigCheck:
    """`mcos config check` judges every key reference as `mcos doctor` does, refuses one key
    shared by two agents unless each says so, and keeps paths inside the fleet folder."""

    def test_key_references_resolve_like_doctor(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Before: 'ok' for an empty variable, a literal ${ANTHROPIC_KEY} and an unset one."""
        monkeypatch.setenv("MCOS_TEST_KEY_A", "")
        monkeypatch.setenv("MCOS_TEST_KEY_B", "${ANTHROPIC_KEY}")
        monkeypatch.delenv("MCOS_TEST_TG_UNSET", raising=False)
        path = write(
            tmp_path,
            TWO + '[channels.tg]\nkind = "telegram"\nagent = "gene"\n'
            'token = "env:MCOS_TEST_TG_UNSET"\n',
        )
        assert checked(path) == [
            f"{path}: agents.gene.key: agent gene: env:MCOS_TEST_KEY_B holds an unexpanded "
            f"variable (${{ANTHROPIC_KEY}}), not a key{GATEWAY_NOTE}",
            f"{path}: agents.jarvis.key: agent jarvis: env:MCOS_TEST_KEY_A is empty{GATEWAY_NOTE}",
            f"{path}: channels.tg.token: channel tg: env:MCOS_TEST_TG_UNSET: the variable "
            "MCOS_TEST_TG_UNSET is not set",
        ]
        monkeypatch.setenv("MCOS_TEST_KEY_A", "sk-ant-a-0123456789")
        monkeypatch.setenv("MCOS_TEST_KEY_B", "sk-ant-b-0123456789")
        monkeypatch.setenv("MCOS_TEST_TG_UNSET", "123:ABC")
        assert isinstance(check_fleet(path), list)

    def test_two_agents_on_one_key_are_refused_unless_both_say_shared(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Before: two agents on env:MCOS_TEST_KEY_A passed. One reference, or two references
        holding one key: refused, naming both; shared_key = true on each: a warning."""
        monkeypatch.setenv("MCOS_TEST_KEY_A", "sk-ant-same-0123456789")
        monkeypatch.setenv("MCOS_TEST_KEY_B", "sk-ant-same-0123456789")
        one = write(tmp_path, TWO.replace("MCOS_TEST_KEY_B", "MCOS_TEST_KEY_A"))
        assert messages(one) == [
            f"{one}: agents.gene.key: the key reference env:MCOS_TEST_KEY_A is also the key of "
            "jarvis: one key per agent, so that one can be revoked alone (or write "
            "shared_key = true on each of them)",
            f"{one}: agents.jarvis.key: the key reference env:MCOS_TEST_KEY_A is also the key "
            "of gene: one key per agent, so that one can be revoked alone (or write "
            "shared_key = true on each of them)",
        ]
        two = write(tmp_path, TWO)
        assert load_fleet(two)  # the file alone cannot tell
        assert checked(two)[0].split(": ", 2)[1:] == [
            "agents.gene.key",
            "the key behind env:MCOS_TEST_KEY_A and env:MCOS_TEST_KEY_B is also the key of "
            "jarvis: one key per agent, so that one can be revoked alone (or write "
            "shared_key = true on each of them)",
        ]
        marked = write(tmp_path, TWO.replace("key = ", "shared_key = true\nkey = "))
        assert any("share the key behind" in w for w in check_fleet(marked))

    def test_paths_stay_in_the_fleet_folder(self, tmp_path: Path) -> None:
        """Before: workspace = '../../../../etc' and a mock channel at /etc loaded."""
        text = (
            BASE.replace('host = "mini"\n', 'host = "mini"\nworkspace = "../../../../etc"\n', 1)
            + '[channels.notes]\nkind = "mock"\nagent = "jarvis"\npath = "/etc"\n'
        )
        path = write(tmp_path, text)
        problems = messages(path)
        outside = (tmp_path / "../../../../etc").resolve()  # /etc, or near it under xdist
        assert (
            f"{path}: agents.jarvis.workspace: '../../../../etc' resolves to {outside},"
            in (problems[0])
        )
        assert "outside the fleet folder" in problems[0]
        assert f"{path}: channels.notes.path: '/etc' resolves to /etc" in problems[1]
        allowed = f'[fleet]\nallow_paths = ["/etc", "{outside}"]\n'
        assert load_fleet(write(tmp_path, allowed + text))
        store = '[server]\nstore = "sqlite:////var/lib/elsewhere/mcos.db?synchronous=normal"\n'
        assert (
            "server.store: 'sqlite:////var/lib/elsewhere/mcos.db"
            in messages(write(tmp_path, store + BASE))[0]
        )

    def test_a_symlink_out_of_the_folder_is_followed(self, tmp_path: Path) -> None:
        """The default workspace agents/jarvis, a symlink to /etc, is outside all the same; a
        workspace holding the state folder is refused; allow_paths must be absolute."""
        (tmp_path / "agents").mkdir()
        (tmp_path / "agents" / "jarvis").symlink_to("/etc")
        path = write(tmp_path, BASE)
        assert "agents.jarvis.workspace: 'agents/jarvis' resolves to /etc" in messages(path)[0]
        (tmp_path / "agents" / "jarvis").unlink()
        text = BASE.replace('host = "mini"\n', 'host = "mini"\nworkspace = "."\n', 1)
        assert "holds the state folder" in messages(write(tmp_path, text))[0]
        relative = '[fleet]\nallow_paths = ["srv"]\n' + BASE
        assert messages(write(tmp_path, relative)) == [
            f"{tmp_path / 'fleet.toml'}: fleet.allow_paths.0: 'srv' is not an absolute path"
        ]
