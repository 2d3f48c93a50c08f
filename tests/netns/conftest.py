"""Hosts as network namespaces: two agent hosts, two Mission Control replicas, a database host.

Each host is a network namespace (``ip netns``) plugged by a veth pair into a bridge that lives
in a "switch" namespace, so a test can pull a host's cable (``ip link set … down`` on the
switch's side) or make its link lossy and slow (``tc netem``, or a token bucket where the
kernel has no netem) without touching the machine's own network. The test process itself sits
on the switch too (a leg in the root namespace, like an operator's laptop) and acts through the
real client.

    operator (root ns) ─┐
    mc-a  10.x.y.11 ────┤
    mc-b  10.x.y.12 ────┼── bridge in the switch namespace
    db    10.x.y.2  ────┤      (a private PostgreSQL: tests/throwaway_pg.py)
    mini  10.x.y.21 ────┤      (`mcos up --host mini`)
    vps   10.x.y.22 ────┘      (`mcos up --host vps`)

Names are unique per rig; every namespace, process and cluster is removed in the fixture's
finaliser, which also runs when a test fails or times out. Needs root (CI runs as root): outside
CI a non-root run skips, under CI=true it fails.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import httpx
import psycopg
import pytest

from mcos.api_models import LeaseOut
from mcos.client import Calls, Client
from mcos.config.scaffold import init_fleet
from mcos.domain.tokens import PrincipalKind
from mcos.store.postgres import LISTENER_NAME
from tests.conftest import IN_CI
from tests.e2e.cli_helpers import MCOS
from tests.throwaway_pg import ThrowawayCluster
from tests.waiting import wait_until

PORT = 8700
"""Every replica listens on this port in its own namespace."""

LEASE_TTL = 6.0
SUPERVISOR = f"""
[supervisor]
lease_ttl = "{LEASE_TTL:g}s"
watchdog = "8s"
restart_first = "1s"
restart_cap = "1s"
max_restarts = 5
restart_window = "5m"
stop_grace = "3s"
"""

AGENTS = """
[agents.jarvis]
role = "orchestrator"
host = "vps"
reports_to = "founder"
heartbeat = { batch = "1s" }

[agents.gene]
role = "ops"
host = "mini"
reports_to = "jarvis"
failover_hosts = ["vps"]
heartbeat = { batch = "1s" }
"""
"""Both answer a normal message within a second (the default waits 20 s to gather more into one
turn): the tests wait for answers, not for batches."""


def _needs_root() -> None:
    problem = None
    if os.geteuid() != 0:
        problem = "network namespaces need root"
    elif shutil.which("ip") is None or shutil.which("tc") is None:
        problem = "iproute2 (ip, tc) is not installed (make system-deps)"
    if problem is None:
        return
    if IN_CI:
        pytest.fail(f"{problem} (CI=true: the namespace tests never skip)")
    pytest.skip(problem)


def _sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if check and result.returncode != 0:
        msg = f"{' '.join(argv)} exited {result.returncode}: {result.stderr.strip()}"
        raise AssertionError(msg)
    return result


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 in 10.0.0.0/8 that no route of this machine covers (unique enough per run)."""
    taken = [
        ipaddress.ip_network(line.split()[0], strict=False)
        for line in _sh("ip", "-4", "route").stdout.splitlines()
        if line and line.split()[0][0].isdigit()
    ]
    rng = random.SystemRandom()
    while True:
        net = ipaddress.ip_network(f"10.{rng.randint(64, 250)}.{rng.randint(0, 255)}.0/24")
        if not any(net.overlaps(t) for t in taken):
            return net


@dataclass
class Host:
    """One namespace on the switch."""

    name: str
    netns: str
    address: str
    link: str
    """The host's end of its veth pair (inside the host)."""
    port: str
    """The switch's end (inside the switch namespace): what a cut pulls."""


