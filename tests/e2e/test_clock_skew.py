"""An agent on a host whose clock is wrong (libfaketime): nothing is misdated, no
future-timestamp alarm fires, "clock unhealthy" is reported as a P3 only when a live reading of
Mission Control's clock agrees — also when the host clock is stepped between two measurements."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import uvicorn

from mcos.api_models import IncidentOut
from mcos.client import Calls, Client
from mcos.config import load_fleet
from mcos.config.models import Fleet
from mcos.config.scaffold import init_fleet
from mcos.domain.messages import Priority
from mcos.domain.tokens import PrincipalKind
from mcos.server.factory import build_app
from tests.api.conftest import PromptServer, free_port, migrate
from tests.conftest import IN_CI
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
SECONDS = re.compile(r"clock unhealthy on host \S+: ([+-]\d+(?:\.\d+)?)s")
LOGGED = re.compile(r"clock unhealthy: ([+-]\d+(?:\.\d+)?)s from Mission Control")


def _needs_libfaketime() -> None:
    if not LIBFAKETIME.exists():
        if IN_CI:
            pytest.fail("libfaketime is missing (make system-deps installs faketime)")
        pytest.skip("libfaketime is not installed (apt-get install faketime)")


@dataclass
class SkewedAgent:
    """Mission Control on the true clock, gene on a faked one, and jarvis to write to gene."""

    fleet: Fleet
    url: str
    operator: str
    jarvis: str
    output: Path

    def clock_reports(self) -> list[IncidentOut]:
        with Client(self.url, self.operator) as op:
            return [i for i in op.do(Calls.incidents()) if "clock unhealthy" in i.summary]

    def send(self, subject: str) -> None:
        with Client(self.url, self.jarvis) as j:
            j.do(Calls.send("gene", f"{subject}?", subject=subject, priority=Priority.URGENT))

    def log(self) -> str:
        """Every daily log of gene's (a misdated entry would land in another day's file)."""
        folder = self.fleet.workspace_path("gene") / "memory"
        return "".join(p.read_text() for p in sorted(folder.glob("*.md")))

    def today(self) -> str:
        path = self.fleet.workspace_path("gene") / "memory" / f"{datetime.now(UTC):%Y-%m-%d}.md"
        return path.read_text() if path.exists() else ""

    def wait_handled(self, subject: str) -> None:
        wait_until(f"gene handling {subject!r}", lambda: subject in self.today())


@contextmanager
def skewed_agent(tmp_path: Path, faketime: dict[str, str]) -> Iterator[SkewedAgent]:
    """Mission Control in this process; gene as a process under libfaketime's ``faketime``
    settings."""
    path = init_fleet(tmp_path / "fleet")
    port = free_port()
    path.write_text(path.read_text().replace("127.0.0.1:8700", f"127.0.0.1:{port}"))
    fleet = load_fleet(path)
    asyncio.run(migrate(fleet.store_url))
    server = PromptServer(
        uvicorn.Config(build_app(fleet), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until("Mission Control", lambda: server.started)
    url = f"http://127.0.0.1:{port}"
    operator = (fleet.state_dir / "operator.token").read_text().strip()
    with Client(url, operator) as op:
        token = op.do(Calls.create_token(PrincipalKind.AGENT, "gene")).token
        jarvis = op.do(Calls.create_token(PrincipalKind.AGENT, "jarvis")).token
    env = {**os.environ, "MCOS_TOKEN": token, "LD_PRELOAD": str(LIBFAKETIME), **faketime}
    output = tmp_path / "gene.log"
    log = output.open("wb")
    agent = subprocess.Popen(
        [sys.executable, "-P", "-m", "mcos.runtime.main", "gene", "--fleet", str(path)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        yield SkewedAgent(fleet, url, operator, jarvis, output)
    finally:
        agent.terminate()
        agent.wait(20)
        log.close()
        server.should_exit = True
        thread.join(10)
    assert "Traceback" not in output.read_text()


def _entry_hours(text: str) -> set[int]:
    return {int(line[2:4]) for line in text.splitlines() if line.startswith("- ")}


def _near(seconds: float, expected: float, within: float = 60) -> bool:
    return abs(seconds - expected) <= within


def test_a_host_seven_hours_ahead_misdates_nothing(tmp_path: Path) -> None:
    _needs_libfaketime()
    with skewed_agent(tmp_path, {"FAKETIME": "+7h"}) as rig:
        wait_until("the clock report", lambda: rig.clock_reports() != [], interval=0.2)
        rig.send("backups")
        rig.wait_handled("backups")
        reports = rig.clock_reports()
        assert len(reports) == 1
        only = reports[0]
        assert (only.severity, only.state, only.reports) == ("P3", "confirmed", 1)
        found = SECONDS.search(only.summary)
        assert found is not None, only.summary
        # Mission Control's clock is 7 h behind this host (the round trip blurs the decimals).
        assert _near(float(found.group(1)), -7 * 3600), only.summary
        text = rig.log()
        assert "dated ahead" not in text
        now = datetime.now(UTC).hour
        assert _entry_hours(text) <= {now, (now - 1) % 24}, f"log dated by the skewed clock: {text}"


def test_a_host_clock_stepped_between_measurements_raises_no_false_alarm(tmp_path: Path) -> None:
    """The field report's 7-hour lesson. The host starts 7 h ahead (a true skew: one P3);
    then NTP steps it back while the runtime still holds the 7-hour offset it measured: a
    message from jarvis looks 7 h future-dated on that cached offset, but a live reading of
    Mission Control's clock says otherwise — no "dated ahead" line, no new P3, nothing misdated.
    Then the host falls 3 h behind (a true skew again): still no false future-dated alarm, and
    the skew itself is reported, confirmed by a live reading."""
    _needs_libfaketime()
    host_clock = tmp_path / "faketime"
    host_clock.write_text("+7h\n")
    faketime = {
        "FAKETIME_TIMESTAMP_FILE": str(host_clock),
        "FAKETIME_NO_CACHE": "1",  # read the file at every clock read: a step takes at once
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",  # as with NTP, a wall-clock step moves no timers
    }
    with skewed_agent(tmp_path, faketime) as rig:
        wait_until("the clock report", lambda: rig.clock_reports() != [], interval=0.2)
        first = rig.clock_reports()[0]
        found = SECONDS.search(first.summary)
        assert found is not None, first.summary
        assert _near(float(found.group(1)), -7 * 3600), first.summary

        host_clock.write_text("+0\n")  # NTP steps the host back into line
        rig.send("backups")
        rig.wait_handled("backups")
        assert "dated ahead" not in rig.log()
        assert [r.reports for r in rig.clock_reports()] == [1]  # no false P3
        now = datetime.now(UTC).hour
        handled = [line for line in rig.today().splitlines() if "backups" in line]
        assert handled
        assert _entry_hours("\n".join(handled)) <= {now, (now - 1) % 24}

        host_clock.write_text("-3h\n")  # now the host really is 3 h behind
        rig.send("disks")
        rig.wait_handled("disks")
        text = rig.log()
        assert "dated ahead" not in text
        logged = [float(s) for s in LOGGED.findall(text)]
        assert len(logged) == 2, logged
        assert _near(logged[0], -7 * 3600), logged
        assert _near(logged[1], 3 * 3600), logged
        assert [r.reports for r in rig.clock_reports()] == [2]  # the same observation, again


CRASH_LOOP = """
import asyncio, pathlib, sys
from datetime import timedelta
from mcos.client import AsyncClient
from mcos.config import load_fleet
from mcos.supervisor.policy import Exit, RestartPolicy
from mcos.supervisor.supervisor import Supervisor, _steady_now

