"""Where Mission Control listens: `mcos server` records it, every other command reads it.

`mcos server --port 8701` used to leave the CLI knocking on the fleet file's port. The server
now writes the address it binds to ``STATE/server.json`` (next to the operator token) while it
runs; the CLI prefers that record to the fleet file's ``[server] url`` as long as the process
that wrote it is alive. ``--url`` and ``$MCOS_URL`` still come first.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mcos.config import Fleet

ADDRESS_FILE = "server.json"
_ANY = {"", "0.0.0.0", "::"}  # noqa: S104 (names of "every address", only compared)


def connect_url(host: str, port: int) -> str:
    """The URL a client on this machine uses to reach a server bound to ``host:port``."""
    if host in _ANY:
        host = "127.0.0.1" if host != "::" else "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def address_file(fleet: Fleet) -> Path:
    """The record of a running server's address for this fleet."""
    return fleet.state_dir / ADDRESS_FILE


@contextmanager
def recorded(fleet: Fleet, host: str, port: int) -> Iterator[Path]:
    """Record this process as the fleet's server at ``host:port`` while the block runs."""
    path = address_file(fleet)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    record = {"url": connect_url(host, port), "host": host, "port": port, "pid": os.getpid()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(record) + "\n", encoding="utf-8")
    tmp.replace(path)

    def forget() -> None:
        # Only our own record: a second server started since then keeps its own.
        if _read(path).get("pid") == os.getpid():
            path.unlink(missing_ok=True)

    # uvicorn ends a SIGTERM-ed server by raising the signal again once it has shut down, and
    # the default action kills the process before any ``finally`` runs: forget the record
    # first, then let the signal do what it would have done.
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: object) -> None:
        forget()
        signal.signal(signum, previous)
        signal.raise_signal(signum)

    signal.signal(signal.SIGTERM, on_term)
    try:
        yield path
    finally:
        signal.signal(signal.SIGTERM, previous)
        forget()


def _read(path: Path) -> dict[str, object]:
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            return data
    return {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def running_url(fleet: Fleet) -> str | None:
    """The URL a live `mcos server` of this fleet recorded; None if none is running."""
    data = _read(address_file(fleet))
    url, pid = data.get("url"), data.get("pid")
    if isinstance(url, str) and isinstance(pid, int) and _alive(pid):
        return url
    return None


def server_url(fleet: Fleet) -> str:
    """Where to reach this fleet's Mission Control: the running server's record, else the
    fleet file's ``[server] url``."""
    return running_url(fleet) or fleet.server.url


def server_urls(fleet: Fleet) -> list[str]:
    """Every replica to try, in order: the running server's record, else the fleet file's
    ``[server] urls`` (or its one ``url``)."""
    running = running_url(fleet)
    return [running] if running else list(fleet.server.endpoints)