class Network:
    """The switch and the hosts plugged into it."""

    def __init__(self) -> None:
        self.run = secrets.token_hex(3)
        self.subnet = _free_subnet()
        self.switch = f"mcos-{self.run}-sw"
        self.hosts: dict[str, Host] = {}
        self._made: list[str] = []
        self._operator_link = f"m{self.run}op"
        self._ns(self.switch)
        _sh("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
        _sh("ip", "-n", self.switch, "link", "set", "br0", "up")
        # The operator's leg stays in the root namespace.
        address = str(self.subnet.network_address + 254)
        _sh(*self._veth(self._operator_link, f"m{self.run}ops"))
        self._plug(f"m{self.run}ops")
        _sh("ip", "addr", "add", f"{address}/24", "dev", self._operator_link)
        _sh("ip", "link", "set", self._operator_link, "up")

    def _ns(self, name: str) -> None:
        _sh("ip", "netns", "add", name)
        self._made.append(name)
        _sh("ip", "-n", name, "link", "set", "lo", "up")

    @staticmethod
    def _veth(a: str, b: str) -> tuple[str, ...]:
        return ("ip", "link", "add", a, "type", "veth", "peer", "name", b)

    def _plug(self, port: str) -> None:
        _sh("ip", "link", "set", port, "netns", self.switch)
        _sh("ip", "-n", self.switch, "link", "set", port, "master", "br0", "up")

    def add(self, name: str, last_octet: int) -> Host:
        """A new host ``name`` at ``10.x.y.last_octet``."""
        i = len(self.hosts)
        host = Host(
            name,
            f"mcos-{self.run}-{name}",
            str(self.subnet.network_address + last_octet),
            f"m{self.run}h{i}",
            f"m{self.run}s{i}",
        )
        self._ns(host.netns)
        _sh(*self._veth(host.link, host.port))
        _sh("ip", "link", "set", host.link, "netns", host.netns)
        self._plug(host.port)
        _sh("ip", "-n", host.netns, "addr", "add", f"{host.address}/24", "dev", host.link)
        _sh("ip", "-n", host.netns, "link", "set", host.link, "up")
        self.hosts[name] = host
        return host

    def inside(self, name: str) -> list[str]:
        """The command prefix that runs a program on host ``name``."""
        return ["ip", "netns", "exec", self.hosts[name].netns]

    def cut(self, name: str) -> None:
        """Pull ``name``'s cable: its port on the switch goes down."""
        _sh("ip", "-n", self.switch, "link", "set", self.hosts[name].port, "down")

    def restore(self, name: str) -> None:
        """Plug it back in."""
        _sh("ip", "-n", self.switch, "link", "set", self.hosts[name].port, "up")

    def _sides(self, name: str) -> tuple[tuple[tuple[str, ...], str], ...]:
        """(command prefix, device) of both ends of ``name``'s link: in the host, on the switch."""
        h = self.hosts[name]
        return (
            (("ip", "netns", "exec", h.netns), h.link),
            (("ip", "netns", "exec", self.switch), h.port),
        )

    def degrade(self, name: str) -> str:
        """Make ``name``'s link slow and lossy in both directions; returns what was applied.

        ``tc netem`` (100 ms ± 20 ms, 10 % loss) where the kernel has ``sch_netem``; otherwise a
        token bucket (``tbf``) of 100 kbit/s with a short queue: every packet waits its
        turn on the wire, and what cannot leave within 50 ms is dropped, as on a
        congested uplink. Either way TCP sees delay and loss; :meth:`shaped_drops` tells that
        packets were really dropped.
        """
        sides = self._sides(name)
        netem = ("netem", "delay", "100ms", "20ms", "loss", "10%")
        tbf = ("tbf", "rate", "100kbit", "burst", "1600", "latency", "50ms")
        applied = "netem delay 100ms 20ms loss 10%"
        for prefix, dev in sides:
            try:
                _sh(*prefix, "tc", "qdisc", "replace", "dev", dev, "root", *netem)
            except AssertionError as e:
                if "qdisc kind is unknown" not in str(e):
                    raise
                _sh(*prefix, "tc", "qdisc", "replace", "dev", dev, "root", *tbf)
                applied = "tbf rate 100kbit burst 1600 latency 50ms (no sch_netem here)"
        return applied

    def shaped_drops(self, name: str) -> int:
        """Packets the shaping on ``name``'s link has dropped so far, both directions."""
        sides = self._sides(name)
        dropped = 0
        for prefix, dev in sides:
            shown = _sh(*prefix, "tc", "-s", "qdisc", "show", "dev", dev).stdout
            dropped += sum(int(n) for n in re.findall(r"dropped (\d+)", shown))
        return dropped

    def clear_degrade(self, name: str, *, check: bool = True) -> None:
        """Take the shaping off ``name``'s link (``check=False``: whether or not it has any)."""
        for prefix, dev in self._sides(name):
            _sh(*prefix, "tc", "qdisc", "del", "dev", dev, "root", check=check)

    def _pids(self, netns: str) -> list[int]:
        return [int(p) for p in _sh("ip", "netns", "pids", netns, check=False).stdout.split()]

    def kill_inside(self, names: Iterable[str]) -> None:
        """SIGKILL every process on hosts ``names`` and wait until none is left."""
        spaces = [self.hosts[n].netns for n in names if n in self.hosts]
        for ns in spaces:
            for pid in self._pids(ns):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        wait_until(
            lambda: f"the processes on {names} to die: {[self._pids(ns) for ns in spaces]}",
            lambda: not any(self._pids(ns) for ns in spaces),
            timeout=30,
            interval=0.05,
        )

    def close(self) -> None:
        """Kill what still runs in our namespaces and delete them (the veths go with them)."""
        for ns in self._made:
            for pid in self._pids(ns):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for ns in reversed(self._made):
            _sh("ip", "netns", "del", ns, check=False)
        _sh("ip", "link", "del", self._operator_link, check=False)


@dataclass
class Proc:
    """A process started on a host, with its output file."""

    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, wait: float = 15) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(wait)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def launch(net: Network, host: str, argv: list[str], log: Path, env: dict[str, str]) -> Proc:
    """Start ``argv`` on ``host``, its output to ``log``."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*net.inside(host), *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "COLUMNS": "200", **env},
            start_new_session=True,
        )
    return Proc(process, log)


def url(net: Network, replica: str) -> str:
    """Where ``replica`` serves."""
    return f"http://{net.hosts[replica].address}:{PORT}"


@dataclass
class Rig:
    """One test's view of the layout: the network, the database, both replicas (shared with the
    process's other tests), and this test's fleet folder and supervisors."""

    net: Network
    root: Path
    fleet: Path
    """This test's copy of the fleet folder: its supervisors run from it, its agents are known
    by it (``agent_processes``)."""
    db: ThrowawayCluster
    replicas: dict[str, Proc]
    supervisors: dict[str, Proc] = field(default_factory=dict)
    operator_token: str = ""
    _started: Iterator[int] = field(default_factory=itertools.count)

    def url(self, replica: str) -> str:
        return url(self.net, replica)

    @property
    def urls(self) -> list[str]:
        return [self.url(r) for r in ("mc-a", "mc-b")]

    def start(self, host: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        log = self.root / f"{host}-{next(self._started)}.log"
        return launch(self.net, host, argv, log, env or {})

    def operator(self, replica: str | None = None) -> Client:
        """The operator's client: on one replica, or on both (failing over)."""
        return Client(self.url(replica) if replica else self.urls, self.operator_token)

    def up(self, host: str) -> Proc:
        with self.operator() as op:
            token = op.do(Calls.create_token(PrincipalKind.HOST, host)).token
        proc = self.start(
            host, [*MCOS, "up", "--host", host, "-f", str(self.fleet)], {"MCOS_HOST_TOKEN": token}
        )
        self.supervisors[host] = proc
        return proc

    def leases(self) -> dict[str, LeaseOut]:
        with self.operator() as op:
            return {lease.agent: lease for lease in op.do(Calls.leases())}


