"""The Discord channel, through discord.py: listen and post in configured channels, and never
burn the bot's daily IDENTIFY budget.

A crash-looping bot re-identified on every restart and ran through Discord's
``session_start_limit`` (about 1000 IDENTIFYs a day; past it Discord resets the token). So every
IDENTIFY this token makes — the first of a run and every re-IDENTIFY discord.py makes when a
session cannot be resumed — goes through :func:`mcos.domain.identify.identify_wait`, fed from a
small history file in ``state_dir`` that outlives the process (named by the token's hash, never
the token). Within a run discord.py RESUMEs dropped sessions, which costs nothing.

One process holds one Discord API base: discord.py keeps its REST base in the class attribute
``discord.http.Route.BASE`` and its gateway in ``DiscordWebSocket.DEFAULT_GATEWAY``, so every
Discord channel of a process must name the same ``api_url`` (a second one is refused).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import weakref
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import discord
import discord.http
import yarl
from discord.gateway import DiscordWebSocket

from mcos.channels.base import Deliver, Inbound, Outbound, account_key
from mcos.config.models import ChannelConfig
from mcos.domain.identify import SessionStartLimit, identify_wait, recent_identifies
from mcos.exceptions import AuthError, Forbidden, InvalidRequest, McosError

log = logging.getLogger(__name__)

DISCORD_API = "https://discord.com/api/v10"
MAX_CONTENT = 2000
"""Discord refuses a message longer than this; longer text goes out in several posts."""
RE_IDENTIFY_FLOOR = 5.0
"""discord.py's own wait before a re-IDENTIFY within a run, kept as the least wait."""
AUTH_FAILED = 4004
GATEWAY_CLOSE_WAIT = 5.0
"""How long a cancelled run waits for discord.py's gateway loop to end after closing it."""

_live: weakref.WeakSet[DiscordChannel] = weakref.WeakSet()


class _IdentifyHistory:
    """When this token identified over the last day, in a JSON file that survives restarts."""

    def __init__(self, state_dir: Path, key: str) -> None:
        self.key = key
        self.path = state_dir / f"discord-identify-{key.rsplit(':', 1)[-1]}.json"

    def load(self, now: datetime) -> list[datetime]:
        """The recorded IDENTIFY times; a missing or unreadable file is an empty history."""
        try:
            data = json.loads(self.path.read_text())
            times = [datetime.fromisoformat(str(t)) for t in data.get("identifies", [])]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            log.warning("identify history %s unreadable (%s): starting afresh", self.path, exc)
            return []
        return recent_identifies((t for t in times if t.tzinfo is not None), now)

    def record(self, at: datetime) -> int:
        """Add one IDENTIFY (written atomically); the number of IDENTIFYs now kept."""
        times = recent_identifies([*self.load(at), at], at)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        body = {"account": self.key, "identifies": [t.isoformat() for t in times]}
        tmp.write_text(json.dumps(body, indent=1))
        os.replace(tmp, self.path)
        return len(times)


class _GatewayClient(discord.Client):
    """discord.py's client, with every IDENTIFY and every message routed to the channel."""

    def __init__(self, owner: DiscordChannel, deliver: Deliver, intents: discord.Intents) -> None:
        super().__init__(intents=intents, max_messages=None, chunk_guilds_at_startup=False)
        self._owner = owner
        self._deliver = deliver

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """Called by discord.py right before each IDENTIFY it sends (never before a RESUME)."""
        await self._owner._before_identify(initial=initial)

    async def on_message(self, message: discord.Message) -> None:
        """A MESSAGE_CREATE from the gateway."""
        await self._owner._receive(self, message, self._deliver)


def _intents(name: str, names: list[str]) -> discord.Intents:
    """discord.py intents from the config's names, plus ``guilds`` (the channel cache needs it)."""
    intents = discord.Intents.none()
    intents.guilds = True
    for flag in names:
        if flag not in discord.Intents.VALID_FLAGS:
            known = ", ".join(sorted(discord.Intents.VALID_FLAGS))
            msg = f"discord channel {name!r}: unknown intent {flag!r}; known: {known}"
            raise InvalidRequest(msg, channel=name, intent=flag)
        setattr(intents, flag, True)
    return intents


def _chunks(text: str) -> list[str]:
    return [text[i : i + MAX_CONTENT] for i in range(0, len(text), MAX_CONTENT)]


