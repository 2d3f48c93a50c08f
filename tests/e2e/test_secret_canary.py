"""A canary key through a full run: it reaches its model API, and nowhere else — not a log
file, a daily log, an API response or the audit log — even when the API echoes it back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mcos.client import Calls, Client
from mcos.config.scaffold import init_fleet
from mcos.domain.messages import Priority
from mcos.domain.tokens import PrincipalKind
from tests.api.conftest import free_port
from tests.e2e.cli_helpers import MCOS

CANARY = "canary-7f3c9e1a2b4d6f80-do-not-leak"


class EchoingApi(BaseHTTPRequestHandler):
    """An OpenAI-compatible server that refuses the key and quotes it, as real APIs do."""

    seen: list[str] = []  # noqa: RUF012 (shared by the handler instances)

    def do_POST(self) -> None:
        key = self.headers.get("Authorization", "").removeprefix("Bearer ")
        EchoingApi.seen.append(key)
        body = json.dumps(
            {
                "error": {
                    "message": f"Incorrect API key provided: {key}",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "invalid_api_key",
                }
            }
        ).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        return


def test_the_canary_never_leaks(tmp_path: Path) -> None:
    api_port = free_port()
    api = ThreadingHTTPServer(("127.0.0.1", api_port), EchoingApi)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    home = tmp_path / "fleet"
    path = init_fleet(home)
    port = free_port()
    offline = 'model = { provider = "offline", id = "offline-1", context_window = 200000 }'
    base = f"http://127.0.0.1:{api_port}/v1"
    openai = f'model = {{ provider = "openai", id = "llama3", base_url = "{base}" }}'
    openai += '\nkey = "env:MCOS_CANARY_KEY"'
    text = path.read_text().replace("127.0.0.1:8700", f"127.0.0.1:{port}")
    gene = text.index("[agents.gene]")
    text = text[:gene] + text[gene:].replace(offline, openai, 1)
    path.write_text(text)
    env = {**os.environ, "MCOS_CANARY_KEY": CANARY, "COLUMNS": "200"}
    out = (tmp_path / "run.out").open("wb")
    run = subprocess.Popen([*MCOS, "run", str(home)], stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    responses: list[str] = []
    try:
        token_file = home / "state" / "operator.token"
        deadline = time.monotonic() + 60
        while not token_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        operator = token_file.read_text().strip()
        with Client(url, operator) as op:
            while time.monotonic() < deadline:
                if all(a.state == "idle" for a in op.do(Calls.agents())):
                    break
                time.sleep(0.3)
            jarvis = op.do(Calls.create_token(PrincipalKind.AGENT, "jarvis")).token
            with Client(url, jarvis) as j:
                j.do(
                    Calls.send("gene", "check the disks", subject="disks", priority=Priority.URGENT)
                )
            while time.monotonic() < deadline and not EchoingApi.seen:
                time.sleep(0.2)
            time.sleep(1.0)  # let the failure be logged and reported
            for call in (
                Calls.agents(),
                Calls.incidents(),
                Calls.usage(),
                Calls.audit_csv(),
                Calls.audit(limit=1000),
                Calls.approvals(),
            ):
                responses.append(str(op.do(call)))
            responses.append(op.do(Calls.metrics()))
    finally:
        run.send_signal(signal.SIGINT)
        run.wait(60)
        out.close()
        api.shutdown()
    assert CANARY in EchoingApi.seen, "the key never reached its API: the test proves nothing"
    leaks = [p for p in home.rglob("*") if p.is_file() and CANARY.encode() in p.read_bytes()]
    leaks += [tmp_path / "run.out"] if CANARY in (tmp_path / "run.out").read_text() else []
    assert leaks == []
    assert not any(CANARY in r for r in responses)
    daily = next((home / "agents" / "gene" / "memory").glob("*.md")).read_text()
    assert "Incorrect API key provided: [redacted]" in daily  # the echo was cut, not the news


@pytest.fixture(autouse=True)
def _reset() -> None:
    EchoingApi.seen = []
