"""Every ``mcos`` command that prints data prints valid JSON with --json, against a real server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mcos.cli import app
from mcos.client import Calls
from mcos.config.scaffold import init_fleet
from mcos.domain.agent_state import AgentStatus
from tests.api.conftest import LiveServer, serve_on

runner = CliRunner()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server for the module: the commands only read, or write what no other test reads."""
    with serve_on("sqlite", tmp_path_factory.mktemp("cli-json")) as (server, _):
        yield server


def _json(live: LiveServer, *args: str, token: str | None = None, code: int = 0) -> Any:
    env = {"MCOS_URL": live.url, "MCOS_TOKEN": token or live.operator_token}
    result = runner.invoke(app, [*args, "--json"], env=env)
    assert result.exit_code == code, result.output
    return json.loads(result.stdout)


def test_reads_and_writes_print_json(live: LiveServer) -> None:
    """send, thread, inbox, status, tokens, audit, pages, dead letters, incidents, approvals,
    agent resume: each --json output parses and holds what was asked for."""
    sent = _json(live, "send", "gene", "disk at 91%", "--subject", "disk",
                 token=live.tokens["jarvis"])  # fmt: skip
    thread = sent["message"]["thread_id"]
    assert [m["body"] for m in _json(live, "thread", str(thread))] == ["disk at 91%"]
    waited = _json(live, "thread", str(thread), "--wait", "1", "--until", "2", code=1)
    assert len(waited) == 1  # still valid JSON when the wait runs out
    box = _json(live, "inbox", token=live.tokens["gene"])
    assert [d["message"]["subject"] for d in box["deliveries"]] == ["disk"]
    status = _json(live, "status")
    assert {a["name"] for a in status["agents"]} >= {"jarvis", "gene"}
    assert status["health"]["status"] == "ok"
    created = _json(live, "token", "create", "--agent", "sentinel", "--label", "json")
    assert created["token"].startswith("mcos_")
    listed = _json(live, "token", "list", "--name", "sentinel")
    assert created["record"]["id"] in {t["id"] for t in listed}
    rotated = _json(live, "token", "rotate", str(created["record"]["id"]))
    revoked = _json(live, "token", "revoke", str(rotated["record"]["id"]))
    assert revoked["revoked_at"] is not None
    assert _json(live, "audit", "verify")["intact"] is True
    assert any(r["action"] == "token.create" for r in _json(live, "audit", "list"))
    assert isinstance(_json(live, "audit", "export"), list)
    assert _json(live, "pages", "list") == []
    assert _json(live, "dead-letters", "list") == []
    assert _json(live, "incidents", "list") == []
    assert _json(live, "approvals", "list") == []
    with live.client() as op:
        op.do(Calls.report_state("gene", AgentStatus.PAUSED, "ping-pong"))
    assert _json(live, "agent", "resume", "gene")["state"] == "idle"


def test_local_commands_print_json(tmp_path: Path) -> None:
    """init, config check, db upgrade and the systemd commands, no server needed."""
    made = _local("init", str(tmp_path / "f"))
    fleet = made["fleet"]
    assert _local("config", "check", "-f", fleet)["ok"] is True
    assert _local("db", "upgrade", "-f", fleet)["applied"]
    assert _local("db", "upgrade", "-f", fleet)["applied"] == []
    units = _local("systemd", "generate", "--host", "local", "--out", str(tmp_path / "u"),
                   "-f", fleet)["written"]  # fmt: skip
    checked = _local("systemd", "check", *units)
    assert checked == {"files": len(units), "problems": []}
    assert Path(fleet) == init_fleet(tmp_path / "f", force=True)


def _local(*args: str) -> Any:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)
