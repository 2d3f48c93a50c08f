"""Incidents at their gates and approval requests: ``mcos incidents``, ``mcos approvals``,
``mcos approve`` and ``mcos deny``."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from mcos.api_models import ApprovalOut, IncidentOut
from mcos.cli import common
from mcos.cli.common import (
    FleetOpt,
    JsonOpt,
    TokenOpt,
    UrlOpt,
    WaitOpt,
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

app = typer.Typer()
incidents_app = typer.Typer(
    name="incidents", help="Incidents at their gates.", no_args_is_help=True
)
approvals_app = typer.Typer(
    name="approvals", help="Approval requests and committees.", no_args_is_help=True
)
app.add_typer(incidents_app)
app.add_typer(approvals_app)

ApprovalIdArg = Annotated[int, typer.Argument(help="The request (see `mcos approvals list`).")]
ReasonOpt = Annotated[str, typer.Option("--reason", "-r", help="Your rationale (recorded).")]


@incidents_app.command("list")
def incidents_list(
    state: Annotated[Optional[str], typer.Option(help="reported, confirmed, …")] = None,  # noqa: UP045
    fleet: FleetOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Incidents at their gates: who reported, who must confirm, who confirmed."""
    show(fetch(url, token, fleet, Calls.incidents(state=state)), as_json, _print_incidents)


def _print_incidents(found: list[IncidentOut]) -> None:
    table(
        f"{len(found)} incident(s)",
        ["id", "severity", "state", "summary", "reporter", "reports", "gate", "confirmed by"],
        [
            (
                i.id, _severity(i.severity, i.reported_as),
                i.state, i.summary, i.reporter, i.reports, i.gate or "self-logged",
                ", ".join(sorted({e.actor for e in i.timeline if e.action == "confirm"})),
            )
            for i in found
        ],
    )  # fmt: skip


def _severity(now: str, reported: str) -> str:
    return now if now == reported else f"{now} (reported {reported})"


@incidents_app.command("decide")
def incidents_decide(
    incident_id: Annotated[int, typer.Argument()],
    decision: Annotated[str, typer.Argument(help="confirm, resolve or dismiss")],
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why (recorded).")],
    severity: Annotated[Optional[str], typer.Option(help="Confirm at another severity.")] = None,  # noqa: UP045
    fleet: FleetOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Confirm (a vote), resolve or dismiss an incident, with a reason."""
    if decision not in ("confirm", "resolve", "dismiss"):
        common.fail(f"{decision!r}: use confirm, resolve or dismiss")
    call = Calls.decide_incident(incident_id, decision, reason, severity)
    show(fetch(url, token, fleet, call), as_json, _print_decided)


def _print_decided(i: IncidentOut) -> None:
    console.print(f"incident {i.id}: {i.state} at {i.severity} (gate: {i.gate or 'none'})")


@approvals_app.command("list")
def approvals_list(
    state: Annotated[Optional[str], typer.Option(help="pending, approved, …")] = None,  # noqa: UP045
    wait: WaitOpt = 0,
    fleet: FleetOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Approval requests with their committee, votes and expiry; --wait for a first one."""
    with friendly_errors(), connect(url, token, fleet) as client:
        found, some = poll(lambda: client.do(Calls.approvals(state=state)), bool, wait)
    show(found, as_json, _print_approvals)
    if wait > 0 and not some:
        err_console.print(f"no approval request after {wait:g}s", style="red")
        raise typer.Exit(1)


def _print_approvals(found: list[ApprovalOut]) -> None:
    table(
        f"{len(found)} request(s)",
        ["id", "action", "state", "requester", "committee", "votes", "expires", "payload"],
        [
            (
                a.id, a.action, a.state, a.requester, a.quorum,
                "; ".join(f"{v.voter} {v.vote}: {v.rationale}" for v in a.votes),
                f"{a.expires_at:%Y-%m-%d %H:%M}", a.payload,
            )
            for a in found
        ],
    )  # fmt: skip


def _print_voted(a: ApprovalOut) -> None:
    console.print(f"request {a.id} ({a.action}): {a.state}")


@app.command()
def approve(
    approval_id: ApprovalIdArg,
    reason: ReasonOpt,
    fleet: FleetOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Vote to approve a request."""
    call = Calls.vote(approval_id, "approve", reason)
    show(fetch(url, token, fleet, call), as_json, _print_voted)


@app.command()
def deny(
    approval_id: ApprovalIdArg,
    reason: ReasonOpt,
    veto: Annotated[
        bool,
        typer.Option(
            help="A human's veto: stops a pending request, or an approved one until its "
            "directive is acknowledged (the directive is withdrawn).",
        ),
    ] = False,
    fleet: FleetOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Vote to deny a request (or, as a human, veto it)."""
    call = Calls.veto(approval_id, reason) if veto else Calls.vote(approval_id, "deny", reason)
    show(fetch(url, token, fleet, call), as_json, _print_voted)
