"""`mcos launchd`: property lists for macOS hosts (generate, check) and the exit-78 guard
(exec) that launchd jobs run through."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from mcos.cli import common
from mcos.cli.common import FleetOpt, JsonOpt, console, err_console, friendly_errors, print_json
from mcos.exceptions import EX_CONFIG
from mcos.supervisor import launchd

app = typer.Typer(
    name="launchd",
    help="launchd property lists (macOS): generate, check, exec.",
    no_args_is_help=True,
)


@app.command("generate")
def launchd_generate(
    host: Annotated[str, typer.Option(help="The host whose supervisor job to write.")],
    out: Annotated[Path, typer.Option(help="Folder to write the .plist files into.")] = Path("."),
    user: Annotated[Optional[str], typer.Option(help="UserName= for a LaunchDaemon.")] = None,  # noqa: UP045
    server: Annotated[
        bool,
        typer.Option(help="Also write Mission Control's job (--no-server: it runs elsewhere)."),
    ] = True,
    fleet: FleetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write launchd jobs for this host's supervisor and Mission Control."""
    with friendly_errors():
        loaded = common.load(fleet)
        if host not in loaded.hosts:
            common.fail(f"no host {host!r} in {loaded.path} (known: {', '.join(loaded.hosts)})")
        out.mkdir(parents=True, exist_ok=True)
        (loaded.state_dir / "logs").mkdir(parents=True, exist_ok=True)  # launchd won't
        written = []
        for job in launchd.generate(loaded, host, user=user, server=server):
            (out / job.name).write_bytes(job.dumps())
            written.append(str(out / job.name))
            if not as_json:
                console.print(f"wrote {out / job.name}")
    if as_json:
        print_json({"written": written})


@app.command("check")
def launchd_check(
    files: Annotated[list[Path], typer.Argument(help="Property lists to lint.")],
    as_json: JsonOpt = False,
) -> None:
    """Lint launchd jobs: unknown keys, restart loops on exit 78, abandoned groups, lost logs."""
    problems = []
    for path in files:
        if not path.is_file():
            common.fail(f"{path}: no such file")
        problems += launchd.check(path)
    if as_json:
        print_json({"files": len(files), "problems": [f"{p.file}: {p.problem}" for p in problems]})
        raise typer.Exit(1 if problems else 0)
    for p in problems:
        console.print(f"{p.file}: {p.problem}", style="red", highlight=False)
    if problems:
        raise typer.Exit(1)
    console.print(f"{len(files)} launchd job(s): ok")


@app.command("exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def launchd_exec(ctx: typer.Context) -> None:
    """Run `mcos ARGS…` here; a configuration error (78) exits 0 so launchd does not restart it.

    launchd has no RestartPreventExitStatus: with KeepAlive = {SuccessfulExit = false} any
    non-zero exit is restarted every ThrottleInterval seconds, forever."""
    from mcos.cli import app  # noqa: PLC0415 (this module is part of that app)

    if not ctx.args:
        common.fail("give the mcos command to run: mcos launchd exec -- up --host HOST")
    try:
        app(args=ctx.args, prog_name="mcos", standalone_mode=True)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    if code == EX_CONFIG:
        err_console.print(
            f"mcos {' '.join(ctx.args)}: configuration error (exit {EX_CONFIG}); exiting 0 so "
            "launchd does not restart it — fix the fleet file, then `launchctl kickstart` it",
            highlight=False,
            soft_wrap=True,
        )
    raise typer.Exit(launchd.launchd_exit(code))
