"""`mcos server`'s log file: JSON lines, uvicorn's own lines included, and an access line per
request that names the caller but never holds its token."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import free_port
from tests.e2e.cli_helpers import ServerProcess, mcos, start_server
from tests.waiting import wait_until


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """`mcos server` on a fleet made by `mcos init` (SQLite)."""
    directory = tmp_path / "fleet"
    mcos("init", str(directory))
    path = directory / "fleet.toml"
    port = free_port()
    path.write_text(
        re.sub(r'url = "http://127\.0\.0\.1:\d+"', f'url = "http://127.0.0.1:{port}"',
               path.read_text())
    )  # fmt: skip
    s = start_server(path, port, tmp_path / "server.log")
    yield s
    s.stop()


def _records(server: ServerProcess) -> list[dict[str, object]]:
    """The log's lines, each parsed as JSON (a line that is not fails the test)."""
    return [json.loads(x) for x in server.output().splitlines() if x.strip()]


def test_the_server_log_is_json_lines_with_an_access_log(server: ServerProcess) -> None:
    state = server.log_path.parent / "fleet" / "state"
    token = (state / "operator.token").read_text().strip()
    answer = httpx.get(
        server.url + "/v1/agents?limit=5", headers={"Authorization": f"Bearer {token}"}
    )
    assert answer.status_code == 200
    assert httpx.get(server.url + "/v1/agents").status_code == 401

    def access() -> list[dict[str, object]]:
        return [r for r in _records(server) if r.get("logger") == "mcos.server.access"
                and r.get("path") == "/v1/agents"]  # fmt: skip

    lines = wait_until("two access lines for /v1/agents", lambda: len(access()) == 2 and access())
    assert [(x["method"], x["status"]) for x in lines] == [("GET", 200), ("GET", 401)]
    assert str(lines[0]["principal"]).startswith("operator:")
    assert lines[1]["principal"] is None
    assert all(isinstance(x["latency_ms"], float) for x in lines)
    text = server.output()
    assert token not in text
    assert "limit=5" not in text  # the path, never the query string
    records = _records(server)
    assert any(r["logger"] == "uvicorn.error" for r in records)  # uvicorn's own, as JSON
    for r in records:
        assert {"timestamp", "level", "event", "logger"} <= set(r)
    assert any(str(r["event"]).startswith("Mission Control on http://") for r in records)
