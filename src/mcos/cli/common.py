"""What every ``mcos`` command shares: finding the fleet, the server and the token; printing."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional, TypeVar

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table
from rich.text import Text
from tenacity import RetryError, retry, retry_if_result, stop_after_delay, wait_fixed

from mcos.cli import endpoint
from mcos.client import Call, Client, ServerUnreachable
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
FLEET_ENV = "MCOS_FLEET"

T = TypeVar("T")

# The options most commands share, declared once. Typer reads the annotations at run time, so
# they keep ``Optional[...]`` (UP045 would turn them into ``X | None``, which it cannot read).
FleetOpt = Annotated[
    Optional[Path],  # noqa: UP045
    typer.Option(
        "--fleet",
        "-f",
        help="Fleet file (default: $MCOS_FLEET, else ./fleet.toml, else ./mcos-demo/fleet.toml "
        "— the one `mcos run` creates).",
    ),
]
UrlOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(
        "--url",
        help="Mission Control URL (default: $MCOS_URL, else the address a running `mcos server` "
        "recorded in the fleet's state folder, else the fleet file's [server] url).",
    ),
]
TokenOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(
        "--token",
        help="Bearer token (default: $MCOS_TOKEN, else the operator token in the fleet's state "
        "folder).",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


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
    env = os.environ.get(FLEET_ENV)
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
        urls = urls or endpoint.server_urls(loaded)
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


def fetch(url: str | None, token: str | None, fleet: Path | None, call: Call[T]) -> T:
    """Make one call to Mission Control, its failures turned into one clear line."""
    with friendly_errors(), connect(url, token, fleet) as client:
        return client.do(call)


def show(value: T, as_json: bool, for_people: Callable[[T], None]) -> None:
    """Print ``value`` as JSON for scripts, else the way ``for_people`` prints it."""
    if as_json:
        print_json(value)
    else:
        for_people(value)


def poll(read: Callable[[], T], done: Callable[[T], bool], wait: float) -> tuple[T, bool]:
    """``read()`` until ``done`` says so, once a second for up to ``wait`` seconds (once when
    ``wait`` is 0): what was read last, and whether it was done."""
    if wait <= 0:
        value = read()
        return value, done(value)

    @retry(
        stop=stop_after_delay(wait),
        wait=wait_fixed(1),
        retry=retry_if_result(lambda v: not done(v)),
    )
    def attempt() -> T:
        return read()

    try:
        return attempt(), True
    except RetryError as e:
        last: T = e.last_attempt.result()
        return last, False


WaitOpt = Annotated[
    float,
    typer.Option(help="Wait up to this many seconds for something to show (exit 1 if nothing)."),
]


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


def known_host(fleet: Fleet, host: str) -> None:
    """Stop with a clear line when ``host`` is not one of the fleet file's hosts."""
    if host not in fleet.hosts:
        fail(f"no host {host!r} in {fleet.path} (known: {', '.join(fleet.hosts)})")


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


def mcos_command() -> str:
    """How to run this very ``mcos`` from a shell in the current folder, as it is typed:
    ``mcos`` when that is the one on PATH, else its path (``.venv/bin/mcos`` after
    ``make run``, which does not put the virtualenv on PATH)."""
    ours = Path(sys.executable).parent / "mcos"
    if not ours.exists():
        return f"{sys.executable} -m mcos"
    on_path = shutil.which("mcos")
    if on_path is not None and Path(on_path).resolve() == ours.resolve():
        return "mcos"
    return str(shown_path(ours))


def shown_path(path: Path) -> Path:
    """``path`` relative to the current folder when it lies below it, else absolute."""
    absolute = path.absolute()
    try:
        return absolute.relative_to(Path.cwd())
    except ValueError:
        return absolute
