"""The fleet file and the store's schema: ``mcos init``, ``mcos config check``, ``mcos db``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Optional

import typer

from mcos.cli import common
from mcos.cli.common import FleetOpt, JsonOpt, console, friendly_errors, print_json
from mcos.config import check_fleet
from mcos.config.scaffold import init_fleet
from mcos.store import make_store

app = typer.Typer()
config_app = typer.Typer(name="config", help="The fleet file.", no_args_is_help=True)
db_app = typer.Typer(name="db", help="The store's schema.", no_args_is_help=True)
app.add_typer(config_app)
app.add_typer(db_app)


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Folder to create the fleet in.")],
    template: Annotated[
        str,
        typer.Option(
            help="small: orchestrator, ops, security. business: the field report's 12-agent fleet."
        ),
    ] = "small",
    force: Annotated[
        bool, typer.Option(help="Overwrite an existing fleet.toml and the workspace files.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Write a working fleet from a template, with a workspace folder per agent."""
    with friendly_errors():
        path = init_fleet(directory, template=template, force=force)
    if as_json:
        print_json({"fleet": str(path), "template": template})
        return
    console.print(f"wrote {path}; check it with `mcos config check -f {path}`")


@config_app.command("check")
def config_check(fleet: FleetOpt = None, as_json: JsonOpt = False) -> None:
    """Validate the fleet file; every problem is named with its key path."""
    path = common.fleet_path(fleet)
    with friendly_errors():
        warnings = check_fleet(path)
    if as_json:
        print_json({"fleet": str(path), "ok": True, "warnings": warnings})
        return
    for w in warnings:
        console.print(common.styled("warning:", "yellow", w))
    console.print(f"{path}: ok")


async def upgrade(url: str) -> list[int]:
    """Apply the store's pending migrations; the versions applied."""
    store = make_store(url)
    try:
        return await store.upgrade()
    finally:
        await store.close()


def say_migrated(applied: list[int]) -> None:
    """One line when a start-up migrated the store."""
    if applied:
        console.print(f"store migrated to schema version {applied[-1]}")


@db_app.command("upgrade")
def db_upgrade(
    fleet: FleetOpt = None,
    store: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--store", help="Store URL (default: the fleet file's server.store)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Apply pending schema migrations."""
    with friendly_errors():
        url = store or common.load(fleet).store_url  # relative SQLite paths: to the fleet file
        applied = asyncio.run(upgrade(url))
    if as_json:
        print_json({"applied": applied})
    elif applied:
        console.print(f"applied migrations {', '.join(map(str, applied))}")
    else:
        console.print("already at the latest schema version")
