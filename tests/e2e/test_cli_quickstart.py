"""The CLI as a user drives it: init, server, tokens, send, inbox, status, audit."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from mcos.client import Calls, Client
from tests.api.conftest import free_port
from tests.e2e.cli_helpers import ServerProcess, mcos, mcos_json, start_server
from tests.store.conftest import create_pg_database, drop_pg_database


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fleet(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """A fleet made by `mcos init`, its store on SQLite or on a fresh PostgreSQL database."""
    directory = tmp_path / "fleet"
    mcos("init", str(directory))
    path = directory / "fleet.toml"
    port = free_port()
    text = re.sub(
        r'url = "http://127\.0\.0\.1:\d+"', f'url = "http://127.0.0.1:{port}"', path.read_text()
    )
    pg_url = None
    if request.param == "postgres":
        pg_url = create_pg_database()
        text = re.sub(r'store = "[^"]*"', f'store = "{pg_url}"', text)
    path.write_text(text)
    yield path
    if pg_url:
        drop_pg_database(pg_url)


@pytest.fixture
def server(fleet: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    """`mcos server` running on the fleet."""
    url_line = next(x for x in fleet.read_text().splitlines() if x.startswith("url"))
    port = int(url_line.rsplit(":", 1)[1].strip('"'))
    s = start_server(fleet, port, tmp_path / "server.log")
    yield s
    s.stop()


class TestQuickstart:
    """Two agents exchange a message through the CLI and a real server process."""

    def test_message_between_two_agents(self, fleet: Path, server: ServerProcess) -> None:
        """gene sends to jarvis with the CLI; jarvis's inbox shows it; the audit log verifies."""
        env = {"MCOS_FLEET": str(fleet)}
        gene = mcos_json("token", "create", "--agent", "gene", env=env)["token"]
        jarvis = mcos_json("token", "create", "--agent", "jarvis", env=env)["token"]
        sent = mcos(
            "send",
            "jarvis",
            "disk at 91%",
            "--subject",
            "disk",
            "--kind",
            "alert",
            env={**env, "MCOS_TOKEN": gene},
        )
        assert "sent: message" in sent.stdout
        box = mcos_json("inbox", "--wait", "2", env={**env, "MCOS_TOKEN": jarvis})
        [delivery] = box["deliveries"]
        assert delivery["message"]["sender"] == "gene"
        assert delivery["message"]["body"] == "disk at 91%"
        again = mcos_json("inbox", env={**env, "MCOS_TOKEN": jarvis})
        assert again["deliveries"] == []
        status = mcos("status", env=env).stdout
        assert "jarvis" in status
        assert "orchestrator" in status
        assert "intact" in mcos("audit", "verify", env=env).stdout

    def test_send_is_idempotent_with_key(self, fleet: Path, server: ServerProcess) -> None:
        """Resending with the same --key stores nothing new."""
        env = {"MCOS_FLEET": str(fleet)}
        gene = mcos_json("token", "create", "--agent", "gene", env=env)["token"]
        agent_env = {**env, "MCOS_TOKEN": gene}
        first = mcos_json("send", "jarvis", "x", "--key", "abc", env=agent_env)
        second = mcos_json("send", "jarvis", "x", "--key", "abc", env=agent_env)
        assert first["message"]["id"] == second["message"]["id"]
        assert second["created"] is False

    def test_errors_are_clear(self, fleet: Path, server: ServerProcess) -> None:
        """Unknown recipient, bad token and an unreachable server each get one clear line."""
        env = {"MCOS_FLEET": str(fleet)}
        gene = mcos_json("token", "create", "--agent", "gene", env=env)["token"]
        unknown = mcos("send", "nobody", "x", env={**env, "MCOS_TOKEN": gene}, check=False)
        assert unknown.returncode == 1
        assert "unknown recipient 'nobody'" in unknown.stderr
        assert "Traceback" not in unknown.stderr
        bad = mcos("inbox", env={**env, "MCOS_TOKEN": "mcos_aaaaaaaaaaaa_" + "x" * 43}, check=False)
        assert bad.returncode == 1
        assert "not valid" in bad.stderr
        down = mcos("status", "--url", "http://127.0.0.1:9", env=env, check=False)
        assert down.returncode == 69
        assert "did not answer" in down.stderr


