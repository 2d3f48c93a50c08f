"""A PostgreSQL cluster of our own (initdb + pg_ctl on a free loopback port), to restart at will.

Never the machine's shared server: a test that kills PostgreSQL gets a cluster nobody else uses.
As root, the binaries run as the ``postgres`` user (initdb refuses root).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from tests.conftest import pg_unreachable


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ThrowawayCluster:
    """A private cluster: ``start``, ``restart_immediate``, ``stop``; ``url`` to connect."""

    def __init__(
        self, *, listen: str = "127.0.0.1", netns: str | None = None, clients: str | None = None
    ) -> None:
        """``listen``: the address it serves on; ``netns``: the network namespace it runs in;
        ``clients``: a network (``10.1.2.0/24``) whose hosts may connect (trust, as loopback)."""
        bindir = _bindir()
        if bindir is None:
            pg_unreachable("the PostgreSQL server binaries (initdb, pg_ctl) are not installed")
        assert bindir is not None
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="mcos-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = _free_port()
        self.listen = listen
        self.clients = clients
        self.url = f"postgresql://postgres@{listen}:{self.port}/postgres"
        self._as: list[str] = [] if netns is None else ["ip", "netns", "exec", netns]
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
            self._as += ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        subprocess.run(
            [*self._as, str(self.bindir / args[0]), *args[1:]],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def _options(self) -> str:
        return (
            f"-c port={self.port} -c listen_addresses={self.listen} "
            f"-c unix_socket_directories={self.root} -c synchronous_commit=on -c fsync=on"
        )

    def start(self) -> None:
        """initdb (first time) and start; waits until it accepts connections."""
        if not self.data.exists():
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")
            if self.clients is not None:
                with (self.data / "pg_hba.conf").open("a") as hba:
                    hba.write(f"host all all {self.clients} trust\n")
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", self._options(),
            "-w", "-t", "30", "start",
        )  # fmt: skip

    def restart_immediate(self) -> None:
        """Crash-stop (``-m immediate``: no checkpoint, crash recovery at start) and start."""
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", self._options(),
            "-m", "immediate", "-w", "-t", "30", "restart",
        )  # fmt: skip

    def halt(self) -> None:
        """Crash-stop it (``-m immediate``) and keep its data: down until ``start`` again."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def stop(self) -> None:
        """Stop and delete the cluster."""
        with contextlib.suppress(subprocess.CalledProcessError):  # it was not running
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
