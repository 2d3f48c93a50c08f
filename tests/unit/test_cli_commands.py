"""The ``mcos`` command as a newcomer meets it: its version, true help, --json everywhere data is
printed, a server's recorded address, logs and a mock channel's posts with their buttons."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest
import typer
from typer.testing import CliRunner

import mcos
from mcos.cli import app, common, endpoint, run
from mcos.config import load_fleet
from mcos.config.scaffold import init_fleet

runner = CliRunner()

# Commands that print no data of their own: long-running processes and the export that has
# --format (it takes --json too, as a synonym of --format json).
WITHOUT_JSON = {
    "server",
    "run",
    "up",
    "agent run",
    "m365 login",
    "launchd exec",
}  # long-running or interactive


def _commands(group: Any, prefix: str = "") -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name, command in group.commands.items():
        path = f"{prefix}{name}"
        if hasattr(command, "commands"):
            found |= _commands(command, f"{path} ")
        else:
            found[path] = command
    return found


COMMANDS = _commands(typer.main.get_group(app))


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    """A small fleet written by `mcos init`, with a mock channel added."""
    path = init_fleet(tmp_path / "fleet")
    path.write_text(path.read_text() + '\n[channels.lobby]\nkind = "mock"\n')
    return path


class TestTheCommand:
    """What `mcos` itself answers."""

    def test_version(self) -> None:
        """`mcos --version` prints the package's version and exits 0."""
        result = runner.invoke(app, ["--version"])
        assert result.exit_code == 0
        assert result.output.strip() == f"mcos {mcos.__version__}"

    def test_every_command_that_prints_data_takes_json(self) -> None:
        """Each command but the long-running ones has --json; a new command must too."""
        assert len(COMMANDS) > 30
        missing = {
            name
            for name, command in COMMANDS.items()
            if not any("--json" in p.opts for p in command.params)
        }
        assert missing == WITHOUT_JSON

    def test_fleet_help_says_how_the_default_is_found(self) -> None:
        """--fleet's help names $MCOS_FLEET, ./fleet.toml and the demo's mcos-demo/fleet.toml,
        the order `fleet_path` follows."""
        result = runner.invoke(app, ["status", "--help"], env={"COLUMNS": "300"})
        assert "$MCOS_FLEET, else ./fleet.toml, else ./mcos-demo/fleet.toml" in result.output

    def test_the_default_fleet_is_the_demos_when_there_is_no_other(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """In a folder with mcos-demo/fleet.toml only, that is the fleet; ./fleet.toml wins."""
        monkeypatch.chdir(tmp_path)
        monkeypatch.delenv("MCOS_FLEET", raising=False)
        (tmp_path / "mcos-demo").mkdir()
        (tmp_path / "mcos-demo" / "fleet.toml").touch()
        assert common.fleet_path(None) == Path("mcos-demo/fleet.toml")
        (tmp_path / "fleet.toml").touch()
        assert common.fleet_path(None) == Path("fleet.toml")

    def test_the_run_banner_prints_a_command_that_runs(self, fleet: Path) -> None:
        """The banner's `… status` line names an mcos that exists as printed (the virtualenv's
        when it is not on PATH) and the fleet file when it is not the default."""
        banner = run.banner(load_fleet(fleet), fleet.parent / "state" / "logs")
        line = banner.splitlines()[-1]
        command = line.split(": ", 1)[1].split(" · ")[0]
        argv = command.split()
        assert argv[1:3] == ["status", "-f"]
        assert Path(argv[3]).absolute() == fleet.absolute()
        mcos_path = argv[0]
        if mcos_path != "mcos":
            assert Path(mcos_path).exists(), mcos_path
        version = subprocess.run(
            [mcos_path, "--version"], capture_output=True, text=True, check=True, timeout=60
        )
        assert version.stdout.strip() == f"mcos {mcos.__version__}"


class TestServerAddress:
    """`mcos server` records where it listens; the CLI goes there."""

    def test_a_live_record_wins_over_the_fleet_file(self, fleet: Path) -> None:
        """While recorded by a live process the server's URL is the record's; after, the
        fleet file's again."""
        loaded = load_fleet(fleet)
        with endpoint.recorded(loaded, "0.0.0.0", 8799) as path:
            assert json.loads(path.read_text())["pid"] == os.getpid()
            assert endpoint.server_url(loaded) == "http://127.0.0.1:8799"
        assert not path.exists()
        assert endpoint.server_url(loaded) == loaded.server.url

    def test_a_dead_servers_record_is_ignored(self, fleet: Path) -> None:
        """A record left by a process that is gone (killed) does not send the CLI astray."""
        loaded = load_fleet(fleet)
        pid = "import os; print(os.getpid())"
        gone = subprocess.run(
            [sys.executable, "-c", pid], capture_output=True, text=True, check=True
        ).stdout.strip()
        record = {"url": "http://127.0.0.1:1", "pid": int(gone)}
        endpoint.address_file(loaded).parent.mkdir(parents=True)
        endpoint.address_file(loaded).write_text(json.dumps(record))
        assert endpoint.server_url(loaded) == loaded.server.url

    def test_ipv6_and_named_hosts(self) -> None:
        """Bind addresses become URLs a client can use."""
        assert endpoint.connect_url("::", 8700) == "http://[::1]:8700"
        assert endpoint.connect_url("::1", 8700) == "http://[::1]:8700"
        assert endpoint.connect_url("mc.internal", 80) == "http://mc.internal:80"


class TestLogs:
    """`mcos logs NAME`: structured lines laid out, plain lines as written, --json raw."""

    LINES: ClassVar[list[str]] = [
        "2026-12-03 03:18:30,166 INFO jarvis: jarvis: clock offset 0.137s",
        json.dumps(
            {
                "timestamp": "2026-12-03T03:20:00.5Z",
                "level": "info",
                "event": "turn.end",
                "logger": "mcos.runtime",
                "agent": "jarvis",
                "cost_usd": 0.01,
                "tools": ["send"],
            }
        ),
        "{not json",
    ]

    def _write(self, fleet: Path) -> None:
        logs = load_fleet(fleet).state_dir / "logs"
        logs.mkdir(parents=True)
        (logs / "jarvis.log").write_text("\n".join(self.LINES) + "\n")

    def test_pretty(self, fleet: Path) -> None:
        """A JSON line shows time, level, agent, event and the other keys; others pass."""
        self._write(fleet)
        result = runner.invoke(app, ["logs", "jarvis", "--fleet", str(fleet)])
        assert result.exit_code == 0, result.output
        out = result.output.splitlines()
        assert out[0] == self.LINES[0]
        assert out[1] == (
            '2026-12-03 03:20:00 INFO    jarvis: turn.end cost_usd=0.01 tools=["send"]'
        )
        assert out[2] == "{not json"

    def test_json_and_last_lines(self, fleet: Path) -> None:
        """--json prints one object a line: the log's own, or the plain line wrapped; -n 2
        the last two lines."""
        self._write(fleet)
        result = runner.invoke(app, ["logs", "jarvis", "--json", "-n", "2", "--fleet", str(fleet)])
        assert result.exit_code == 0, result.output
        objects = [json.loads(line) for line in result.output.splitlines()]
        assert objects == [json.loads(self.LINES[1]), {"event": "{not json", "plain": True}]

    def test_unknown_and_missing(self, fleet: Path) -> None:
        """An unknown name lists the known ones; a known agent without a log says so."""
        self._write(fleet)
        unknown = runner.invoke(app, ["logs", "nobody", "--fleet", str(fleet)])
        assert unknown.exit_code == 1
        assert "no log 'nobody'" in unknown.output
        assert "jarvis, sentinel, server, supervisor" in unknown.output.replace("\n", " ")
        missing = runner.invoke(app, ["logs", "gene", "--fleet", str(fleet)])
        assert missing.exit_code == 1
        assert "no log yet" in missing.output


class TestChannelTail:
    """`mcos channel tail`: posts with their buttons and how to press one; --json."""

    POST: ClassVar[dict[str, Any]] = {
        "at": "2026-12-03T03:42:54.946589+00:00",
        "to": "founder",
        "subject": "hot lead",
        "text": "[URGENT] from vault: hot lead\n\nA buyer wants a call today",
        "buttons": [["Acknowledge", "ack:1"], ["Approve", "approve:2"]],
    }

    def _post(self, fleet: Path) -> Path:
        outbox = load_fleet(fleet).channel_path("lobby") / "outbox"
        outbox.mkdir(parents=True)
        (outbox / "posts.jsonl").write_text(json.dumps(self.POST) + "\n")
        return outbox.parent / "inbox"

    def test_buttons(self, fleet: Path) -> None:
        """Each button's label and data, and a command that presses one as the paged human."""
        self._post(fleet)
        result = runner.invoke(app, ["channel", "tail", "lobby", "-f", str(fleet)])
        assert result.exit_code == 0, result.output
        assert "2026-12-03T03:42:54 → founder: [URGENT] from vault: hot lead" in result.output
        assert "[hot lead]" not in result.output  # the subject is in the text already
        assert "buttons: [Acknowledge] ack:1 · [Approve] approve:2" in result.output
        assert "press one as founder: printf 'From: founder\\nack:1\\n' > " in result.output

    def test_json(self, fleet: Path) -> None:
        """--json prints each post as stored, one line each."""
        self._post(fleet)
        result = runner.invoke(app, ["channel", "tail", "lobby", "--json", "-f", str(fleet)])
        assert result.exit_code == 0, result.output
        assert [json.loads(x) for x in result.output.splitlines()] == [self.POST]

    def test_wait_for_a_first_post(self, fleet: Path) -> None:
        """--wait ends with exit 1 and a line saying so when nothing was posted."""
        result = runner.invoke(app, ["channel", "tail", "lobby", "--wait", "1", "-f", str(fleet)])
        assert result.exit_code == 1
        assert "nothing posted to lobby after 1s" in result.output

    def test_a_pressed_button_is_read_by_the_mock_channel(self, fleet: Path) -> None:
        """The printed press, run in a shell, is the file the mock channel reads as that
        human's press of that button."""
        import asyncio

        from mcos.channels.mock import MockChannel

        inbox = self._post(fleet)
        result = runner.invoke(app, ["channel", "tail", "lobby", "-f", str(fleet)])
        press = next(x for x in result.output.splitlines() if "press one" in x)
        command = press.split(": ", 1)[1]
        channel = MockChannel("lobby", load_fleet(fleet).channel_path("lobby"))  # makes inbox/
        subprocess.run(["sh", "-c", command], check=True, cwd=Path.cwd())
        got = []

        async def deliver(item: object) -> None:
            got.append(item)

        asyncio.run(channel.receive_once(deliver))
        [item] = got
        assert (item.sender, item.action) == ("founder", "ack:1")  # type: ignore[attr-defined]
        assert inbox.is_dir()
