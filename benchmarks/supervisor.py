"""Supervisor figures: `mcos up` to every agent healthy, idle memory and CPU per agent, and the
wake-up of one long-poll among all the agents' idle ones.

Starts a real Mission Control (SQLite) and a real `mcos up` for (1) the business template's 23
agents on two hosts and (2) a fleet of N agents on one host (``--agents``, several sizes in one
run), all on the offline model; "healthy" means every agent's runtime has reported itself idle
to Mission Control. Then it lets the N agents idle and reads /proc: resident memory (RSS, and
PSS — RSS with shared pages divided among their sharers) per agent process, and the CPU the
agents, the supervisor (`mcos up`), its fork server and Mission Control use over the idle
window. Last, with every agent's long-poll parked in Mission Control, it sends messages one at
a time to a probe inbox (an agent no supervisor runs) that it long-polls itself, and times each
send → wake-up (the long-poll's answer arriving).

    .venv/bin/python benchmarks/supervisor.py [--agents N ...] [--quick] [--no-business]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.api.conftest import free_port
from tests.e2e.cli_helpers import MCOS, ServerProcess, start_server
from tests.supervisor.conftest import agent_pids

from mcos.client import Calls, Client
from mcos.config.scaffold import init_fleet
from mcos.domain.tokens import PrincipalKind

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PROBE = "probe"
"""An agent placed on a host no supervisor runs: the benchmark long-polls its inbox itself."""


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def many_agents(root: Path, count: int) -> Path:
    """A fleet of ``count`` offline agents on one host, each with the small template's files,
    and the probe agent on a host of its own."""
    template = init_fleet(root / "template", template="small")
    workspace = template.parent / "agents" / "gene"
    lines = [
        '[fleet]\nname = "many"\n',
        '[server]\nurl = "http://127.0.0.1:8700"\nstore = "sqlite:///state/mcos.db"\n',
        '[hosts.local]\naddress = "127.0.0.1"\n',
        '[hosts.elsewhere]\naddress = "127.0.0.2"\n',
        '[humans.founder]\nrole = "founder"\n',
    ]
    for i in [*range(count), None]:
        name = PROBE if i is None else f"agent{i:03d}"
        shutil.copytree(workspace, root / "agents" / name)
        lines.append(
            f'[agents.{name}]\nrole = "ops"\nhost = "{"elsewhere" if i is None else "local"}"\n'
            'reports_to = "founder"\nheartbeat = { interval = "30m" }\n'
        )
    path = root / "fleet.toml"
    path.write_text("\n".join(lines))
    return path


@dataclass
class Running:
    """Mission Control, the `mcos up` processes, the operator token."""

    server: ServerProcess
    ups: list[subprocess.Popen[bytes]]
    token: str
    seconds: float
    """From `mcos up` to every agent idle."""


def healthy_in(fleet: Path, count: int, hosts: tuple[str, ...] = ("local",)) -> Running:
    """Start Mission Control, then `mcos up` for each host; seconds until every agent is idle."""
    port = free_port()
    fleet.write_text(fleet.read_text().replace("127.0.0.1:8700", f"127.0.0.1:{port}"))
    server = start_server(fleet, port, fleet.parent / "server.log")
    token = (fleet.parent / "state" / "operator.token").read_text().strip()
    log = (fleet.parent / "up.log").open("wb")
    with Client(server.url, token) as client:
        hosts_tokens = {
            h: client.do(Calls.create_token(PrincipalKind.HOST, h)).token for h in hosts
        }
        started = time.monotonic()
        ups = [
            subprocess.Popen(
                [*MCOS, "up", "--host", host, "-f", str(fleet)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "MCOS_HOST_TOKEN": hosts_tokens[host]},
            )
            for host in hosts
        ]
        while True:
            agents = [a for a in client.do(Calls.agents()) if a.name != PROBE]
            idle = sum(1 for a in agents if a.state == "idle")
            if len(agents) == count and idle == count:
                break
            if any(up.poll() is not None for up in ups):
                msg = f"`mcos up` exited; see {fleet.parent / 'up.log'}"
                raise SystemExit(msg)
            if time.monotonic() - started > 300:
                msg = f"only {idle} of {count} agents became healthy within 300 s"
                raise SystemExit(msg)
            time.sleep(1)  # (listing 500 agents is work for Mission Control too)
    return Running(server, ups, token, time.monotonic() - started)


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


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def stop(running: Running) -> None:
    for up in running.ups:
        up.send_signal(signal.SIGTERM)
    for up in running.ups:
        up.wait(120)
    running.server.stop()


def wakeups(running: Running, count: int) -> list[float]:
    """Milliseconds from each send (its answer) to the probe's long-poll answering with it."""
    delays: list[float] = []
    with Client(running.server.url, running.token) as client:
        probe = client.do(Calls.create_token(PrincipalKind.AGENT, PROBE)).token
    with (
        Client(running.server.url, running.token) as sender,
        Client(running.server.url, probe) as receiver,
    ):
        for _ in range(count):
            got: list[float] = []
            parked = threading.Event()

            def poll(out: list[float] = got, ready: threading.Event = parked) -> None:
                ready.set()
                answer = receiver.do(Calls.inbox(wait=10, limit=10))
                out.append(time.perf_counter())
                if answer.deliveries:
                    receiver.do(
                        Calls.ack_many([(d.id, d.receipt or "") for d in answer.deliveries])
                    )

            thread = threading.Thread(target=poll)
            thread.start()
            parked.wait()
            time.sleep(0.05)  # the poll reaches Mission Control and parks (an idle inbox)
            sender.do(Calls.send(PROBE, "ping"))
            sent = time.perf_counter()
            thread.join()
            delays.append(max(0.0, got[0] - sent) * 1000)
    return delays


