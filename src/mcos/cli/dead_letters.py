"""Deliveries that ran out of attempts: ``mcos dead-letters list / requeue``."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from mcos.api_models import DeliveryOut
from mcos.cli.common import FleetOpt, JsonOpt, TokenOpt, UrlOpt, console, fetch, show, table
from mcos.client import Calls

app = typer.Typer(name="dead-letters", help="Dead-lettered deliveries.", no_args_is_help=True)


@app.command("list")
def dead_list(
    agent: Annotated[Optional[str], typer.Option("--inbox")] = None,  # noqa: UP045
    fleet: FleetOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Deliveries that ran out of attempts (tried and failed), expired, or lapsed."""
    show(fetch(url, token, fleet, Calls.dead_letters(inbox=agent)), as_json, _print_dead)


def _print_dead(dead: list[DeliveryOut]) -> None:
    table(
        "dead letters",
        ["delivery", "inbox", "message", "from", "subject", "attempts", "deferrals", "reason"],
        [
            (d.id, d.inbox, d.message.id, d.message.sender, d.message.subject, d.attempts,
             d.deferrals, d.last_error)
            for d in dead
        ],
    )  # fmt: skip


@app.command("requeue")
def dead_requeue(
    delivery_id: Annotated[int, typer.Argument()],
    fleet: FleetOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Put a dead letter back in its inbox."""
    show(fetch(url, token, fleet, Calls.requeue(delivery_id)), as_json, _print_requeued)


def _print_requeued(d: DeliveryOut) -> None:
    console.print(f"delivery {d.id} requeued to {d.inbox}")
