"""systemd unit files for Mission Control and a host's supervisor: ``mcos systemd``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from mcos.cli import common
from mcos.cli.common import FleetOpt, JsonOpt, console, friendly_errors, print_json
from mcos.supervisor import systemd as units

app = typer.Typer(name="systemd", help="systemd unit files: generate, check.", no_args_is_help=True)


@app.command("generate")
def systemd_generate(
    host: Annotated[str, typer.Option(help="The host whose supervisor unit to write.")],
    out: Annotated[Path, typer.Option(help="Folder to write the unit files into.")] = Path("."),
    user: Annotated[Optional[str], typer.Option(help="User= for the services.")] = None,  # noqa: UP045
    fleet: FleetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write unit files for Mission Control and this host's supervisor."""
    with friendly_errors():
        loaded = common.load(fleet)
        common.known_host(loaded, host)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for unit in units.generate(loaded, host, user=user):
            (out / unit.name).write_text(unit.text, encoding="utf-8")
            written.append(str(out / unit.name))
            if not as_json:
                console.print(f"wrote {out / unit.name}")
    if as_json:
        print_json({"written": written})


@app.command("check")
def systemd_check(
    files: Annotated[list[Path], typer.Argument(help="Unit files to lint.")],
    as_json: JsonOpt = False,
) -> None:
    """Lint unit files for what `systemd-analyze verify` lets pass (KillMode, secrets, restarts)."""
    problems = []
    for path in files:
        if not path.is_file():
            common.fail(f"{path}: no such file")
        problems += units.check(path)
    if as_json:
        print_json({"files": len(files), "problems": [p.describe() for p in problems]})
    else:
        for p in problems:
            console.print(p.describe(), style="red", highlight=False)
        if not problems:
            console.print(f"{len(files)} unit file(s): ok")
    if problems:
        raise typer.Exit(1)
