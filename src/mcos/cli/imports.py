"""`mcos import`: bring a fleet over from another system (OpenClaw)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mcos.cli.common import JsonOpt, console, friendly_errors, print_json
from mcos.config import openclaw

app = typer.Typer(
    name="import", help="Import a fleet from another system: openclaw.", no_args_is_help=True
)


@app.command("openclaw")
def import_openclaw(
    path: Annotated[
        Path, typer.Argument(help="The OpenClaw install (~/.openclaw) or its openclaw.json.")
    ],
    out: Annotated[Path, typer.Option(help="Folder for fleet.toml and the workspaces.")] = Path(
        "."
    ),
    host: Annotated[str, typer.Option(help="The host every imported agent runs on.")] = "local",
    force: Annotated[
        bool, typer.Option(help="Overwrite a fleet file edited since the last import.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Write fleet.toml and each agent's workspace from an OpenClaw install; run it again and
    nothing changes. Whatever could not be mapped is listed, and kept in openclaw-import.md."""
    with friendly_errors():
        planned = openclaw.plan(path.expanduser(), host=host)
        written = openclaw.write(planned, out, force=force)
    if as_json:
        print_json(
            {
                "written": [str(f) for f in written],
                "agents": sorted(planned.fleet["agents"]),
                "unmapped": list(planned.unmapped),
                "fleet": str(out / "fleet.toml"),
            }
        )
        return
    for file in written:
        console.print(f"wrote {file}", highlight=False)
    if not written:
        console.print(f"{out}: already up to date", highlight=False)
    console.print(f"{len(planned.fleet['agents'])} agent(s) imported", highlight=False)
    if planned.unmapped:
        console.print(f"not mapped ({len(planned.unmapped)}):", style="yellow")
        for line in planned.unmapped:
            console.print(f"  - {line}", highlight=False, soft_wrap=True)
    console.print(f"check it with `mcos config check -f {out / 'fleet.toml'}`", highlight=False)
