"""The ``mcos`` command: thin — it parses, calls Mission Control or the store, and prints.

Each command group lives in its own module with its own ``app``; this module only puts them
together, one ``add_typer`` line per module (a module without a name adds its commands at the
top level).
"""

from __future__ import annotations

from typing import Annotated

import typer

import mcos
from mcos.cli import (
    agents,
    audit,
    channels,
    dead_letters,
    doctor,
    fleetfile,
    governance,
    imports,
    launchd,
    logs,
    m365,
    messages,
    pages,
    run,
    server,
    status,
    systemd,
    tokens,
)

app = typer.Typer(
    name="mcos",
    help="Mission Control OS: run and govern a fleet of LLM agents.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"mcos {mcos.__version__}")
        raise typer.Exit


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Mission Control OS: run and govern a fleet of LLM agents."""


app.add_typer(fleetfile.app)
app.add_typer(server.app)
app.add_typer(run.app)
app.add_typer(messages.app)
app.add_typer(status.app)
app.add_typer(logs.app)
app.add_typer(doctor.app)
app.add_typer(governance.app)
app.add_typer(tokens.app)
app.add_typer(audit.app)
app.add_typer(dead_letters.app)
app.add_typer(agents.app)
app.add_typer(systemd.app)
app.add_typer(channels.app)
app.add_typer(pages.app)
app.add_typer(m365.app)
app.add_typer(launchd.app)
app.add_typer(imports.app)


def main() -> None:
    """Entry point of the ``mcos`` console script."""
    app()


__all__ = ["app", "main"]