def write_fleet(root: Path, rig_net: Network, store: str) -> Path:
    """The fleet file every host reads: both replicas in ``[server] urls``."""
    path = init_fleet(root, template="small")
    text = path.read_text()
    head = text[: text.index("[hosts.local]")].replace("sqlite:///state/mcos.db", store)
    a, b = (f"http://{rig_net.hosts[r].address}:{PORT}" for r in ("mc-a", "mc-b"))
    head = head.replace('url = "http://127.0.0.1:8700"', f'url = "{a}"\nurls = ["{a}", "{b}"]')
    assert f'urls = ["{a}"' in head, head
    hosts = "".join(
        f'\n[hosts.{h}]\naddress = "{rig_net.hosts[h].address}"\n' for h in ("mini", "vps")
    )
    path.write_text(head + SUPERVISOR + hosts + '\n[humans.founder]\nrole = "founder"\n' + AGENTS)
    return path


def renewed_since_granted(lease: LeaseOut) -> bool:
    """Whether ``lease`` was renewed after its grant: its holder holds it on. (An agent start
    slower than the kill margin, on a loaded machine, loses its fresh lease and starts again a
    TTL later: a test waits for this before it watches for restarts.) A grant stamps both times
    microseconds apart; the first renewal comes a third of a TTL later."""
    return lease.renewed_at - lease.acquired_at > timedelta(seconds=LEASE_TTL / 6)


