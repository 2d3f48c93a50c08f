"""An agent on a host whose clock is 7 hours ahead (libfaketime): nothing is misdated, no
future-timestamp alarm fires, and "clock unhealthy" is reported once as a P3."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import uvicorn

from mcos.client import Calls, Client
from mcos.config import load_fleet
from mcos.config.scaffold import init_fleet
from mcos.domain.messages import Priority
from mcos.domain.tokens import PrincipalKind
from mcos.server.factory import build_app
from tests.api.conftest import free_port, migrate
from tests.conftest import IN_CI

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")


def _wait(what: str, check: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def test_a_host_seven_hours_ahead_misdates_nothing(tmp_path: Path) -> None:
    if not LIBFAKETIME.exists():
        if IN_CI:
            pytest.fail("libfaketime is missing (make system-deps installs faketime)")
        pytest.skip("libfaketime is not installed (apt-get install faketime)")
    import asyncio

    path = init_fleet(tmp_path / "fleet")
    port = free_port()
    path.write_text(path.read_text().replace("127.0.0.1:8700", f"127.0.0.1:{port}"))
    fleet = load_fleet(path)
    asyncio.run(migrate(fleet.store_url))
    server = uvicorn.Server(
        uvicorn.Config(build_app(fleet), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    _wait("Mission Control", lambda: server.started)
    url = f"http://127.0.0.1:{port}"
    operator = (fleet.state_dir / "operator.token").read_text().strip()
    with Client(url, operator) as op:
        token = op.do(Calls.create_token(PrincipalKind.AGENT, "gene")).token
        jarvis = op.do(Calls.create_token(PrincipalKind.AGENT, "jarvis")).token
    env = {**os.environ, "MCOS_TOKEN": token, "LD_PRELOAD": str(LIBFAKETIME), "FAKETIME": "+7h"}
    log = (tmp_path / "gene.log").open("wb")
    agent = subprocess.Popen(
        [sys.executable, "-P", "-m", "mcos.runtime.main", "gene", "--fleet", str(path)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        with Client(url, operator) as op:

            def clock_reports() -> list[object]:
                return [i for i in op.do(Calls.incidents()) if "clock unhealthy" in i.summary]

            _wait("the clock report", lambda: clock_reports() != [])
            with Client(url, jarvis) as j:
                j.do(
                    Calls.send(
                        "gene",
                        "status of the backups?",
                        subject="backups",
                        priority=Priority.URGENT,
                    )
                )
            today = fleet.workspace_path("gene") / "memory" / f"{datetime.now(UTC):%Y-%m-%d}.md"
            _wait("gene handling the message",
                  lambda: today.exists() and "backups" in today.read_text())  # fmt: skip
            reports = clock_reports()
            assert len(reports) == 1
            only = op.do(Calls.incident(reports[0].id))  # type: ignore[attr-defined]
            assert (only.severity, only.state, only.reports) == ("P3", "confirmed", 1)
            assert "-2520" in only.summary  # Mission Control's clock is 7 h behind this host
            text = today.read_text()
            assert "dated ahead" not in text
            hours = {int(line[2:4]) for line in text.splitlines() if line.startswith("- ")}
            now = datetime.now(UTC).hour
            assert hours <= {now, (now - 1) % 24}, f"log dated by the skewed clock: {hours}"
    finally:
        agent.terminate()
        agent.wait(20)
        log.close()
        server.should_exit = True
        thread.join(10)
    assert "Traceback" not in (tmp_path / "gene.log").read_text()
