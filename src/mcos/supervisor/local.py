"""`mcos run`: Mission Control as a child process, stopped cleanly; the agents are the
supervisor's.

Each process runs in its own session (process group), dies when this launcher dies (Linux
``PR_SET_PDEATHSIG``; elsewhere it watches its parent: :mod:`mcos.supervisor.portable`), and
is stopped by signalling its whole group — SIGTERM, a grace period, then SIGKILL — so no child
outlives a stop.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from mcos.client import Client
from mcos.config.models import Fleet
from mcos.exceptions import McosError
from mcos.supervisor.portable import child_env, die_with_parent, native

OPERATOR_TOKEN_FILE = "operator.token"  # noqa: S105 (a file name)


@dataclass
class Child:
    """One process we started."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self, grace: float) -> int | None:
        """SIGTERM the process group, wait ``grace`` seconds, then SIGKILL it."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        # Whatever the group leader left behind goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        return self.process.returncode


def spawn(name: str, argv: list[str], log: Path, env: dict[str, str] | None = None) -> Child:
    """Start ``argv`` in its own session with output appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        process = subprocess.Popen(  # noqa: S603 (our own interpreter and arguments)
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent if native() else None,  # noqa: PLW1509 (only prctl)
            env={**os.environ, **child_env(), **(env or {})},
        )
    return Child(name, process, log)


@dataclass
class LocalFleet:
    """Mission Control of one fleet file as a child process of this one (`mcos run`)."""

    fleet: Fleet
    grace: float = 25.0
    say: Callable[[str], None] = print
    server: Child | None = None

    @property
    def logs(self) -> Path:
        """Where each process's output goes."""
        return self.fleet.state_dir / "logs"

    def _mcos(self, *args: str) -> list[str]:
        # -P: a stray module in the working directory (a timeit.py) must not shadow the stdlib.
        return [sys.executable, "-P", "-m", "mcos", *args, "--fleet", str(self.fleet.path)]

    def start_server(self, timeout: float = 60) -> None:
        """Start Mission Control and wait until it answers /healthz."""
        self.server = spawn("server", self._mcos("server"), self.logs / "server.log")
        deadline = time.monotonic() + timeout
        url = self.fleet.server.url.rstrip("/") + "/healthz"
        while time.monotonic() < deadline:
            if self.server.process.poll() is not None:
                tail = self.server.log.read_text(errors="replace")[-2000:]
                msg = f"Mission Control exited with {self.server.process.returncode}:\n{tail}"
                raise McosError(msg)
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        msg = f"Mission Control did not answer {url} within {timeout:g}s (see {self.server.log})"
        raise McosError(msg)

    def operator(self) -> Client:
        """A client with the first operator token the server wrote."""
        token = (self.fleet.state_dir / OPERATOR_TOKEN_FILE).read_text().strip()
        return Client(self.fleet.server.endpoints, token)

    def stop(self) -> None:
        """Stop Mission Control (its process group: SIGTERM, grace, SIGKILL)."""
        if self.server is not None:
            self.server.stop(self.grace)
