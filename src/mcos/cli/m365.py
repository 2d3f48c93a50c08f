"""``mcos m365 login NAME``: sign a person in for a device-code account (a delegated mailbox
or calendar), once; the tokens go to the run dir (mode 0600) and the agent uses them from then
on, refreshing them itself."""

from __future__ import annotations

from typing import Annotated

import typer

from mcos.cli import common
from mcos.cli.common import FleetOpt
from mcos.config.models import OAuthConfig

app = typer.Typer(
    name="m365", help="Microsoft 365 accounts: sign in (device code).", no_args_is_help=True
)


@app.command("login")
def login(
    name: Annotated[
        str, typer.Argument(help="An m365 channel, an XOAUTH2 e-mail channel or a graph calendar.")
    ],
    fleet: FleetOpt = None,
) -> None:
    """Show a device code to enter at microsoft.com/devicelogin, wait for the sign-in, keep the
    tokens for the agent."""
    from mcos.channels.factory import XOAUTH2_SCOPES, oauth_tokens  # noqa: PLC0415
    from mcos.channels.m365 import DEVICE_SCOPES  # noqa: PLC0415

    with common.friendly_errors():
        loaded = common.load(fleet)
        config: OAuthConfig | None = None
        scopes: tuple[str, ...] = ()
        if name in loaded.channels:
            channel = loaded.channels[name]
            config = channel.oauth
            scopes = DEVICE_SCOPES if channel.kind == "m365" else XOAUTH2_SCOPES
        elif name in loaded.calendars:
            config, scopes = loaded.calendars[name].oauth, ("Calendars.Read",)
        if config is None:
            common.fail(f"{name}: no channel or calendar of that name signs in with oauth")
        if config.provider != "microsoft":
            common.fail(
                f"{name}: provider {config.provider} signs in with its refresh_token, not here "
                "(see docs/channels.md, Setting up Gmail)"
            )
        if config.flow != "device_code":
            common.fail(f"{name}: uses {config.flow}; only device_code accounts sign in")
        tokens = oauth_tokens(name, config, loaded, scopes=scopes)
        try:
            tokens.device_login(typer.echo)
        finally:
            tokens.close()
        typer.echo(f"{name}: signed in; tokens kept in {loaded.state_dir / 'oauth'}")
