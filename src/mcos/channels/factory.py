"""A channel account of the fleet file, opened with its secrets resolved.

Vendor libraries (aiogram, discord.py, aioimaplib) are imported only for the kinds in use, so an
agent without channels pays nothing for them.
"""

from __future__ import annotations

from mcos.channels.base import Channel, account_key
from mcos.channels.mock import MockChannel
from mcos.config.models import Fleet
from mcos.config.secrets import resolve_key


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
        return EmailChannel(name, config, secret(config.password), smtp)
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
    if config.kind == "discord" or (config.kind == "telegram" and config.mode == "polling"):
        assert config.token is not None  # the fleet file's validation requires it
        where = f"{fleet.path}: channels.{name}"
        token = resolve_key(config.token, where=where, base_dir=fleet.base_dir)
        return account_key(config.kind, token)
    return None
