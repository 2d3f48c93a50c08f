"""One `mcos run` of the 23-agent business fleet, shared by the end-to-end tests that drive it.

Starting the fleet (Mission Control, two hosts' supervisors, 23 agents) is most of what those
tests cost on two cores; each one that only needs it running takes the same one. A test that
stops it (the Ctrl-C test) takes it with ``stopping()``: the next test to ask gets a fresh one,
so no test depends on running before or after another. The tests that use it share the
``business-fleet`` xdist group, so they run in one worker and one fleet runs at a time.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from mcos.client import Calls, Client
from mcos.config import load_fleet
from mcos.exceptions import McosError
from tests.api.conftest import free_port
from tests.e2e.cli_helpers import MCOS, mcos
from tests.waiting import wait_until


@dataclass
class BusinessFleet:
    """A running `mcos run` of the business template: its folder, port and process."""

    home: Path
    port: int
    run: subprocess.Popen[bytes]
    out_path: Path
    agents: set[str] = field(default_factory=set)
    taken: bool = False
    """Handed to a test that stops it: never handed out again."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def fleet_file(self) -> Path:
        return self.home / "fleet.toml"

    def operator_token(self) -> str:
        return (self.home / "state" / "operator.token").read_text().strip()

    def output(self) -> str:
        return self.out_path.read_text(errors="replace")

    def all_idle(self) -> bool:
        """Every agent of the fleet reported idle (asked over HTTP: an `mcos status` process
        per poll would cost a second of CPU while the agents start on the same cores)."""
        if self.run.poll() is not None:
            pytest.fail(f"mcos run exited {self.run.returncode}:\n{self.output()}")
        token = self.home / "state" / "operator.token"
        if not token.exists():
            return False
        try:
            with Client(self.url, token.read_text().strip()) as operator:
                agents = operator.do(Calls.agents())
        except (McosError, httpx.HTTPError):
            return False
        return {a.name for a in agents} == self.agents and all(a.state == "idle" for a in agents)

    def interrupt(self, timeout: float = 90) -> int:
        """Ctrl-C, as a user stops it; its exit code (killed if it outlives ``timeout``)."""
        if self.run.poll() is None:
            self.run.send_signal(signal.SIGINT)
        try:
            return self.run.wait(timeout)
        except subprocess.TimeoutExpired:
            self.run.kill()
            self.run.wait()
            raise


def start_business_fleet(folder: Path) -> BusinessFleet:
    """`mcos init --template business` in ``folder``, on a free port, `mcos run`, every agent
    idle."""
    home = folder / "biz"
    mcos("init", str(home), "--template", "business")  # as a new user makes it
    path = home / "fleet.toml"
    port = free_port()
    text = path.read_text().replace("127.0.0.1:8700", f"127.0.0.1:{port}")
    # Every agent answers a normal message within a second (the template's default batch
    # window waits 20 s to gather more into one turn): the tests wait for answers, not batches,
    # and each of their directives, channel items and approvals waited one or two windows.
    assert text.count("\nheartbeat = { interval = ") == len(load_fleet(path).agents)
    path.write_text(text.replace("\nheartbeat = { ", '\nheartbeat = { batch = "1s", '))
    out_path = folder / "run.out"
    with out_path.open("wb") as out:
        run = subprocess.Popen(
            [*MCOS, "run", str(home)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "COLUMNS": "200"},
        )
    fleet = BusinessFleet(home, port, run, out_path, set(load_fleet(path).agents))
    try:
        wait_until(
            "every agent of the business fleet idle", fleet.all_idle, timeout=180, interval=0.3
        )
    except BaseException:
        fleet.interrupt(60)
        raise
    return fleet


@pytest.fixture(scope="session")
def business_fleets(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[], BusinessFleet]]:
    """Gives the running business fleet, starting one when there is none (or it was taken)."""
    started: list[BusinessFleet] = []

    def running() -> BusinessFleet:
        if started and not started[-1].taken and started[-1].run.poll() is None:
            fleet = started[-1]  # as a fresh one is handed out: every agent idle
            try:
                wait_until("the fleet idle again", fleet.all_idle, timeout=90, interval=0.3)
            except pytest.fail.Exception:  # left busy by a failed test: not this test's problem
                fleet.taken = True
                fleet.interrupt(60)
            else:
                return fleet
        started.append(start_business_fleet(tmp_path_factory.mktemp("business-fleet")))
        return started[-1]

    yield running
    for fleet in started:
        if fleet.run.poll() is None:
            fleet.interrupt(60)


@pytest.fixture
def business_fleet(business_fleets: Callable[[], BusinessFleet]) -> BusinessFleet:
    """The shared running business fleet (do not stop it: use ``business_fleet_to_stop``)."""
    return business_fleets()


@pytest.fixture
def business_fleet_to_stop(business_fleets: Callable[[], BusinessFleet]) -> Iterator[BusinessFleet]:
    """The running business fleet, for a test that stops it: no other test gets it after."""
    fleet = business_fleets()
    fleet.taken = True
    yield fleet
    if fleet.run.poll() is None:
        fleet.interrupt(60)
