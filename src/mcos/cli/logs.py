"""An agent's, the server's or a supervisor's log file: ``mcos logs NAME [-f] [--json]``.

Log lines may be JSON objects (structlog: ``timestamp``, ``level``, ``event``, ``logger``,
``agent`` and any other keys) or plain text; JSON lines are laid out for people, plain lines
are printed as they are, so the command reads old and new log files alike.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.text import Text

from mcos.cli import common, follow
from mcos.cli.common import console, friendly_errors
from mcos.config import Fleet

app = typer.Typer()

_LEVEL_STYLES = {"debug": "dim", "info": "", "warning": "yellow", "error": "bold red",
                 "critical": "bold red"}  # fmt: skip
_SHOWN_KEYS = ("timestamp", "level", "event", "logger", "agent")


def log_dir(fleet: Fleet) -> Path:
    """Where `mcos run` and the supervisors write each process's output."""
    return fleet.state_dir / "logs"


def log_file(fleet: Fleet, name: str) -> Path:  # noqa: RET503 (fail() does not return)
    """The log of ``name``: an agent of the fleet, ``server``, ``supervisor`` (the newest
    ``supervisor-HOST.log``) or any other ``NAME.log`` in the logs folder.
    Unknown names stop with the ones there are."""
    folder = log_dir(fleet)
    path = folder / f"{name}.log"
    if path.is_file():
        return path
    if name == "supervisor" and folder.is_dir():  # one per host set: supervisor-HOST.log
        hosts = sorted(folder.glob("supervisor-*.log"), key=lambda p: p.stat().st_mtime)
        if hosts:
            return hosts[-1]
    present = sorted(p.stem for p in folder.glob("*.log")) if folder.is_dir() else []
    if name in fleet.agents or name in ("server", "supervisor"):
        common.fail(
            f"{path}: no log yet ({name} has not run here; logs there: "
            f"{', '.join(present) or 'none'})"
        )
    known = sorted({*fleet.agents, "server", "supervisor", *present})
    common.fail(f"no log {name!r} in {folder} (known: {', '.join(known)})")


def parse(line: str) -> dict[str, Any] | None:
    """The JSON object a log line holds; None for a plain-text line."""
    if not line.startswith("{"):
        return None
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def pretty(record: dict[str, Any]) -> Text:
    """One structured log record for people: time, level, who, event, then the other keys."""
    level = str(record.get("level", "")).lower()
    who = record.get("agent") or record.get("logger") or ""
    stamp = str(record.get("timestamp", ""))[:19].replace("T", " ")
    text = Text.assemble(
        (f"{stamp} ", "dim"),
        (f"{level.upper() or '-':<7} ", _LEVEL_STYLES.get(level, "")),
        (f"{who}: " if who else "", "cyan"),
        str(record.get("event", "")),
    )
    extra = {k: v for k, v in record.items() if k not in _SHOWN_KEYS}
    for key, value in extra.items():
        shown = value if isinstance(value, str) else json.dumps(value, default=str)
        text.append(f" {key}=", style="dim")
        text.append(shown)
    return text


@app.command()
def logs(
    name: Annotated[str, typer.Argument(help="An agent, `server` or `supervisor`.")],
    follow_: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines.")
    ] = False,
    lines: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option("--lines", "-n", min=0, help="Only the last N lines (default: all)."),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="One JSON object a line: the log's own objects as written; a plain-text line "
            'becomes {"event": LINE, "plain": true}.',
        ),
    ] = False,
    fleet: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(
            "--fleet", help="Fleet file (found as for every command; -f is --follow here)."
        ),
    ] = None,
) -> None:
    """Print a log file of the fleet (STATE/logs/NAME.log); -f follows it."""
    with friendly_errors():
        path = log_file(common.load(fleet), name)
    for line in follow.lines(path, follow=follow_, last=lines):
        record = parse(line)
        if as_json:
            raw = line if record is not None else json.dumps({"event": line, "plain": True})
            sys.stdout.write(raw + "\n")
            sys.stdout.flush()
        elif record is None:
            console.print(Text(line), highlight=False, soft_wrap=True)
        else:
            console.print(pretty(record), highlight=False, soft_wrap=True)