class DiscordChannel:
    """One Discord bot account: receives in its configured channels, posts in them."""

    kind = "discord"
    redelivers = False

    def __init__(
        self,
        name: str,
        config: ChannelConfig,
        token: str,
        *,
        state_dir: Path,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """``token``: the bot token itself (resolved from its key reference by the caller);
        ``sleep`` and ``now`` are the clock, replaceable so back-off is testable without
        waiting."""
        self.name = name
        self.config = config
        self.chats = [str(c) for c in config.chats]
        self._token = token
        self._key = account_key("discord", token)
        self._intents = _intents(name, config.intents)
        self._history = _IdentifyHistory(state_dir, self._key)
        self._sleep = sleep
        self._now = now
        self._api = (config.api_url or DISCORD_API).rstrip("/")
        for other in _live:
            if other._api != self._api:
                msg = (
                    f"discord channel {name!r}: api_url {self._api} differs from {other._api} of "
                    f"channel {other.name!r}; one process holds one Discord API base"
                )
                raise InvalidRequest(msg, channel=name)
        _live.add(self)
        self._gateway: _GatewayClient | None = None
        self._rest: discord.Client | None = None
        self._rest_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"DiscordChannel({self.name!r}, {self._key})"

    def exclusive_key(self) -> str:
        """One receiver per bot token: two gateways of one token would both IDENTIFY."""
        return self._key

    async def run(self, deliver: Deliver) -> None:
        """Receive until cancelled, handing each message of a configured channel to ``deliver``.

        Discord has no redelivery, so ``deliver`` is the agent's durable spool (see
        :mod:`mcos.runtime.channels`), which holds the item until Mission Control stored it; a
        message ``deliver`` still raised on (the spool full) is logged. A refused token raises
        :class:`AuthError` at once, before any IDENTIFY, instead of looping.
        """
        client = _GatewayClient(self, deliver, self._intents)
        self._gateway = client
        try:
            await self._login(client)
            limit, url = await self._gateway_info(client)
            gateway = self.config.gateway_url or url
            if gateway:
                DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway)
            await self._back_off(limit)
            await _gateway_loop(client)
        except discord.PrivilegedIntentsRequired as exc:
            msg = (
                f"discord channel {self.name!r}: Discord refused a privileged intent (4014); "
                "enable it for the bot in the Developer Portal or drop it from `intents`"
            )
            raise Forbidden(msg, channel=self.name) from exc
        except discord.ConnectionClosed as exc:
            if exc.code == AUTH_FAILED:
                raise self._refused("the gateway closed with 4004") from exc
            raise
        finally:
            if self._gateway is client:
                self._gateway = None
            await client.close()

    async def send(self, message: Outbound) -> str:
        """Post to ``message.to`` (or the first configured chat); the Discord message id.

        Only configured chats may be posted in. Text over Discord's 2000 characters goes out in
        several messages; the id is the first one's. Discord's 429s are waited out by discord.py.
        """
        chat = message.to or (self.chats[0] if self.chats else "")
        if chat not in self.chats:
            allowed = ", ".join(self.chats) or "none configured"
            msg = (
                f"discord channel {self.name!r} posts only in its configured chats "
                f"({allowed}), not {chat!r}"
            )
            raise InvalidRequest(msg, channel=self.name, to=chat, allowed=list(self.chats))
        if not message.text.strip():
            msg = f"discord channel {self.name!r}: Discord refuses an empty message"
            raise InvalidRequest(msg, channel=self.name)
        client = await self._rest_client()
        target = client.get_partial_messageable(int(chat))
        reference = (
            target.get_partial_message(int(message.reply_to_ref))
            if message.reply_to_ref.isdigit()
            else None
        )
        first = ""
        try:
            for part in _chunks(message.text):
                if reference is not None:
                    sent = await target.send(part, reference=reference, mention_author=False)
                else:
                    sent = await target.send(part)
                reference = None
                first = first or str(sent.id)
        except discord.HTTPException as exc:
            msg = f"discord channel {self.name!r}: posting to {chat} failed: {exc}"
            raise McosError(msg, channel=self.name, to=chat, status=exc.status) from exc
        return first

    async def aclose(self) -> None:
        """Close the gateway (if running) and the REST session."""
        _live.discard(self)
        for client in (self._gateway, self._rest):
            if client is not None:
                await client.close()
        self._gateway = self._rest = None

    # -- internals ------------------------------------------------------------------------

    def _refused(self, how: str) -> AuthError:
        msg = (
            f"discord channel {self.name!r}: Discord refused the bot token ({how}); "
            "check its key reference (a reset token must be replaced in the secret store)"
        )
        return AuthError(msg, channel=self.name, status=401)

    async def _login(self, client: discord.Client) -> None:
        """REST login (``GET /users/@me``), which costs no IDENTIFY."""
        discord.http.Route.BASE = self._api
        try:
            await client.login(self._token)
        except discord.LoginFailure as exc:
            await client.close()
            raise self._refused("401 Unauthorized") from exc

    async def _rest_client(self) -> discord.Client:
        """A logged-in client that never opens a gateway, so ``send`` works without ``run``."""
        async with self._rest_lock:
            if self._rest is None:
                client = discord.Client(intents=discord.Intents.none())
                await self._login(client)
                self._rest = client
            return self._rest

    async def _gateway_info(
        self, client: discord.Client
    ) -> tuple[SessionStartLimit | None, str | None]:
        """``GET /gateway/bot``: Discord's own count of the IDENTIFYs left, and the gateway."""
        try:
            _, url, raw = await client.http.get_bot_gateway()
        except discord.GatewayNotFound:
            log.warning("discord channel %s: GET /gateway/bot failed; using defaults", self.name)
            return None, None
        limit = SessionStartLimit(
            total=int(raw["total"]),
            remaining=int(raw["remaining"]),
            reset_after=float(raw["reset_after"]) / 1000,
            seen_at=self._now(),
        )
        return limit, url

    async def _back_off(self, limit: SessionStartLimit | None = None, floor: float = 0.0) -> None:
        """Wait as long as the identify rule says, given this token's history."""
        now = self._now()
        wait = identify_wait(self._history.load(now), now, limit)
        seconds = max(wait.seconds, floor)
        if seconds > 0:
            extra = (
                f"; {limit.remaining} of {limit.total} session starts left"
                if limit is not None and wait.reason == "session_start_limit"
                else ""
            )
            log.warning(
                "discord channel %s: backing off %.0f s before identifying "
                "(%d identifies in the last hour%s)",
                self.name,
                seconds,
                wait.recent,
                extra,
            )
            await self._sleep(seconds)

    async def _before_identify(self, *, initial: bool) -> None:
        """Every IDENTIFY: the first of a run already waited in ``run``; a re-IDENTIFY (a
        session Discord would not resume) waits here. Then it is recorded."""
        if not initial:
            await self._back_off(floor=RE_IDENTIFY_FLOOR)
        count = self._history.record(self._now())
        log.info("discord channel %s: identifying (%d in the last day)", self.name, count)

    async def _receive(
        self, client: discord.Client, message: discord.Message, deliver: Deliver
    ) -> None:
        """One message: delivered if it is in a configured channel and not the bot's own."""
        if str(message.channel.id) not in self.chats:
            return
        if client.user is not None and message.author.id == client.user.id:
            return
        if not message.content:
            log.info(
                "discord channel %s: message %s has no text (attachments only, or the "
                "message_content intent is off); skipped",
                self.name,
                message.id,
            )
            return
        inbound = Inbound(
            channel=self.name,
            sender=message.author.display_name,
            sender_id=str(message.author.id),
            reply_to=str(message.channel.id),
            text=message.content,
            at=message.created_at.astimezone(UTC),
            ref=str(message.id),
        )
        try:
            await deliver(inbound)
        except Exception:
            log.exception(
                "discord channel %s: message %s was not taken (Discord does not redeliver; "
                "it stays only in the channel's history)",
                self.name,
                message.id,
            )


async def _gateway_loop(client: discord.Client) -> None:
    """``client.connect`` in a task of its own, so cancelling the channel always ends it.

    discord.py connects through ``asyncio.wait_for``, which on Python 3.11 drops a cancellation
    that arrives as the connection completes: awaited directly, the run went on polling the
    gateway and its cancel never finished (an agent's stop hung). Here the cancel reaches this
    frame whatever discord.py does; the client is closed (which ends its loop) and the loop
    cancelled, waited for at most :data:`GATEWAY_CLOSE_WAIT` seconds.
    """
    loop = asyncio.create_task(client.connect(reconnect=True), name="discord-gateway")
    try:
        await asyncio.wait({loop})
    finally:
        if not loop.done():
            await client.close()
            loop.cancel()
            await asyncio.wait({loop}, timeout=GATEWAY_CLOSE_WAIT)
            if not loop.done():
                log.warning(
                    "discord gateway loop still running %.0f s after close; left behind",
                    GATEWAY_CLOSE_WAIT,
                )
            elif not loop.cancelled() and loop.exception() is not None:
                log.info("discord gateway loop ended on close: %s", loop.exception())
    await loop
