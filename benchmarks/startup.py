"""What starting an `mcos` process costs: `mcos --version`, `mcos status` against a running
Mission Control, `mcos server` from exec to /healthz answering, and the imports an agent
process makes before its first request (the runtime's entry point).

Every figure is the median of ``--rounds`` runs, as wall time and as CPU time (user + system
of the child): on a shared machine the wall time follows the load, the CPU time much less.
The test suite starts hundreds of these processes, so their cost is the suite's too.

Run from the repository root: ``.venv/bin/python benchmarks/startup.py [--rounds N]
[--src DIR]``; ``--src`` measures another checkout's ``src/`` with this venv (before/after:
``git worktree add /tmp/before main`` then ``--src /tmp/before/src``).
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

MCOS = [sys.executable, "-m", "mcos"]
AGENT_IMPORTS = "import mcos.cli; from mcos.runtime.main import title; import mcos.runtime.process"


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _measure(run: Callable[[], None], rounds: int) -> tuple[float, float]:
    """Median wall seconds and median child CPU seconds of ``run``."""
    walls, cpus = [], []
    for _ in range(rounds):
        cpu, wall = _child_cpu(), time.perf_counter()
        run()
        walls.append(time.perf_counter() - wall)
        cpus.append(_child_cpu() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def _run(command: list[str], env: dict[str, str]) -> None:
    subprocess.run(command, env=env, check=True, capture_output=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _server_start(fleet: Path, env: dict[str, str]) -> None:
    """`mcos server` from exec until /healthz answers 200, then stopped (SIGTERM)."""
    port = _free_port()
    server = subprocess.Popen(
        [*MCOS, "server", "-f", str(fleet), "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise SystemExit(f"mcos server exited {server.returncode}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.02)  # a poll interval; the figure is taken when /healthz answers
        raise SystemExit("mcos server did not answer /healthz within 120 s")
    finally:
        server.terminate()
        server.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--src", type=Path, help="measure this src/ instead of the installed one")
    args = parser.parse_args()
    env = dict(os.environ)
    if args.src is not None:
        env["PYTHONPATH"] = str(args.src.resolve())
    with tempfile.TemporaryDirectory(prefix="mcos-startup-") as tmp:
        home = Path(tmp) / "fleet"
        subprocess.run([*MCOS, "init", str(home)], env=env, check=True, capture_output=True)
        fleet = home / "fleet.toml"
        port = _free_port()
        fleet.write_text(fleet.read_text().replace("127.0.0.1:8700", f"127.0.0.1:{port}"))
        rows: list[tuple[str, Callable[[], None]]] = [
            ("mcos --version", lambda: _run([*MCOS, "--version"], env)),
            ("agent runtime imports", lambda: _run([sys.executable, "-c", AGENT_IMPORTS], env)),
            ("mcos server → /healthz", lambda: _server_start(fleet, env)),
        ]
        server = subprocess.Popen(
            [*MCOS, "server", "-f", str(fleet), "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            status_env = {**env, "MCOS_FLEET": str(fleet)}
            _wait_healthy(port)
            rows.append(("mcos status", lambda: _run([*MCOS, "status"], status_env)))
            print(f"src: {args.src or 'installed'}; load average {os.getloadavg()[0]:.1f}")
            print("| process | wall (median) | CPU (median) |")
            print("|---|---:|---:|")
            for name, run in rows:
                wall, cpu = _measure(run, args.rounds)
                print(f"| {name} | {wall:.2f} s | {cpu:.2f} s |")
            print(f"(load average at the end {os.getloadavg()[0]:.1f}, {args.rounds} rounds)")
        finally:
            server.terminate()
            server.wait(30)


def _wait_healthy(port: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)  # a poll interval
    raise SystemExit("mcos server did not answer /healthz within 120 s")


if __name__ == "__main__":
    main()
