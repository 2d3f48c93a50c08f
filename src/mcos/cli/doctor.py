"""Check everything at once: ``mcos doctor``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Optional

import typer

from mcos.cli import common
from mcos.cli.common import FleetOpt, JsonOpt, console, print_json

app = typer.Typer()

_MARKS = {"ok": ("ok  ", "green"), "warn": ("warn", "yellow"), "fail": ("FAIL", "red")}


@app.command()
def doctor(
    fleet: FleetOpt = None,
    units: Annotated[
        Optional[list[Path]],  # noqa: UP045
        typer.Option("--units", help="Unit files or folders of them to lint."),
    ] = None,
    live: Annotated[
        bool, typer.Option(help="Check each key with one free call to its provider.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Check everything: configuration, secrets, store, Mission Control, clock, units, disk."""
    from mcos.ops.doctor import diagnose  # noqa: PLC0415 (heavy; `mcos status` need not load it)

    verdicts = asyncio.run(diagnose(common.fleet_path(fleet), units=units or [], live=live))
    if as_json:
        print_json([v.as_dict() for v in verdicts])
    else:
        for v in verdicts:
            fix = f" — fix: {v.fix}" if v.fix and v.status != "ok" else ""
            line = common.styled(*_MARKS[v.status], f"{v.check}: {v.detail}{fix}")
            console.print(line, highlight=False)
    failed = sum(v.failed for v in verdicts)
    if failed:
        if not as_json:
            console.print(f"{failed} check(s) failed")
        raise typer.Exit(1)