fleet, host_clock = load_fleet(sys.argv[1]), pathlib.Path(sys.argv[2])
sys.path.insert(0, sys.argv[3])  # the repository, for the suite's wait helpers
from tests.waiting import past

async def steady_now():  # the clock the supervisor spaces crashes on (monotonic)
    return _steady_now()
window = timedelta(seconds=0.5)

async def main() -> None:
    async with AsyncClient("http://127.0.0.1:9", "unreachable") as client:
        supervisor = Supervisor(
            fleet, {fleet.agents["gene"].host}, client,
            policy=RestartPolicy(max_restarts=2, window=window), say=lambda _: None,
        )
        slot = supervisor.slots["gene"]
        for _ in range(2):
            await supervisor._after_exit(slot, 1, Exit.CRASHED)
        # the next crash really comes two windows later, on the supervisor's clock
        await past(steady_now, slot.crashes[-1] + 2 * window)
        host_clock.write_text("-1h\\n")  # and NTP steps the wall clock back before it
        await supervisor._after_exit(slot, 1, Exit.CRASHED)
        print(slot.status, len(slot.crashes))

asyncio.run(main())
"""


def test_a_wall_clock_step_back_does_not_fail_an_agent_as_a_crash_loop(tmp_path: Path) -> None:
    """The supervisor's crash-loop judgement (more than N crashes within the window: failed,
    P2): two crashes, a third two windows later but after the host clock stepped back an hour.
    On the wall clock all three would fall in one window (a false "failed"); they do not."""
    _needs_libfaketime()
    path = init_fleet(tmp_path / "fleet")
    host_clock = tmp_path / "faketime"
    host_clock.write_text("+0\n")
    env = {
        **os.environ,
        "LD_PRELOAD": str(LIBFAKETIME),
        "FAKETIME_TIMESTAMP_FILE": str(host_clock),
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
    done = subprocess.run(
        [sys.executable, "-P", "-c", CRASH_LOOP, str(path), str(host_clock), str(ROOT)],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    status, crashes = done.stdout.split()
    assert (status, crashes) == ("restarting", "3")
