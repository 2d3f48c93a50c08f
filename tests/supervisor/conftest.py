"""Real processes on real PostgreSQL: Mission Control, supervisors, agents; /proc as witness."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

from mcos.client import Calls, Client
from mcos.config.scaffold import init_fleet
from mcos.domain.tokens import PrincipalKind
from tests.api.conftest import free_port
from tests.e2e.cli_helpers import MCOS, ServerProcess, start_server
from tests.store.conftest import drop_pg_database, migrated_database
from tests.waiting import wait_until

# Fast, but not so fast that a loaded 2-core machine trips them: a supervisor starved for 2 s
# lost a 3 s lease, and an agent slow to start was killed as hung by a 4 s watchdog.
SUPERVISOR = """
[supervisor]
lease_ttl = "6s"
watchdog = "8s"
restart_first = "1s"
restart_cap = "1s"
max_restarts = 5
restart_window = "5m"
stop_grace = "3s"

[hosts.mini]
address = "127.0.0.1"

[hosts.vps]
address = "127.0.0.2"
"""


T = TypeVar("T")

TITLE = re.compile(r"^mcos agent (?P<name>\S+) --fleet (?P<fleet>\S+)")


def _read(path: str) -> bytes:
    """A /proc file's first 4 KiB, or ``b""`` when the process is gone (no ``Path`` objects or
    buffered file: a scan reads one of these per process on the machine, many times a second)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return b""
    try:
        return os.read(fd, 4096)
    except OSError:
        return b""
    finally:
        os.close(fd)


def agent_pids(fleet: Path, agent: str | None = None) -> dict[str, list[int]]:
    """Live agent processes of this fleet, by agent name (from /proc, not from anyone's word).

    Every agent process titles itself ``mcos agent NAME --fleet PATH``. The tests poll this many
    times a second while a whole suite's processes run beside them: only a process whose title
    starts so has its title decoded and its ``stat`` (the zombie check) read.
    """
    found: dict[str, list[int]] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        raw = _read(f"/proc/{pid}/cmdline").replace(b"\0", b" ").strip()
        if not raw.startswith(b"mcos agent "):
            continue
        try:
            title = raw.decode()
        except UnicodeDecodeError:
            continue
        stat = _read(f"/proc/{pid}/stat").rsplit(b")", 1)
        if len(stat) < 2 or not stat[1].split():  # gone meanwhile
            continue
        state = stat[1].split()[0]
        match = TITLE.match(title)
        if state == b"Z" or match is None or match["fleet"] != str(fleet):
            continue
        if agent is None or match["name"] == agent:
            found.setdefault(match["name"], []).append(int(pid))
    return found


def wait_for(what: str, check: Callable[[], T], timeout: float = 60) -> T:
    """Poll ``check`` until it holds and return its value (the test fails after ``timeout``).

    60 s: three agents took over 30 s to start on the 2-core machine beside a CPU hog and other
    test runs (a passing wait returns as soon as the state is there)."""
    return wait_until(what, check, timeout=timeout, interval=0.1)


@dataclass
class Supervised:
    """A running `mcos up` and its output."""

    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class FleetRig:
    """Mission Control on PostgreSQL, a fleet file, and the supervisors a test started."""

    fleet: Path
    server: ServerProcess
    token: str
    supervisors: list[Supervised] = field(default_factory=list)

    def client(self) -> Client:
        return Client(self.server.url, self.token)

    def host_token(self, host: str) -> str:
        """A new host token for ``host``'s supervisor, minted by the operator."""
        with self.client() as c:
            return c.do(Calls.create_token(PrincipalKind.HOST, host)).token

    def up(self, host: str, env: dict[str, str] | None = None) -> Supervised:
        """`mcos up --host HOST` with a new host token in $MCOS_HOST_TOKEN (or ``env``)."""
        log = self.fleet.parent / f"up-{host}-{len(self.supervisors)}.log"
        given = {"MCOS_HOST_TOKEN": self.host_token(host)} if env is None else env
        with log.open("wb") as out:
            process = subprocess.Popen(
                [*MCOS, "up", "--host", host, "-f", str(self.fleet)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "COLUMNS": "200", **given},
            )
        sup = Supervised(process, log)
        self.supervisors.append(sup)
        return sup

    def state(self, agent: str) -> tuple[str | None, str]:
        with self.client() as c:
            a = c.do(Calls.agent(agent))
        return a.state, a.state_detail


def write_fleet(root: Path, url: str, port: int, agents: str, supervisor: str = SUPERVISOR) -> Path:
    """A fleet on hosts mini and vps, on PostgreSQL, with fast supervisor settings (or
    ``supervisor``'s: the ``[supervisor]`` table and the hosts)."""
    path = init_fleet(root, template="small")
    text = path.read_text()
    head = text[: text.index("[hosts.local]")]
    head = head.replace("sqlite:///state/mcos.db", url).replace(
        "http://127.0.0.1:8700", f"http://127.0.0.1:{port}"
    )
    path.write_text(head + supervisor + '\n[humans.founder]\nrole = "founder"\n' + agents)
    return path


RigFactory = Callable[..., FleetRig]
"""``(agents TOML, supervisor=SUPERVISOR) -> FleetRig``."""


@pytest.fixture
def fleet_rig_factory(tmp_path: Path) -> Iterator[RigFactory]:
    """Build a rig from the ``[agents.*]`` TOML a test needs (and its supervisor settings)."""
    made: list[tuple[FleetRig, str]] = []

    def build(agents: str, supervisor: str = SUPERVISOR) -> FleetRig:
        url = migrated_database("postgres", tmp_path)  # (`mcos server` would migrate it alike)
        port = free_port()
        fleet = write_fleet(tmp_path / "fleet", url, port, agents, supervisor)
        server = start_server(fleet, port, tmp_path / "server.log")
        token = (tmp_path / "fleet" / "state" / "operator.token").read_text().strip()
        rig = FleetRig(fleet, server, token)
        made.append((rig, url))
        return rig

    yield build
    for rig, url in made:
        for sup in rig.supervisors:
            if sup.process.poll() is None:
                sup.process.send_signal(signal.SIGCONT)
                sup.process.terminate()
                try:
                    sup.process.wait(20)
                except subprocess.TimeoutExpired:
                    sup.process.kill()
        for pids in agent_pids(rig.fleet).values():
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
        rig.server.stop()
        drop_pg_database(url)
