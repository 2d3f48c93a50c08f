"""One agent: ``mcos agent run`` and ``mcos agent resume``."""

from __future__ import annotations

import asyncio
import os
from typing import Annotated

import typer

from mcos.api_models import AgentOut
from mcos.cli import common
from mcos.cli.common import (
    FleetOpt,
    JsonOpt,
    TokenOpt,
    UrlOpt,
    console,
    fetch,
    friendly_errors,
    show,
)
from mcos.client import Calls
from mcos.domain.agent_state import AgentStatus
from mcos.logs import configure as configure_logging

app = typer.Typer(name="agent", help="One agent: run it, resume it.", no_args_is_help=True)


@app.command("run")
def agent_run(
    name: Annotated[str, typer.Argument(help="The agent, as named in the fleet file.")],
    fleet: FleetOpt = None,
    token: TokenOpt = None,
) -> None:
    """Run one agent in this process (its token from --token or $MCOS_TOKEN)."""
    from mcos.runtime.main import title  # noqa: PLC0415 (heavy; `mcos status` need not load it)
    from mcos.runtime.process import run_agent  # noqa: PLC0415 (heavy; `mcos status` need not load it)

    with friendly_errors():
        loaded = common.load(fleet)
        if name not in loaded.agents:
            common.fail(f"no agent {name!r} in {loaded.path} (known: {', '.join(loaded.agents)})")
        secret = token or os.environ.get("MCOS_TOKEN")
        if not secret:
            common.fail("no token: pass --token or set MCOS_TOKEN (an agent token for this agent)")
        configure_logging(agent=name)
        title(name, loaded.path)
        code = asyncio.run(run_agent(loaded, name, secret))
    raise typer.Exit(code)


@app.command("resume")
def agent_resume(
    name: Annotated[str, typer.Argument(help="The paused agent.")],
    fleet: FleetOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Resume an agent paused by its circuit breaker or by Mission Control (ping-pong)."""
    call = Calls.report_state(name, AgentStatus.IDLE, "resumed by an operator")
    show(fetch(url, token, fleet, call), as_json, _print_resumed)


def _print_resumed(agent: AgentOut) -> None:
    console.print(f"{agent.name}: resumed")
