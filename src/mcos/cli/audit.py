"""The tamper-evident audit log: ``mcos audit verify / list / export``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from mcos.api_models import AuditOut, AuditVerifyResult
from mcos.cli import common
from mcos.cli.common import (
    FleetOpt,
    JsonOpt,
    TokenOpt,
    UrlOpt,
    connect,
    console,
    fetch,
    friendly_errors,
    show,
    table,
)
from mcos.client import Calls

app = typer.Typer(name="audit", help="The tamper-evident audit log.", no_args_is_help=True)


@app.command("verify")
def audit_verify(
    fleet: FleetOpt = None, url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False
) -> None:
    """Walk the audit chain and compare it with the signed checkpoint file; exit 1 and name
    each finding (gap, rewritten, truncated, head moved back, triggers missing, checkpoint)."""
    result = fetch(url, token, fleet, Calls.audit_verify())
    show(result, as_json, _print_verdict)
    if not result.intact:
        raise typer.Exit(1)


def _print_verdict(result: AuditVerifyResult) -> None:
    cp = result.checkpoint
    keyed = f"HMAC-SHA256 from seq {result.keyed_from}"
    if result.legacy_records:
        keyed += f"; records 1..{result.legacy_records} are unkeyed SHA-256 (older mcos)"
    checkpoint = (
        f"checkpoint {cp.path}: {cp.lines} signed lines, latest seq {cp.latest_seq} "
        f"at {cp.latest_at}, begun at seq {cp.first_seq}"
        if cp.lines
        else f"checkpoint {cp.path}: no signed lines"
    )
    console.print(f"{keyed}; {checkpoint}")
    if result.intact:
        console.print(f"audit log intact: {result.records} records, head {result.head_seq}")
    for f in result.findings:
        where = f"record {f.seq}" if f.seq is not None else "audit log"
        common.err_console.print(common.styled(f"{f.kind} ({where}):", "bold red", f.message))


@app.command("list")
def audit_list(
    actor: Annotated[Optional[str], typer.Option()] = None,  # noqa: UP045
    action: Annotated[Optional[str], typer.Option()] = None,  # noqa: UP045
    limit: Annotated[int, typer.Option()] = 50,
    fleet: FleetOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show audit records, oldest first."""
    records = fetch(url, token, fleet, Calls.audit(actor=actor, action=action, limit=limit))
    show(records, as_json, _print_records)


def _print_records(records: list[AuditOut]) -> None:
    table(
        "audit",
        ["seq", "at", "actor", "action", "targets", "outcome"],
        [(r.seq, r.at, r.actor, r.action, r.targets, r.outcome) for r in records],
    )


@app.command("export")
def audit_export(
    fmt: Annotated[str, typer.Option("--format", help="csv or json.")] = "csv",
    out: Annotated[Optional[Path], typer.Option(help="File (default: stdout).")] = None,  # noqa: UP045
    fleet: FleetOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="The same as --format json.")] = False,
) -> None:
    """Export the whole audit log as CSV or JSON."""
    fmt = "json" if as_json else fmt
    if fmt not in {"csv", "json"}:
        common.fail(f"--format must be csv or json, not {fmt!r}")
    with friendly_errors(), connect(url, token, fleet) as client:
        if fmt == "csv":
            text = client.do(Calls.audit_csv())
        else:
            records = client.do(Calls.audit(limit=10_000))
            text = json.dumps([r.model_dump(mode="json") for r in records], indent=2) + "\n"
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text)
        console.print(f"wrote {out}")
