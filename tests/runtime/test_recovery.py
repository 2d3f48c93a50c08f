"""Allowlisted recovery: a failing service brought back by its command, audited; a flapping
one escalated; a command the model invents refused."""

from __future__ import annotations

import http.server
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mcos.client import Calls
from mcos.domain.heartbeat import Outcome
from mcos.models.base import ToolCall
from tests.api.conftest import free_port
from tests.runtime.conftest import RigFactory


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A web service that answers 503 until the file ``up`` exists."""
    flag = tmp_path / "up"

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if flag.exists() else 503)
            self.end_headers()
            self.wfile.write(b"ok" if flag.exists() else b"down")

        def log_message(self, *_: object) -> None:
            return

    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{port}/", flag
    server.shutdown()


def _fleet(url: str, command: list[str], max_per_window: int = 3) -> tuple[dict[str, str], str]:
    check = (
        f'checks = [{{ name = "web", http = "{url}", timeout = "2s", recover = "restart-web" }}]'
    )
    argv = ", ".join(f'"{a}"' for a in command)
    tail = f"[recovery.restart-web]\ncommand = [{argv}]\nmax_per_window = {max_per_window}\n"
    return {"gene": check}, tail


async def test_a_failing_service_is_recovered_by_its_allowlisted_command(
    rig_factory: RigFactory, service: tuple[str, Path]
) -> None:
    url, flag = service
    agents, tail = _fleet(url, [sys.executable, "-c", f"open({str(flag)!r}, 'w').write('up')"])
    rig = rig_factory(agents, tail=tail)
    gene = rig.runtime("gene")
    assert await gene.heartbeat() is Outcome.OK  # recovered before anyone needed the model
    assert gene.stats.model_calls == 0
    log = gene.workspace.daily_log(gene.clock.now()).read_text()
    assert "check web failed (HTTP 503 from" in log
    assert "recovered by restart-web" in log
    runs = await rig.client().do(Calls.audit(action="runtime.recovery.run"))
    assert [(r.actor, r.outcome, r.detail["exit"]) for r in runs] == [("agent:gene", "ok", 0)]


async def test_a_flapping_service_stops_being_recovered_and_is_escalated(
    rig_factory: RigFactory, service: tuple[str, Path]
) -> None:
    url, _ = service
    agents, tail = _fleet(url, [sys.executable, "-c", "print('restarted')"], max_per_window=2)
    rig = rig_factory(agents, tail=tail)
    gene = rig.runtime("gene")
    for _ in range(3):
        gene.check_reported.clear()  # each beat looks again
        await gene.heartbeat()
    runs = await rig.client().do(Calls.audit(action="runtime.recovery.run"))
    assert len(runs) == 2
    assert runs[0].detail["output_tail"].strip() == "restarted"
    flapping = await rig.client().do(Calls.audit(action="runtime.recovery.flapping"))
    assert len(flapping) == 1
    incidents = await rig.client().do(Calls.incidents())
    assert [(i.severity, i.state, i.summary) for i in incidents] == [
        ("P2", "reported", "web is flapping: auto-recovery stopped")
    ]


async def test_a_command_the_model_invents_is_refused_and_audited(
    rig_factory: RigFactory, service: tuple[str, Path]
) -> None:
    url, flag = service
    agents, tail = _fleet(url, [sys.executable, "-c", f"open({str(flag)!r}, 'w').write('up')"])
    rig = rig_factory(agents, tail=tail)
    gene = rig.runtime("gene")
    result = await gene.tools.call(
        ToolCall("t1", "recover", {"name": "rm -rf /var/lib/postgres", "reason": "disk full"})
    )
    assert "refused" in result.content
    assert "restart-web" in result.content  # the model learns what it may run
    refused = await rig.client().do(Calls.audit(action="runtime.recovery.refused"))
    assert [(r.outcome, r.targets["recovery"]) for r in refused] == [
        ("refused", "rm -rf /var/lib/postgres")
    ]
    assert not flag.exists()


async def test_a_turn_holding_untrusted_content_recovers_only_with_approval(
    rig_factory: RigFactory, service: tuple[str, Path]
) -> None:
    """Outside text asked for it: the allowlisted recovery is refused (audited, nothing run)
    until a human approves exactly that recovery."""
    url, flag = service
    agents, tail = _fleet(url, [sys.executable, "-c", f"open({str(flag)!r}, 'w').write('up')"])
    rig = rig_factory(agents, tail=tail)
    gene = rig.runtime("gene")
    gene.ctx.tainted = True
    asked = {"name": "restart-web", "reason": "a customer e-mail says it is down"}
    held = await gene.tools.call(ToolCall("t1", "recover", asked))
    assert held.is_error
    assert "untrusted content is in this turn" in held.content
    assert not flag.exists()
    assert await rig.client().do(Calls.audit(action="runtime.recovery.run")) == []
    req = await rig.client("gene").do(
        Calls.request_approval("recover", {"name": "restart-web"}, "web is down", tainted=True)
    )
    await rig.client().do(Calls.vote(req.id, "approve", "checked: it is down"))
    done = await gene.tools.call(ToolCall("t2", "recover", asked | {"approval_id": req.id}))
    assert done.content.startswith("restart-web: ok"), done.content
    assert flag.exists()
