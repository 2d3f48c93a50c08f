"""Run the real `mcos` command and a real `mcos server` process, as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

MCOS = [sys.executable, "-m", "mcos"]


def mcos(
    *args: str, env: dict[str, str] | None = None, check: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``mcos ARGS`` and return its result (raising on failure when ``check``)."""
    result = subprocess.run(
        [*MCOS, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        input=stdin,
        timeout=60,
        check=False,
    )
    if check and result.returncode != 0:
        msg = f"mcos {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        raise AssertionError(msg)
    return result


def mcos_json(*args: str, env: dict[str, str] | None = None) -> Any:
    """Run ``mcos ARGS --json`` and parse what it printed."""
    return json.loads(mcos(*args, "--json", env=env).stdout)


@dataclass
class ServerProcess:
    """A running `mcos server` and the file its output goes to."""

    process: subprocess.Popen[bytes]
    url: str
    log_path: Path
    log: IO[bytes]

    def stop(self) -> None:
        """Ask it to stop (SIGTERM), then make sure it did."""
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.log.close()

    def output(self) -> str:
        """Everything the server printed so far."""
        return self.log_path.read_text(errors="replace")


def start_server(fleet: Path, port: int, log_path: Path, *extra: str) -> ServerProcess:
    """Start `mcos server -f FLEET --port PORT [EXTRA…]` and wait until /healthz answers."""
    log = log_path.open("wb")
    process = subprocess.Popen(
        [*MCOS, "server", "-f", str(fleet), "--port", str(port), *extra],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    server = ServerProcess(process, url, log_path, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            server.log.close()
            msg = f"mcos server exited {process.returncode}:\n{server.output()}"
            raise AssertionError(msg)
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    server.stop()
    msg = f"mcos server did not become healthy:\n{server.output()}"
    raise AssertionError(msg)