class TestServerAddress:
    """`mcos server --port P` and the CLI agree without extra flags."""

    def test_status_finds_a_server_on_another_port(self, fleet: Path, tmp_path: Path) -> None:
        """A server started on a port other than the fleet file's is found by `mcos status`
        through STATE/server.json; once it stopped, the CLI falls back to the fleet's URL."""
        env = {"MCOS_FLEET": str(fleet)}
        port = free_port()
        s = start_server(fleet, port, tmp_path / "other.log")
        try:
            status = mcos_json("status", env=env)
            assert status["health"]["status"] == "ok"
            shown = mcos("status", env=env).stdout
            assert f"Mission Control http://127.0.0.1:{port}: ok" in shown
        finally:
            s.stop()
        assert not (fleet.parent / "state" / "server.json").exists()
        down = mcos("status", env=env, check=False)
        assert down.returncode == 69
        assert f"127.0.0.1:{port}" not in down.stderr


class TestSecretsStayOut:
    """Tokens never reach the server's output, even when requests carrying them fail."""

    def test_canary_token_not_logged(self, fleet: Path, server: ServerProcess) -> None:
        """A canary token used in good and bad requests never appears in the server log."""
        import httpx

        env = {"MCOS_FLEET": str(fleet)}
        canary = mcos_json("token", "create", "--agent", "gene", "--label", "canary", env=env)[
            "token"
        ]
        forged = canary[:-43] + "Z" * 43
        auth = {"Authorization": f"Bearer {canary}"}
        httpx.get(server.url + "/v1/inbox", headers=auth)
        httpx.get(server.url + "/v1/inbox?inbox=jarvis", headers=auth)  # 403, audited
        httpx.post(server.url + "/v1/messages", headers=auth, json={"to": "nobody"})  # 422
        httpx.get(server.url + "/v1/inbox", headers={"Authorization": f"Bearer {forged}"})  # 401
        httpx.get(server.url + "/v1/inbox", headers={"Authorization": f"Basic {canary}"})  # 401
        httpx.post(server.url + "/v1/messages", headers=auth, content=b"{" + canary.encode())
        token_id = mcos_json("token", "list", "--name", "gene", env=env)[0]["id"]
        mcos("token", "revoke", str(token_id), env=env)
        httpx.get(server.url + "/v1/inbox", headers=auth)  # revoked
        operator = (fleet.parent / "state" / "operator.token").read_text().strip()
        secret_part = canary.split("_", 2)[2]  # mcos_PREFIX_SECRET; SECRET may hold "_" too
        audit = mcos("audit", "export", "--format", "json", env=env).stdout
        server.stop()
        log = server.output()
        assert "uvicorn" in log.lower() or "mission control" in log.lower()  # the log is real
        for secret in (canary, forged, operator, secret_part):
            assert secret not in log
            assert secret not in audit


class TestConfigErrors:
    """A broken fleet file stops the CLI with exit 78 and the key path, never a traceback."""

    def test_config_check(self, tmp_path: Path) -> None:
        """`mcos config check` names the bad key and exits 78."""
        mcos("init", str(tmp_path / "f"))
        path = tmp_path / "f" / "fleet.toml"
        path.write_text(path.read_text().replace('host = "local"', 'host = "vps2"', 1))
        result = mcos("config", "check", "-f", str(path), check=False)
        assert result.returncode == 78
        assert "agents.jarvis.host: unknown host 'vps2' (known: local)" in result.stderr
        assert "Traceback" not in result.stderr
        missing = mcos("config", "check", "-f", str(tmp_path / "missing.toml"), check=False)
        assert missing.returncode == 78
        assert "mcos init" in missing.stderr


@pytest.mark.postgres
@pytest.mark.slow
def test_workers_bootstrap_one_operator_token(tmp_path: Path) -> None:
    """`--workers 3` on PostgreSQL mints exactly one first operator token, the one on disk."""
    mcos("init", str(tmp_path / "f"))
    path = tmp_path / "f" / "fleet.toml"
    port = free_port()
    pg_url = create_pg_database()
    text = re.sub(
        r'url = "http://127\.0\.0\.1:\d+"', f'url = "http://127.0.0.1:{port}"', path.read_text()
    )
    path.write_text(re.sub(r'store = "[^"]*"', f'store = "{pg_url}"', text))
    server = start_server(path, port, tmp_path / "server.log", "--workers", "3")
    try:
        env = {"MCOS_FLEET": str(path)}
        tokens = mcos_json("token", "list", env=env)
        assert [t["kind"] for t in tokens] == ["operator"]
        assert "jarvis" in mcos("status", env=env).stdout
        # Whichever worker answers, the token on disk works: a new connection per request (an
        # `mcos status` process each cost a second of CPU; 30 requests reach more workers).
        operator = (tmp_path / "f" / "state" / "operator.token").read_text().strip()
        for _ in range(30):
            with Client(server.url, operator) as op:
                assert "jarvis" in {a.name for a in op.do(Calls.agents())}
    finally:
        server.stop()
        drop_pg_database(pg_url)
