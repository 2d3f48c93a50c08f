"""Bearer tokens: ``mcos token create / list / rotate / revoke``."""

from __future__ import annotations

import asyncio
import sys
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Optional

import typer

from mcos.api_models import TokenCreated, TokenOut
from mcos.cli import common
from mcos.cli.common import (
    FleetOpt,
    JsonOpt,
    TokenOpt,
    UrlOpt,
    console,
    fetch,
    friendly_errors,
    print_json,
    show,
    table,
)
from mcos.client import Calls
from mcos.config import parse_duration
from mcos.domain.tokens import PrincipalKind

app = typer.Typer(
    name="token", help="Create, list, rotate and revoke bearer tokens.", no_args_is_help=True
)

TokenIdArg = Annotated[int, typer.Argument(help="Token id (see `mcos token list`).")]


@app.command("create")
def token_create(
    agent: Annotated[Optional[str], typer.Option(help="For this agent.")] = None,  # noqa: UP045
    operator: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="For this operator (a configured human votes as that human)."),
    ] = None,
    host: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="For the supervisor (`mcos up`) of this host of the fleet."),
    ] = None,
    label: Annotated[str, typer.Option()] = "",
    expires: Annotated[
        Optional[str], typer.Option(help="Lifetime, e.g. 30d, 12h.")  # noqa: UP045
    ] = None,
    save: Annotated[
        bool,
        typer.Option(help="With --host: write it to STATE/hosts/HOST.token (0600) for `mcos up`."),
    ] = False,
    local: Annotated[
        bool,
        typer.Option(
            help="With --operator: recover a locked-out fleet on the server's machine — write "
            "the token straight into the store with the server's key (no server needed)."
        ),
    ] = False,
    fleet: FleetOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a token; it is printed once and never shown again."""
    given = [(k, n) for k, n in ((PrincipalKind.AGENT, agent), (PrincipalKind.OPERATOR, operator),
                                 (PrincipalKind.HOST, host)) if n is not None]  # fmt: skip
    if len(given) != 1:
        common.fail("give exactly one of --agent NAME, --operator NAME or --host NAME")
    kind, name = given[0]
    assert name is not None
    if local and kind is not PrincipalKind.OPERATOR:
        common.fail("--local recovers an operator token: use it with --operator NAME")
    if save and kind is not PrincipalKind.HOST:
        common.fail("--save writes a host token: use it with --host NAME")
    if local:
        _recover(name, label, fleet, as_json)
        return
    lifetime = None
    if expires is not None:
        try:
            lifetime = int(_duration(expires).total_seconds())
        except ValueError as e:
            common.fail(f"--expires: {e}")
    call = Calls.create_token(kind, name, label=label, expires_in_seconds=lifetime)
    created = fetch(url, token, fleet, call)
    if save:
        with friendly_errors():
            path = common.host_token_file(common.load(fleet), name)
        common.write_secret(path, created.token)
        if as_json:
            print_json({"record": created.record, "path": str(path)})
            return
        console.print(f"token {created.record.id} for host {name} written to {path} (mode 0600)")
        return
    show(created, as_json, lambda c: _print_created(c, f"{kind} {name}"))


def _print_created(created: TokenCreated, whose: str, how: str = "") -> None:
    console.print(f"token {created.record.id} for {whose}{how} (shown once, store it now):")
    sys.stdout.write(created.token + "\n")


def _recover(name: str, label: str, fleet: Path | None, as_json: bool) -> None:
    """`mcos token create --operator NAME --local`: straight into the store, audited."""
    from mcos.ops.recover import RECOVERED, recover_operator  # noqa: PLC0415 (heavy; `mcos status` need not load it)

    with friendly_errors():
        loaded = common.load(fleet)
        recovered = asyncio.run(recover_operator(loaded, name, label))
    created = TokenCreated(token=recovered.token, record=TokenOut.of(recovered.record))
    how = f", written to the store locally (audited as {RECOVERED})"
    show(created, as_json, lambda c: _print_created(c, f"operator {name}", how))


def _duration(text: str) -> timedelta:
    if text.endswith("d") and text[:-1].isdigit():
        return timedelta(days=int(text[:-1]))
    return parse_duration(text)


@app.command("list")
def token_list(
    name: Annotated[Optional[str], typer.Option(help="Only this principal.")] = None,  # noqa: UP045
    fleet: FleetOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List tokens (never their secrets)."""
    show(fetch(url, token, fleet, Calls.tokens(name)), as_json, _print_tokens)


def _print_tokens(records: list[TokenOut]) -> None:
    table(
        "tokens",
        ["id", "prefix", "kind", "name", "label", "created", "expires", "revoked"],
        [
            (t.id, t.prefix, t.kind, t.name, t.label, t.created_at, t.expires_at, t.revoked_at)
            for t in records
        ],
    )


@app.command("rotate")
def token_rotate(
    token_id: TokenIdArg,
    fleet: FleetOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Replace a token with a new one for the same principal; the old one is revoked."""
    created = fetch(url, token, fleet, Calls.rotate_token(token_id))
    whose = f"{created.record.kind} {created.record.name}"
    replacing = f", replacing token {token_id} (now revoked)"
    show(created, as_json, lambda c: _print_created(c, whose, replacing))


@app.command("revoke")
def token_revoke(
    token_id: TokenIdArg,
    fleet: FleetOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke a token from now on."""
    show(fetch(url, token, fleet, Calls.revoke_token(token_id)), as_json, _print_revoked)


def _print_revoked(record: TokenOut) -> None:
    console.print(f"token {record.id} ({record.kind} {record.name}) revoked at {record.revoked_at}")
