"""What every ``mcos`` command shares: finding the fleet, the server and the token; printing."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table
from rich.text import Text

from mcos.client import Client, ServerUnreachable
from mcos.config import Fleet, load_fleet
from mcos.exceptions import EX_CONFIG, ConfigError, ConfigErrors, McosError

# Piped output (scripts, logs, CI) gets whole lines rather than an 80-column terminal's cuts.
_WIDTH = None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", "200"))
# No markup: what the CLI prints is mostly someone else's text (the fleet file, the server's
# refusals, message subjects, a unit file's [Service]), and Rich would take its brackets for
# markup and drop them ("needs 1 of [role:orchestrator, human]" printed as "needs 1 of ").
# Style with ``styled()`` or ``style=``, never with markup in the string.
console = Console(width=_WIDTH, markup=False)
err_console = Console(stderr=True, width=_WIDTH, markup=False)

EX_UNAVAILABLE = 69
DEMO_DIR = "mcos-demo"
OPERATOR_TOKEN_FILE = "operator.token"  # noqa: S105 (a file name)
HOST_TOKEN_ENV = "MCOS_HOST_TOKEN"  # noqa: S105 (a variable name)
HOSTS_DIR = "hosts"


def styled(label: str, style: str, text: str = "") -> Text:
    """``label`` in ``style``, then ``text`` printed as written (brackets and all)."""
    return Text.assemble((label, style), f" {text}" if text else "")


def fail(message: str, code: int = 1) -> NoReturn:
    """Print an error for a person and exit with ``code``."""
    err_console.print(styled("error:", "bold red", message), highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def friendly_errors() -> Iterator[None]:
    """Turn mcos errors into one clear line and an exit code, never a traceback."""
    try:
        yield
    except ConfigErrors as e:
        for error in e.errors:
            err_console.print(
                styled("error:", "bold red", error.message), highlight=False, soft_wrap=True
            )
        raise typer.Exit(EX_CONFIG) from None
    except ConfigError as e:
        fail(e.message, EX_CONFIG)
    except ServerUnreachable as e:
        fail(e.message, EX_UNAVAILABLE)
    except McosError as e:
        fail(e.message)


def fleet_path(explicit: Path | None) -> Path:
    """The fleet file: ``--fleet``, ``$MCOS_FLEET``, ``./fleet.toml``, then the demo's."""
    if explicit is not None:
        return explicit
    env = os.environ.get("MCOS_FLEET")
    if env:
        return Path(env)
    for candidate in (Path("fleet.toml"), Path(DEMO_DIR) / "fleet.toml"):
        if candidate.exists():
            return candidate
    return Path("fleet.toml")


def load(explicit: Path | None) -> Fleet:
    """Load and validate the fleet file."""
    return load_fleet(fleet_path(explicit))


def connect(url: str | None, token: str | None, fleet: Path | None) -> Client:
    """A client for Mission Control: URL and token from flags, environment or the fleet."""
    url = url or os.environ.get("MCOS_URL")
    token = token or os.environ.get("MCOS_TOKEN")
    # --url / MCOS_URL may list replicas comma-separated; the fleet's [server] urls otherwise.
    urls = [u for u in (url or "").split(",") if u.strip()]
    if not urls or token is None:
        loaded = load(fleet)
        urls = urls or loaded.server.endpoints
        if token is None:
            token_file = loaded.state_dir / OPERATOR_TOKEN_FILE
            if token_file.exists():
                token = token_file.read_text().strip()
    if not token:
        fail(
            "no token: pass --token, set MCOS_TOKEN, or start `mcos server` once so it writes "
            "the first operator token to the fleet's state folder"
        )
    # Run from inside a supervised agent (a sidecar, a tool): its instance's fence goes along,
    # or Mission Control refuses the agent's writes once it was leased.
    fence = os.environ.get("MCOS_FENCE", "").strip()
    return Client(urls, token, fence=int(fence) if fence.isdigit() else None)


def print_json(value: Any) -> None:
    """Print models, lists of models or plain data as JSON for scripts."""

    def plain(v: Any) -> Any:
        if isinstance(v, BaseModel):
            return v.model_dump(mode="json")
        if isinstance(v, list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    sys.stdout.write(json.dumps(plain(value), indent=2, default=str) + "\n")


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print a table for people."""
    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*("" if v is None else str(v) for v in r))
    console.print(t)


def age(then: datetime | None, now: datetime) -> str:
    """``3m ago``-style age of ``then`` on the server's clock."""
    if then is None:
        return "never"
    seconds = int((now - then).total_seconds())
    if seconds < 0:
        return "in the future?"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def host_token_file(fleet: Fleet, host: str) -> Path:
    """Where a host's supervisor token is kept: ``STATE/hosts/HOST.token`` (mode 0600)."""
    return fleet.state_dir / HOSTS_DIR / f"{host}.token"


def read_host_token(path: Path) -> str | None:
    """The token in a host token file; None if there is none. Refused (exit 78) when others
    than its owner may read it: a supervisor's token is not for the agents' eyes."""
    if not path.exists():
        return None
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        fail(
            f"{path}: mode {mode:04o} lets others read the host token; chmod 600 {path}",
            EX_CONFIG,
        )
    return path.read_text().strip() or None


def write_secret(path: Path, secret: str) -> None:
    """Write ``secret`` to ``path`` (folder 0700, file 0600), replacing what was there."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    tmp.replace(path)
