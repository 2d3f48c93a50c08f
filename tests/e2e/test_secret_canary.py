"""A canary key through a full run: it reaches its model API, and nowhere else — not a log
file, a daily log, an API response or the audit log — even when the API echoes it back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mcos.client import Calls, Client
from mcos.config.scaffold import init_fleet
from mcos.domain.messages import Priority
from mcos.domain.tokens import PrincipalKind
from mcos.exceptions import McosError
from tests.api.conftest import free_port
from tests.e2e.cli_helpers import MCOS
from tests.waiting import wait_until

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
    openai = (
        f'model = {{ provider = "openai", id = "llama3", base_url = "{base}", route = "direct" }}'
    )
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
        wait_until("the operator token", token_file.exists, timeout=60)
        operator = token_file.read_text().strip()
        with Client(url, operator) as op:

            def all_idle() -> bool:
                try:
                    return all(a.state == "idle" for a in op.do(Calls.agents()))
                except McosError:
                    return False

            wait_until("every agent idle", all_idle, timeout=60, interval=0.3)
            jarvis = op.do(Calls.create_token(PrincipalKind.AGENT, "jarvis")).token
            # Supervised, jarvis writes under its instance's fence (409 fenced without it).
            fence = next(x.fence for x in op.do(Calls.leases()) if x.agent == "jarvis")
            with Client(url, jarvis, fence=fence) as j:
                j.do(
                    Calls.send("gene", "check the disks", subject="disks", priority=Priority.URGENT)
                )
            wait_until("the key at its API", lambda: EchoingApi.seen, timeout=60)
            # The failure logged (daily log) and reported (gene's state), before looking for leaks.
            memory = home / "agents" / "gene" / "memory"
            wait_until(
                "gene's daily log to record the refusal",
                lambda: any("Incorrect API key" in p.read_text() for p in memory.glob("*.md")),
            )
            wait_until(
                "gene to report the failed call",
                lambda: "Incorrect API key" in op.do(Calls.agent("gene")).state_detail,
            )
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
        try:
            run.wait(60)
        except subprocess.TimeoutExpired:
            run.kill()
            run.wait()
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
