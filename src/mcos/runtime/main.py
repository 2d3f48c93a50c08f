"""``python -m mcos.runtime.main NAME``: one agent process, as a supervisor starts it.

Kept apart from the ``mcos`` command so an agent process imports only what an agent needs
(no CLI, no server): it starts faster and holds less memory. The supervisor passes the token,
the fencing token and the liveness socket through the environment.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from setproctitle import setproctitle

from mcos.config import load_fleet
from mcos.exceptions import EX_CONFIG, ConfigError, ConfigErrors
from mcos.logs import configure as configure_logging
from mcos.runtime.process import run_agent
from mcos.supervisor.portable import watch_parent_from_env

TOKEN_ENV = "MCOS_TOKEN"  # noqa: S105 (a variable name)
FENCE_ENV = "MCOS_FENCE"
LIVENESS_ENV = "MCOS_LIVENESS_FD"
LIVENESS_EVERY_ENV = "MCOS_LIVENESS_EVERY"
"""Seconds between the agent's beats on its liveness socket (its supervisor's watchdog / 6)."""


def title(name: str, fleet: object, fence: object = None) -> None:
    """What ps, top and /proc show: which agent of which fleet this process is, and under
    which fencing token it runs (only in an agent's own process, never in a host that calls
    the runtime in-process)."""
    setproctitle(f"mcos agent {name} --fleet {fleet}" + (f" --fence {fence}" if fence else ""))


def main(argv: list[str] | None = None) -> int:
    """Parse, load the fleet, run the agent; the exit code."""
    parser = argparse.ArgumentParser(prog="mcos-agent", description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("--fleet", "-f", default=os.environ.get("MCOS_FLEET", "fleet.toml"))
    args = parser.parse_args(argv)
    watch_parent_from_env()  # portable path: die with the supervisor (Linux: PR_SET_PDEATHSIG)
    configure_logging(agent=args.name)
    try:
        fleet = load_fleet(args.fleet)
    except (ConfigError, ConfigErrors) as e:
        sys.stderr.write(f"error: {e.message}\n")
        return EX_CONFIG
    if args.name not in fleet.agents:
        sys.stderr.write(f"error: {fleet.path}: no agent {args.name!r}\n")
        return EX_CONFIG
    title(args.name, fleet.path, os.environ.get(FENCE_ENV))
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        sys.stderr.write(f"error: no token: set {TOKEN_ENV} to an agent token for {args.name}\n")
        return EX_CONFIG
    fence = os.environ.get(FENCE_ENV)
    liveness = os.environ.get(LIVENESS_ENV)
    every = os.environ.get(LIVENESS_EVERY_ENV)
    return asyncio.run(
        run_agent(
            fleet,
            args.name,
            token,
            fence=int(fence) if fence else None,
            liveness_fd=int(liveness) if liveness else None,
            liveness_every=float(every) if every else 2.0,
            own_process=True,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
