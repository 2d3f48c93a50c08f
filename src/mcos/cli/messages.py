"""Messages: ``mcos send``, ``mcos inbox`` and ``mcos thread``."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from mcos.api_models import InboxResponse, MessageOut, SendResponse
from mcos.cli.common import (
    FleetOpt,
    JsonOpt,
    TokenOpt,
    UrlOpt,
    connect,
    console,
    err_console,
    fetch,
    friendly_errors,
    poll,
    show,
    table,
)
from mcos.client import Calls
from mcos.domain.messages import MessageKind, Priority

app = typer.Typer()


@app.command()
def send(
    to: Annotated[str, typer.Argument(help="Agent, topic or human.")],
    body: Annotated[str, typer.Argument(help="Message body ('-' reads standard input).")],
    subject: Annotated[str, typer.Option("--subject", "-s")] = "",
    kind: Annotated[MessageKind, typer.Option()] = MessageKind.REQUEST,
    priority: Annotated[Priority, typer.Option("--priority", "-p")] = Priority.NORMAL,
    reply_to: Annotated[Optional[int], typer.Option()] = None,  # noqa: UP045
    key: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--key", help="Idempotency key: resending with it stores nothing new."),
    ] = None,
    fleet: FleetOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Send a message as the token's owner."""
    text = sys.stdin.read() if body == "-" else body
    call = Calls.send(
        to, text, subject=subject, kind=kind, priority=priority, reply_to=reply_to,
        idempotency_key=key,
    )  # fmt: skip
    show(fetch(url, token, fleet, call), as_json, _print_sent)


def _print_sent(result: SendResponse) -> None:
    verb = "sent" if result.created else "already sent (same idempotency key)"
    console.print(
        f"{verb}: message {result.message.id} to {result.message.to} "
        f"({result.deliveries} deliveries, thread {result.message.thread_id})"
    )


@app.command()
def inbox(
    agent: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--inbox", help="Operators: whose inbox (an agent reads its own)."),
    ] = None,
    wait: Annotated[float, typer.Option(help="Wait up to this many seconds for a message.")] = 0,
    limit: Annotated[int, typer.Option()] = 10,
    ack: Annotated[bool, typer.Option(help="Acknowledge what is shown (else redelivered).")] = True,
    fleet: FleetOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Claim messages from an inbox and show them."""
    with friendly_errors(), connect(url, token, fleet) as client:
        result = client.do(Calls.inbox(wait=wait, limit=limit, inbox=agent))
        if ack and result.deliveries:
            client.do(
                Calls.ack_many([(d.id, d.receipt or "") for d in result.deliveries], inbox=agent)
            )
    show(result, as_json, _print_inbox)


def _print_inbox(result: InboxResponse) -> None:
    table(
        f"inbox of {result.inbox}: {len(result.deliveries)} message(s)",
        ["id", "from", "priority", "kind", "subject", "body", "attempt"],
        [
            (m.id, m.sender, m.priority, m.kind, m.subject, m.body[:80], d.attempts)
            for d in result.deliveries
            for m in [d.message]
        ],
    )


@app.command()
def thread(
    thread_id: Annotated[int, typer.Argument(help="The thread (`mcos send` prints it).")],
    wait: Annotated[
        float,
        typer.Option(help="Wait up to this many seconds until the thread holds --until messages."),
    ] = 0,
    until: Annotated[
        int, typer.Option(min=1, help="With --wait: how many messages to wait for.")
    ] = 2,
    fleet: FleetOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a thread's messages, oldest first (those the token may read); --wait for a reply.

    Exits 1 when --wait ran out before the thread held --until messages."""
    with friendly_errors(), connect(url, token, fleet) as client:
        found, complete = poll(
            lambda: client.do(Calls.thread(thread_id)), lambda ms: len(ms) >= until, wait
        )
    show(found, as_json, lambda ms: _print_thread(thread_id, ms))
    if wait > 0 and not complete:
        err_console.print(f"{len(found)} of {until} message(s) after {wait:g}s", style="red")
        raise typer.Exit(1)


def _print_thread(thread_id: int, found: list[MessageOut]) -> None:
    table(
        f"thread {thread_id}: {len(found)} message(s)",
        ["id", "at", "from", "to", "kind", "priority", "subject", "body"],
        [
            (m.id, f"{m.created_at:%H:%M:%S}", m.sender, m.to, m.kind, m.priority, m.subject,
             m.body[:120])
            for m in found
        ],
    )  # fmt: skip
