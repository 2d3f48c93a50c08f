"""Run the real `mcos` command and a real `mcos server` process, as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
from tenacity import Retrying, retry_if_result, stop_after_delay, wait_fixed

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

    def healthy() -> bool:
        if process.poll() is not None:
            server.log.close()
            msg = f"mcos server exited {process.returncode}:\n{server.output()}"
            raise AssertionError(msg)
        try:
            return httpx.get(url + "/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    healthy_in_time = Retrying(
        retry=retry_if_result(lambda ok: not ok),
        stop=stop_after_delay(60),
        wait=wait_fixed(0.1),
        retry_error_callback=lambda _: False,
    )(healthy)
    if healthy_in_time:
        return server
    server.stop()
    msg = f"mcos server did not become healthy:\n{server.output()}"
    raise AssertionError(msg)
