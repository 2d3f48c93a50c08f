"""Pages to humans and their acknowledgements: ``mcos pages list / ack``."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from mcos.api_models import PageOut
from mcos.cli.common import FleetOpt, JsonOpt, TokenOpt, UrlOpt, console, fetch, show, table
from mcos.client import Calls

app = typer.Typer(
    name="pages", help="Pages to humans and their acknowledgements.", no_args_is_help=True
)


@app.command("list")
def pages_list(
    human: Annotated[Optional[str], typer.Option("--human")] = None,  # noqa: UP045
    state: Annotated[Optional[str], typer.Option("--state", help="sent, failed, acked")] = None,  # noqa: UP045
    fleet: FleetOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Urgent items, P0s and approval requests paged to humans, newest first."""
    found = fetch(url, token, fleet, Calls.pages(human=human, state=state))
    show(found, as_json, _print_pages)


def _print_pages(found: list[PageOut]) -> None:
    table(
        "pages",
        ["page", "human", "kind", "subject", "state", "channel", "acked by", "error"],
        [
            (p.id, p.human, p.kind, p.subject, p.state, p.channel, p.acked_by, p.error)
            for p in found
        ],
    )


@app.command("ack")
def pages_ack(
    page_id: Annotated[int, typer.Argument()],
    fleet: FleetOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Acknowledge a page sent to you (your operator token names you)."""
    show(fetch(url, token, fleet, Calls.ack_page(page_id)), as_json, _print_acked)


def _print_acked(page: PageOut) -> None:
    console.print(f"page {page.id} acknowledged by {page.acked_by}")
