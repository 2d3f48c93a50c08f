"""Supervisor figures: `mcos up` to every agent healthy, idle memory and CPU per agent.

Starts a real Mission Control (SQLite) and a real `mcos up` per host for (1) the business
template's 23 agents on two hosts and (2) a fleet of 100 agents, all on the offline model;
"healthy" means every agent's runtime has reported itself idle to Mission Control. Then it lets
the 100 agents idle and reads /proc: resident memory (RSS, and PSS — RSS with shared pages
divided among their sharers) per agent process, and the CPU all agent processes use over 60
seconds.

    .venv/bin/python benchmarks/supervisor.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.api.conftest import free_port
from tests.e2e.cli_helpers import MCOS, start_server
from tests.supervisor.conftest import agent_pids

from mcos.client import Calls, Client
from mcos.config.scaffold import init_fleet

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def many_agents(root: Path, count: int) -> Path:
    """A fleet of ``count`` offline agents on one host, each with the small template's files."""
    template = init_fleet(root / "template", template="small")
    workspace = template.parent / "agents" / "gene"
    lines = [
        '[fleet]\nname = "hundred"\n',
        '[server]\nurl = "http://127.0.0.1:8700"\nstore = "sqlite:///state/mcos.db"\n',
        '[hosts.local]\naddress = "127.0.0.1"\n',
        '[humans.founder]\nrole = "founder"\n',
    ]
    for i in range(count):
        name = f"agent{i:03d}"
        shutil.copytree(workspace, root / "agents" / name)
        lines.append(
            f'[agents.{name}]\nrole = "ops"\nhost = "local"\nreports_to = "founder"\n'
            'heartbeat = { interval = "30m" }\n'
        )
    path = root / "fleet.toml"
    path.write_text("\n".join(lines))
    return path


def healthy_in(
    fleet: Path, count: int, hosts: tuple[str, ...] = ("local",)
) -> tuple[float, list[subprocess.Popen[bytes]], object]:
    """Start Mission Control, then `mcos up` for each host; seconds until every agent is idle."""
    port = free_port()
    fleet.write_text(fleet.read_text().replace("127.0.0.1:8700", f"127.0.0.1:{port}"))
    server = start_server(fleet, port, fleet.parent / "server.log")
    token = (fleet.parent / "state" / "operator.token").read_text().strip()
    log = (fleet.parent / "up.log").open("wb")
    started = time.monotonic()
    ups = [
        subprocess.Popen(
            [*MCOS, "up", "--host", host, "-f", str(fleet)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "MCOS_TOKEN": token},
        )
        for host in hosts
    ]
    with Client(server.url, token) as client:
        while True:
            agents = client.do(Calls.agents())
            if len(agents) == count and all(a.state == "idle" for a in agents):
                break
            if time.monotonic() - started > 300:
                msg = "agents did not all become healthy within 300 s"
                raise SystemExit(msg)
            time.sleep(0.2)
    return time.monotonic() - started, ups, server


def _stat(pid: int) -> tuple[int, int]:
    """(utime + stime in ticks, RSS in kB) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE") // 1024
    return ticks, rss


def _pss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def stop(ups: list[subprocess.Popen[bytes]], server: object) -> None:
    for up in ups:
        up.send_signal(signal.SIGTERM)
    for up in ups:
        up.wait(60)
    server.stop()  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="idle for 15 s instead of 60 s")
    args = parser.parse_args()
    idle_seconds = 15 if args.quick else 60
    with tempfile.TemporaryDirectory(prefix="mcos-bench-sup-") as tmp:
        business = init_fleet(Path(tmp) / "business", template="business")
        seconds, ups, server = healthy_in(business, 23, ("mini", "vps"))
        say(f"business fleet (23 agents, two hosts): healthy {seconds:.1f} s after `mcos up`")
        stop(ups, server)

        fleet = many_agents(Path(tmp) / "hundred", 100)
        seconds, ups, server = healthy_in(fleet, 100)
        up = ups[0]
        say(f"100 offline agents: healthy {seconds:.1f} s after `mcos up` (target ≤ 20 s)")
        time.sleep(5)  # let start-up settle
        pids = [p for ps in agent_pids(fleet).values() for p in ps]
        before = {p: _stat(p)[0] for p in pids}
        supervisor_before = _stat(up.pid)[0]
        time.sleep(idle_seconds)
        after = {p: _stat(p) for p in pids}
        cpu = sum(after[p][0] - before[p] for p in pids) / CLOCK_TICKS / idle_seconds
        supervisor_cpu = (_stat(up.pid)[0] - supervisor_before) / CLOCK_TICKS / idle_seconds
        rss = [after[p][1] / 1024 for p in pids]
        pss = [_pss(p) / 1024 for p in pids]
        say(
            f"idle RSS per agent: median {statistics.median(rss):.1f} MB, max {max(rss):.1f} MB "
            f"(target ≤ 60 MB); PSS median {statistics.median(pss):.1f} MB"
        )
        say(
            f"idle CPU of {len(pids)} agents over {idle_seconds} s: {cpu:.1%} of one core "
            f"(target ≤ 5%); the supervisor: {supervisor_cpu:.1%}"
        )
        stop(ups, server)


if __name__ == "__main__":
    main()
