"""A channel account of the fleet file, opened with its secrets resolved.

Vendor libraries (aiogram, discord.py, aioimaplib) are imported only for the kinds in use, so an
agent without channels pays nothing for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from mcos.channels.base import Channel, account_key
from mcos.channels.mock import MockChannel
from mcos.config.models import Fleet, OAuthConfig
from mcos.config.secrets import resolve_key

if TYPE_CHECKING:
    from mcos.channels.oauth import OAuthTokens
    from mcos.channels.oauth_refresh import RefreshTokens


XOAUTH2_SCOPES: Final = (
    "https://outlook.office.com/IMAP.AccessAsUser.All",
    "https://outlook.office.com/SMTP.Send",
)
"""Exchange Online's delegated IMAP and SMTP permissions (device code); set ``scopes`` for
another provider (Gmail: ``https://mail.google.com/``)."""
XOAUTH2_APP_SCOPES: Final = ("https://outlook.office365.com/.default",)
"""Exchange Online's IMAP/SMTP application permissions (client credentials)."""
GMAIL_SCOPES: Final = ("https://mail.google.com/",)
"""Gmail's IMAP/SMTP scope (what XOAUTH2 needs)."""


def oauth_tokens(
    name: str, config: OAuthConfig, fleet: Fleet, *, scopes: tuple[str, ...] = ()
) -> OAuthTokens:
    """The msal tokens of account ``name``, its cache in the run dir, its secret resolved
    (a missing one is a ``ConfigError``). msal is imported only when an account uses it."""
    from mcos.channels.oauth import OAuthTokens, cache_file  # noqa: PLC0415

    where = f"{fleet.path}: {name}.oauth"
    secret = (
        resolve_key(config.client_secret, where=where, base_dir=fleet.base_dir)
        if config.client_secret
        else None
    )
    return OAuthTokens(
        name, config, secret=secret, cache_path=cache_file(fleet.state_dir, name), scopes=scopes
    )


def refresh_tokens(name: str, config: OAuthConfig, fleet: Fleet) -> RefreshTokens:
    """The refresh-token tokens (Google, any OAuth 2.0 endpoint) of account ``name``, its
    secrets resolved (a missing one is a ``ConfigError``)."""
    from mcos.channels.oauth_refresh import RefreshTokens  # noqa: PLC0415

    where = f"{fleet.path}: {name}.oauth"
    assert config.refresh_token is not None  # the fleet file's validation requires it
    refresh = resolve_key(config.refresh_token, where=where, base_dir=fleet.base_dir)
    secret = (
        resolve_key(config.client_secret, where=where, base_dir=fleet.base_dir)
        if config.client_secret
        else None
    )
    scopes = GMAIL_SCOPES if config.provider == "google" else ()
    return RefreshTokens(name, config, refresh_token=refresh, secret=secret, scopes=scopes)


def email_tokens(name: str, config: OAuthConfig, fleet: Fleet) -> OAuthTokens | RefreshTokens:
    """XOAUTH2's tokens: msal's (Exchange Online), or from a refresh token (Gmail & co.)."""
    if config.provider != "microsoft":
        return refresh_tokens(name, config, fleet)
    device = config.flow == "device_code"
    return oauth_tokens(
        name, config, fleet, scopes=XOAUTH2_SCOPES if device else XOAUTH2_APP_SCOPES
    )


def open_channel(name: str, fleet: Fleet) -> Channel:
    """The channel named ``name``; a missing or empty secret is a ``ConfigError`` naming it."""
    config = fleet.channels[name]
    where = f"{fleet.path}: channels.{name}"

    def secret(reference: str | None) -> str:
        assert reference is not None  # the fleet file's validation requires it for the kind
        return resolve_key(reference, where=where, base_dir=fleet.base_dir)

    if config.kind == "telegram":
        from mcos.channels.telegram import TelegramChannel  # noqa: PLC0415

        hook = secret(config.webhook_secret) if config.webhook_secret else None
        return TelegramChannel(name, config, secret(config.token), webhook_secret=hook)
    if config.kind == "discord":
        from mcos.channels.discord import DiscordChannel  # noqa: PLC0415

        return DiscordChannel(name, config, secret(config.token), state_dir=fleet.state_dir)
    if config.kind == "email":
        from mcos.channels.email import EmailChannel  # noqa: PLC0415

        smtp = secret(config.smtp_password) if config.smtp_password else None
        if config.oauth is None:
            return EmailChannel(name, config, secret(config.password), smtp)
        return EmailChannel(name, config, "", smtp, tokens=email_tokens(name, config.oauth, fleet))
    if config.kind == "m365":
        from mcos.channels.m365 import DEVICE_SCOPES, M365Channel  # noqa: PLC0415

        assert config.oauth is not None  # the fleet file's validation requires it
        device = config.oauth.flow == "device_code"
        tokens = oauth_tokens(name, config.oauth, fleet, scopes=DEVICE_SCOPES if device else ())
        return M365Channel(name, config, tokens, state_dir=fleet.state_dir)
    return MockChannel(name, fleet.channel_path(name))


def lease_key(name: str, fleet: Fleet) -> str | None:
    """The lease key the receiver of channel ``name`` takes, derived as the channel itself
    derives it (Telegram and Discord: from the bot token, which must resolve here — a
    ``ConfigError`` otherwise); None when its receiver takes none (a mock folder, a webhook).

    Mission Control grants a channel's lease for this key only: an agent bound to one channel
    cannot hold another account's lease and so keep its receiver from running."""
    config = fleet.channels[name]
    if config.kind == "email":
        from mcos.channels.email import mailbox_key  # noqa: PLC0415 (aioimaplib, when in use)

        return mailbox_key(config)
    if config.kind == "m365":
        from mcos.channels.m365 import m365_key  # noqa: PLC0415

        return m365_key(config)
    if config.kind == "discord" or (config.kind == "telegram" and config.mode == "polling"):
        assert config.token is not None  # the fleet file's validation requires it
        where = f"{fleet.path}: channels.{name}"
        token = resolve_key(config.token, where=where, base_dir=fleet.base_dir)
        return account_key(config.kind, token)
    return None