FENCE = re.compile(r" --fence (\d+)$")


def agent_processes(fleet: Path) -> list[tuple[str, int, int | None]]:
    """(agent, pid, fence) of every live agent process of this fleet, read from /proc: each
    titles itself ``mcos agent NAME --fleet PATH --fence N`` with the fence it runs under."""
    from tests.supervisor.conftest import agent_pids

    found = []
    for name, pids in agent_pids(fleet).items():
        for pid in pids:
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except (OSError, UnicodeDecodeError):
                continue
            match = FENCE.search(title.strip())
            found.append((name, pid, int(match[1]) if match else None))
    return found


DATABASE = "mcos"
"""The database the replicas use, replaced by a fresh copy of :data:`TEMPLATE` for each test."""
TEMPLATE = "mcos_template"
"""Migrated, with the first operator token's record: what a first start leaves."""
REPLICAS = ("mc-a", "mc-b")
AGENT_HOSTS = ("mini", "vps")


@dataclass
class Site:
    """What the tests of one process share: the network, the database host's cluster and both
    replicas, started once.

    Building these took most of a test's time (namespaces, ``initdb``, the migrations, and a
    replica's start, seconds of imports on a loaded machine). A test gets a fresh database all
    the same: :meth:`reset` puts a copy of the template in place of the replicas' database
    (``CREATE DATABASE … TEMPLATE``; the replicas' pools and LISTEN connections, cut off, connect
    again) and undoes what the test before may have left: a pulled cable, shaping, PostgreSQL
    or a replica stopped, its supervisors and agents."""

    net: Network
    db: ThrowawayCluster
    root: Path
    fleet: Path
    """The replicas' fleet file (the tests' supervisors run from copies)."""
    replicas: dict[str, Proc] = field(default_factory=dict)
    _copies: Iterator[int] = field(default_factory=itertools.count)

    @property
    def store(self) -> str:
        """The replicas' database."""
        return self.db.url.rsplit("/", 1)[0] + "/" + DATABASE

    def admin(self, *statements: str) -> list[tuple[object, ...]]:
        """Run ``statements`` on the cluster's ``postgres`` database; the last one's rows."""
        rows: list[tuple[object, ...]] = []
        with psycopg.connect(self.db.url, autocommit=True, connect_timeout=5) as conn:
            for sql in statements:
                cursor = conn.execute(sql.encode())
                rows = cursor.fetchall() if cursor.description else []
        return rows

    def start_replicas(self, *names: str) -> None:
        """Start replicas ``names`` at once; return when every one answers ``/healthz``."""
        for name in names:
            address = self.net.hosts[name].address
            argv = [*MCOS, "server", "-f", str(self.fleet), "--host", address, "--port", str(PORT)]
            log = self.root / f"{name}-{next(self._copies)}.log"
            self.replicas[name] = launch(self.net, name, argv, log, {})
        self._wait_healthy(names)

    def _wait_healthy(self, names: Iterable[str]) -> None:
        def healthy(name: str) -> bool:
            proc = self.replicas[name]
            if proc.process.poll() is not None:
                msg = f"{name} exited {proc.process.returncode}:\n{proc.output()}"
                raise AssertionError(msg)
            try:
                return httpx.get(url(self.net, name) + "/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wanted = list(names)
        wait_until(
            f"replicas {', '.join(wanted)} to answer",
            lambda: all([healthy(name) for name in wanted]),  # noqa: C419 (ask each)
            timeout=60,
        )

    def reset(self) -> None:
        """The state a test starts from: no supervisor or agent running, every cable plugged in
        and unshaped, PostgreSQL and both replicas running, on a fresh copy of the template."""
        self.net.kill_inside(AGENT_HOSTS)
        for name in self.net.hosts:
            self.net.restore(name)
            self.net.clear_degrade(name, check=False)
        try:
            self.admin("SELECT 1")
        except psycopg.OperationalError:  # a test stopped it
            self.db.start()
        stopped = [r for r in REPLICAS if self.replicas[r].process.poll() is not None]
        if stopped:  # a test killed it
            self.net.kill_inside(stopped)
            self.start_replicas(*stopped)
        copy = f"{DATABASE}_{next(self._copies)}"
        self.admin(
            f"CREATE DATABASE {copy} TEMPLATE {TEMPLATE}",
            f"DROP DATABASE {DATABASE} WITH (FORCE)",
            f"ALTER DATABASE {copy} RENAME TO {DATABASE}",
        )
        # Each replica's LISTEN connection is back (its sends wake the other's waiters) and its
        # pool serves from the copy.
        listening = f"""SELECT count(*) FROM pg_stat_activity
            WHERE datname = '{DATABASE}' AND application_name = '{LISTENER_NAME}'
              AND query <> ''"""  # LISTEN is its first statement
        wait_until(
            "both replicas' LISTEN connections to the fresh database",
            lambda: self.admin(listening) == [(len(REPLICAS),)],
            timeout=30,
        )
        self._wait_healthy(REPLICAS)


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The network of the module docstring, its database host and both replicas, running: built
    once per test process (the `netns` xdist group keeps every namespace test on one worker, so
    one rig serves them all)."""
    _needs_root()
    net = Network()
    db: ThrowawayCluster | None = None
    made: Site | None = None
    try:
        for name, octet in (("db", 2), ("mc-a", 11), ("mc-b", 12), ("mini", 21), ("vps", 22)):
            net.add(name, octet)
        db = ThrowawayCluster(
            listen=net.hosts["db"].address, netns=net.hosts["db"].netns, clients=str(net.subnet)
        )
        db.start()
        root = tmp_path_factory.mktemp("netns")
        base = db.url.rsplit("/", 1)[0]
        made = Site(net, db, root, write_fleet(root / "fleet", net, f"{base}/{DATABASE}"))
        # The token key both replicas share (in production copied from the first one, see
        # docs/deploy.md), written before they start at once. Both migrate (one waits for the
        # other's lock) and may both write a first operator token: either serves.
        state = made.fleet.parent / "state"
        state.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(state / "server.key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as key:
            key.write(secrets.token_hex(32))
        made.admin(f"CREATE DATABASE {DATABASE}")
        made.start_replicas(*REPLICAS)
        # What a first start leaves, kept as the template of every test's database: copied
        # with no one connected to it (the replicas reconnect when it is allowed again).
        made.admin(
            f"ALTER DATABASE {DATABASE} ALLOW_CONNECTIONS false",
            f"""SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                WHERE datname = '{DATABASE}' AND pid <> pg_backend_pid()""",
            f"CREATE DATABASE {TEMPLATE} TEMPLATE {DATABASE}",
            f"ALTER DATABASE {DATABASE} ALLOW_CONNECTIONS true",
        )
        yield made
    finally:
        net.kill_inside(REPLICAS + AGENT_HOSTS)
        if made is not None:
            for proc in made.replicas.values():
                proc.process.wait(10)
        if db is not None:
            db.stop()
        net.close()


@pytest.fixture
def rig(site: Site, tmp_path: Path) -> Iterator[Rig]:
    """The layout of the module docstring, running, on a fresh database: both replicas; a test
    starts the supervisors it needs (``rig.up("mini")``), from its own fleet folder."""
    site.reset()
    fleet = write_fleet(tmp_path / "fleet", site.net, site.store)
    token = (site.fleet.parent / "state" / "operator.token").read_text().strip()
    made = Rig(site.net, tmp_path, fleet, site.db, site.replicas, operator_token=token)
    try:
        yield made
    finally:
        site.net.kill_inside(AGENT_HOSTS)
        for proc in made.supervisors.values():
            proc.process.wait(10)


def set_lease_ttl(rig: Rig, seconds: float) -> None:
    """Another ``[supervisor] lease_ttl`` for the supervisors started from now on (the replicas
    do not use it): a test that needs the production default rather than the rig's short one."""
    text = rig.fleet.read_text()
    old = f'lease_ttl = "{LEASE_TTL:g}s"'
    assert old in text, text
    rig.fleet.write_text(text.replace(old, f'lease_ttl = "{seconds:g}s"'))
