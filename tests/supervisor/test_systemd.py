"""Generated unit files pass `systemd-analyze verify` and our lint; the lint catches what
verify lets through; sd_notify reaches a real socket."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from mcos.config import load_fleet
from mcos.config.scaffold import init_fleet
from mcos.supervisor.systemd import Notifier, check, generate
from tests.conftest import IN_CI

BAD_UNIT = """[Unit]
Description=an agent gateway as found in the field

[Service]
Type=simple
ExecStart=/bin/true
KillMode=process
Environment=TELEGRAM_TOKEN=
Environment="ANTHROPIC_API_KEY=sk-ant-live"

[Install]
WantedBy=multi-user.target
"""


def _verify(*files: Path) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        if IN_CI:
            pytest.fail("systemd-analyze is missing (make system-deps installs it)")
        pytest.skip("systemd-analyze is not installed")
    return subprocess.run(
        [tool, "verify", *map(str, files)], capture_output=True, text=True, check=False
    )


@pytest.fixture
def units(tmp_path: Path) -> list[Path]:
    path = init_fleet(tmp_path / "fleet", template="small")
    offline = 'model = { provider = "offline", id = "offline-1", context_window = 200000 }'
    claude = 'model = { provider = "anthropic", id = "claude-sonnet-4-6" }'
    text = path.read_text().replace(
        f'[agents.jarvis]\nrole = "orchestrator"\n{offline}',
        f'[agents.jarvis]\nrole = "orchestrator"\n{claude}\nkey = "credential:jarvis-anthropic"',
    )
    path.write_text(text)
    out = []
    for unit in generate(load_fleet(path), "local"):
        target = tmp_path / unit.name
        target.write_text(unit.text)
        out.append(target)
    return out


def test_generated_units_verify_clean_and_pass_the_lint(units: list[Path]) -> None:
    result = _verify(*units)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert [f for u in units for f in check(u)] == []
    supervisor = next(u for u in units if not u.name.endswith("-server.service")).read_text()
    for line in (
        "KillMode=control-group",
        "Restart=on-failure",
        "RestartPreventExitStatus=78",
        "Type=notify",
        "WatchdogSec=30",
        "StartLimitBurst=5",
    ):
        assert line in supervisor
    assert "Environment=" not in supervisor
    # jarvis calls its model through Mission Control: the key is Mission Control's to load.
    server = next(u for u in units if u.name.endswith("-server.service")).read_text()
    credential = "LoadCredential=jarvis-anthropic:/etc/mcos/credentials/demo/jarvis-anthropic"
    assert credential in server
    assert credential not in supervisor


def test_the_lint_catches_what_verify_lets_pass(tmp_path: Path) -> None:
    bad = tmp_path / "gateway.service"
    bad.write_text(BAD_UNIT)
    assert _verify(bad).returncode == 0  # systemd itself accepts it
    problems = [f.describe() for f in check(bad)]
    assert any("KillMode=process leaves child processes alive" in p for p in problems)
    assert any("sets TELEGRAM_TOKEN to an empty value" in p for p in problems)
    assert any("carries the secret ANTHROPIC_API_KEY" in p for p in problems)
    assert any("no restart policy" in p for p in problems)
    assert all(p.startswith(f"{bad}:") for p in problems)
    assert "sk-ant-live" not in "\n".join(problems)


def test_sd_notify_reaches_the_socket(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        server.settimeout(2)
        notifier = Notifier(str(path), watchdog_usec=2_000_000)
        notifier.ready()
        notifier.watchdog()
        notifier.watchdog()  # within half the period: not sent again
        assert server.recv(64) == b"READY=1"
        assert server.recv(64) == b"WATCHDOG=1"
        server.settimeout(0.2)
        with pytest.raises(TimeoutError):
            server.recv(64)
    Notifier(None, None).ready()  # outside systemd: nothing happens