def business(tmp: Path) -> None:
    fleet = init_fleet(tmp / "business", template="business")
    running = healthy_in(fleet, 23, ("mini", "vps"))
    say(f"business fleet (23 agents, two hosts): healthy {running.seconds:.1f} s after `mcos up`")
    stop(running)


def many(tmp: Path, count: int, idle_seconds: int, probes: int) -> None:
    fleet = many_agents(tmp / f"n{count}", count)
    running = healthy_in(fleet, count)
    up = running.ups[0]
    pids = [p for ps in agent_pids(fleet).values() for p in ps]
    zygote = [p for p in _children(up.pid) if p not in pids]
    others = {"supervisor": [up.pid], "fork server": zygote, "Mission Control": [
        running.server.process.pid]}  # fmt: skip
    spent = {
        what: sum(_stat(p)[0] for p in ps) / CLOCK_TICKS
        for what, ps in {"agents": pids, **others}.items()
    }
    say(
        f"{count} offline agents: healthy {running.seconds:.1f} s after `mcos up` (target ≤ 60 s);"
        f" CPU seconds spent by then: " + ", ".join(f"{k} {v:.1f}" for k, v in spent.items())
    )
    time.sleep(10)  # let start-up settle
    before = {p: _stat(p)[0] for p in [*pids, *(p for ps in others.values() for p in ps)]}
    time.sleep(idle_seconds)
    after = {p: _stat(p) for p in before}

    def cpu(of: list[int]) -> float:
        return sum(after[p][0] - before[p] for p in of) / CLOCK_TICKS / idle_seconds

    rss = [after[p][1] / 1024 for p in pids]
    pss = [_pss(p) / 1024 for p in pids]
    zygote_pss = sum(_pss(p) for p in zygote) / 1024
    say(
        f"idle RSS per agent: median {statistics.median(rss):.1f} MiB, max {max(rss):.1f} MiB; "
        f"PSS median {statistics.median(pss):.1f} MiB, max {max(pss):.1f} MiB "
        f"(target ≤ 20 MiB); agents + fork server PSS / agents "
        f"{(sum(pss) + zygote_pss) / len(pids):.1f} MiB"
    )
    say(
        f"idle CPU of {len(pids)} agents over {idle_seconds} s: {cpu(pids):.1%} of one core "
        f"(target ≤ 10%); " + ", ".join(f"{what} {cpu(ps):.1%}" for what, ps in others.items())
    )
    delays = wakeups(running, probes)
    q = statistics.quantiles(delays, n=100, method="inclusive")
    say(
        f"send → wake-up of one long-poll among {len(pids)} idle ones ({len(delays)} sends): "
        f"p50 {q[49]:.1f} ms, p99 {q[98]:.1f} ms, max {max(delays):.1f} ms (target p99 ≤ 50 ms)"
    )
    started = time.monotonic()
    stop(running)
    say(f"{count} agents: `mcos up` stopped in {time.monotonic() - started:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--agents", type=int, nargs="+", default=[500], metavar="N",
        help="fleet sizes to measure, one run each (default: 500)",
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="idle for 15 s instead of 60 s")
    parser.add_argument("--no-business", action="store_true", help="skip the 23-agent fleet")
    parser.add_argument("--probes", type=int, default=200, help="sends timed to the probe")
    parser.add_argument("--keep", type=Path, help="work in this new folder and keep it (logs)")
    args = parser.parse_args()
    idle_seconds = 15 if args.quick else 60
    with contextlib.ExitStack() as stack:
        if args.keep is None:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mcos-bench-sup-")))
        else:
            tmp = args.keep
            tmp.mkdir(parents=True)
        if not args.no_business:
            business(tmp)
        for count in args.agents:
            many(tmp, count, idle_seconds, args.probes)


if __name__ == "__main__":
    main()
