"""systemd: readiness and watchdog notifications, unit files written right, and a lint for
the mistakes ``systemd-analyze verify`` lets through.

In the field a unit with the default ``KillMode=process`` left an old child alive across a
restart; two instances then polled one Telegram token. The generated units and the lint make
that configuration impossible to ship unnoticed.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mcos.config.models import Fleet


class Notifier:
    """``sd_notify`` over ``$NOTIFY_SOCKET`` (a few lines over a datagram socket); a no-op
    outside systemd."""

    def __init__(self, address: str | None, watchdog_usec: int | None) -> None:
        self.address = address
        self.every = None if not watchdog_usec else watchdog_usec / 2_000_000
        self._last = 0.0

    @classmethod
    def from_env(cls) -> Notifier:
        """From the variables systemd sets for ``Type=notify`` services."""
        usec = os.environ.get("WATCHDOG_USEC")
        return cls(os.environ.get("NOTIFY_SOCKET"), int(usec) if usec else None)

    def send(self, state: str) -> None:
        """Send one notification; errors are ignored (systemd may be gone at shutdown)."""
        if not self.address:
            return
        address = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.connect(address)
                s.sendall(state.encode())
        except OSError:
            return

    def ready(self) -> None:
        """Start-up is done."""
        self.send("READY=1")

    def stopping(self) -> None:
        """Shutting down."""
        self.send("STOPPING=1")

    def watchdog(self) -> None:
        """Alive: at most every half watchdog period."""
        now = time.monotonic()
        if self.every is not None and now - self._last >= self.every:
            self._last = now
            self.send("WATCHDOG=1")


@dataclass(frozen=True)
class Unit:
    """A unit file to write."""

    name: str
    text: str


def _exec(*args: str) -> str:
    return " ".join(shlex.quote(a) for a in (sys.executable, "-P", "-m", "mcos", *args))


def _common(user: str | None, workdir: Path) -> str:
    lines = [
        "KillMode=control-group",
        "KillSignal=SIGTERM",
        "TimeoutStopSec=30",
        "Restart=on-failure",
        "RestartSec=2",
        "RestartPreventExitStatus=78",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        f"WorkingDirectory={workdir}",
    ]
    if user:
        lines.insert(0, f"User={user}")
    return "\n".join(lines)


def generate(
    fleet: Fleet, host: str, *, user: str | None = None, watchdog_sec: int = 30
) -> list[Unit]:
    """Units for Mission Control and for the supervisor of ``host``.

    Keys are loaded through ``LoadCredential=`` (the ``credential:NAME`` references), never
    ``Environment=``, which any local user can read with ``systemctl show``: into Mission
    Control's unit for the agents whose calls go through its gateway, into the supervisor's
    for the agents of ``host`` that call their model directly.
    """
    workdir = fleet.base_dir
    slug = re.sub(r"[^a-z0-9-]", "-", fleet.fleet.name.lower())

    def load_credentials(through_gateway: bool, on_host: str | None) -> str:
        names = sorted(
            {
                a.key.split(":", 1)[1]
                for a in fleet.agents.values()
                if a.key
                and a.key.startswith("credential:")
                and a.model.through_gateway == through_gateway
                and on_host in (None, a.host)
            }
        )
        return "\n".join(f"LoadCredential={c}:/etc/mcos/credentials/{slug}/{c}" for c in names)

    load = load_credentials(through_gateway=False, on_host=host)
    server_load = load_credentials(through_gateway=True, on_host=None)
    start_limits = "StartLimitIntervalSec=300\nStartLimitBurst=5"
    server = Unit(
        f"mcos-{slug}-server.service",
        f"""[Unit]
Description=mcos Mission Control ({fleet.fleet.name})
After=network-online.target postgresql.service
Wants=network-online.target
{start_limits}

[Service]
Type=simple
ExecStart={_exec("server", "--fleet", str(fleet.path))}
{_common(user, workdir)}
{server_load}

[Install]
WantedBy=multi-user.target
""".replace("\n\n\n", "\n\n"),
    )
    supervisor = Unit(
        f"mcos-{slug}-{host}.service",
        f"""[Unit]
Description=mcos supervisor for host {host} ({fleet.fleet.name})
After=network-online.target
Wants=network-online.target
{start_limits}

[Service]
Type=notify
NotifyAccess=main
WatchdogSec={watchdog_sec}
ExecStart={_exec("up", "--host", host, "--fleet", str(fleet.path))}
{_common(user, workdir)}
{load}

[Install]
WantedBy=multi-user.target
""".replace("\n\n\n", "\n\n"),
    )
    return [server, supervisor]


@dataclass(frozen=True)
class Finding:
    """One problem in a unit file: where, what, and the fix."""

    file: str
    line: int
    problem: str

    def describe(self) -> str:
        """``FILE:LINE: problem``."""
        return f"{self.file}:{self.line}: {self.problem}"


def _entries(text: str) -> list[tuple[int, str, str, str]]:
    """(line, section, key, value) of each assignment."""
    found = []
    section = ""
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        if sep:
            found.append((number, section, key.strip(), value.strip()))
    return found


def check(path: Path) -> list[Finding]:
    """What ``systemd-analyze verify`` accepts but breaks a fleet."""
    text = path.read_text(encoding="utf-8")
    entries = _entries(text)
    file = str(path)
    out: list[Finding] = []
    service = [(n, k, v) for n, s, k, v in entries if s == "Service"]
    keys = {k: (n, v) for n, k, v in service}
    for n, k, v in service:
        if k == "KillMode" and v in ("process", "none"):
            out.append(
                Finding(file, n, f"KillMode={v} leaves child processes alive across a restart "
                        "(duplicate pollers); use KillMode=control-group")
            )  # fmt: skip
        if k == "Environment":
            for assignment in shlex.split(v):
                name, _, value = assignment.partition("=")
                if not value.strip():
                    out.append(
                        Finding(file, n, f"Environment= sets {name} to an empty value: the "
                                "service starts with a missing secret; fix or remove it")
                    )  # fmt: skip
                elif re.search(r"(KEY|TOKEN|SECRET|PASSWORD)", name, re.IGNORECASE):
                    out.append(
                        Finding(file, n, f"Environment= carries the secret {name}: any local "
                                "user can read it with systemctl show; use LoadCredential=")
                    )  # fmt: skip
    if "[Service]" in text:
        if "Restart" not in keys or keys["Restart"][1] == "no":
            line = keys["Restart"][0] if "Restart" in keys else 1
            out.append(
                Finding(file, line, "no restart policy: a crash leaves the service down; "
                        "add Restart=on-failure")
            )  # fmt: skip
        if "RestartPreventExitStatus" not in keys and "Restart" in keys:
            out.append(
                Finding(file, keys["Restart"][0], "a configuration error (exit 78) would be "
                        "restarted in a loop; add RestartPreventExitStatus=78")
            )  # fmt: skip
        if keys.get("Type", (0, ""))[1] == "notify" and "WatchdogSec" not in keys:
            out.append(
                Finding(file, keys["Type"][0], "Type=notify without WatchdogSec: a hung "
                        "supervisor is never restarted")
            )  # fmt: skip
    return out
