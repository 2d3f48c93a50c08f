"""Telegram through aiogram: one long-poller per bot token, webhook mode, rate-kept sending.

Exactly one process may long-poll a token: the runner holds Mission Control's lease keyed by
the token's hash before ``run`` starts, and Telegram's own 409 ("terminated by other getUpdates
request") is raised as ``ChannelFenced`` so the runner stops and reports instead of fighting.
An update is handed to ``deliver`` before the next ``getUpdates`` confirms it (Telegram
confirms by offset), so a crash re-delivers rather than loses; the update id is the ``ref``.

Sending keeps Telegram's limits — about 1 message a second per chat, 20 a minute per group,
30 a second overall — with one queue per chat, so order holds within a chat and a 429 pauses
only what it must, for the ``retry_after`` Telegram asked for.

The bot token sits in every request's URL path; it is never logged (redaction knows its shape,
and nothing here formats a URL into a message).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramConflictError,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramNotFound,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup, Update
from aiolimiter import AsyncLimiter
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_base, wait_exponential

from mcos.channels.base import Deliver, Inbound, Outbound, account_key
from mcos.config.models import ChannelConfig
from mcos.domain.redaction import redact, remember
from mcos.exceptions import ChannelError, ChannelFenced, ChannelRefused

log = logging.getLogger(__name__)

ALLOWED_UPDATES = ["message", "callback_query"]
POLL_SECONDS = 25
"""getUpdates long-poll timeout (Telegram holds the request up to this long)."""


def parse_update(channel: str, data: dict[str, Any] | Update) -> Inbound | None:
    """An update as an inbound item (a text message or a button press); None for other kinds.

    Raises ``ValueError`` naming the problem when ``data`` is not an update at all.
    """
    try:
        update = data if isinstance(data, Update) else Update.model_validate(data)
    except Exception as e:  # pydantic's ValidationError, with the field path
        msg = f"not a Telegram update: {str(e).splitlines()[0]}"
        raise ValueError(msg) from None
    ref = str(update.update_id)
    if update.callback_query is not None:
        q = update.callback_query
        who = q.from_user
        chat = q.message.chat.id if q.message is not None else who.id
        return Inbound(
            channel,
            f"@{who.username}" if who.username else who.full_name,
            f"(pressed a button: {q.data or ''})",
            datetime.now(UTC),
            ref=ref,
            sender_id=str(who.id),
            reply_to=str(chat),
            action=(q.data or "")[:64],
            meta={"callback_id": q.id},
        )
    m = update.message
    if m is None or m.from_user is None:
        return None
    who = m.from_user
    return Inbound(
        channel,
        f"@{who.username}" if who.username else who.full_name,
        m.text or m.caption or "(a message without text)",
        m.date.astimezone(UTC) if m.date.tzinfo else m.date.replace(tzinfo=UTC),
        ref=ref,
        sender_id=str(who.id),
        reply_to=str(m.chat.id),
        meta={"chat_type": m.chat.type},
    )


class _WaitRetryAfter(wait_base):
    """Wait what Telegram's 429 asks for; otherwise back off exponentially."""

    def __init__(self) -> None:
        self.fallback = wait_exponential(multiplier=0.5, max=30)

    def __call__(self, retry_state: Any) -> float:
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None else None
        if isinstance(error, TelegramRetryAfter):
            return float(error.retry_after)
        return float(self.fallback(retry_state))


@dataclass
class _Queued:
    chat: str
    text: str
    buttons: tuple[tuple[str, str], ...]
    done: asyncio.Future[str] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class TelegramChannel:
    """One bot token."""

    kind = "telegram"
    redelivers = True

    def __init__(
        self,
        name: str,
        config: ChannelConfig,
        token: str,
        *,
        webhook_secret: str | None = None,
        max_attempts: int = 12,
    ) -> None:
        remember(token)  # a second line of defence: redacted wherever it might surface
        self.name = name
        self.config = config
        self.webhook_secret = webhook_secret
        self._key = account_key("telegram", token)
        server = TelegramAPIServer.from_base(config.api_url) if config.api_url else None
        session = AiohttpSession(api=server) if server else AiohttpSession()
        self.bot = Bot(token, session=session)
        self.max_attempts = max_attempts
        self.overall = AsyncLimiter(config.rate_overall, 1)
        self.per_chat: dict[str, AsyncLimiter] = {}
        self.per_group: dict[str, AsyncLimiter] = {}
        self.queues: dict[str, asyncio.Queue[_Queued]] = {}
        self.workers: dict[str, asyncio.Task[None]] = {}
        self.sent = 0
        self.retried_after = 0

    def exclusive_key(self) -> str | None:
        """Polling needs the token's lease; a webhook needs none (Telegram pushes)."""
        return self._key if self.config.mode == "polling" else None

    # --- receiving ------------------------------------------------------------------------------
    async def run(self, deliver: Deliver) -> None:
        """Long-poll (or register the webhook and wait) until cancelled."""
        if self.config.mode == "webhook":
            await self._call(
                self.bot.set_webhook(
                    self.config.webhook_url or "",
                    secret_token=self.webhook_secret,
                    allowed_updates=ALLOWED_UPDATES,
                )
            )
            await asyncio.Event().wait()
        await self._call(self.bot.delete_webhook())  # getUpdates is refused while one is set
        offset: int | None = None
        while True:
            updates = await self._call(
                self.bot.get_updates(
                    offset=offset,
                    timeout=POLL_SECONDS,
                    allowed_updates=ALLOWED_UPDATES,
                    request_timeout=POLL_SECONDS + 15,
                )
            )
            for update in updates:
                item = parse_update(self.name, update)
                if item is not None and self._listened(item):
                    await deliver(item)  # raises: not confirmed, offered again
                offset = update.update_id + 1

    def _listened(self, item: Inbound) -> bool:
        """Only configured chats (when any are configured) reach the agent."""
        if not self.config.chats or item.reply_to in self.config.chats:
            return True
        log.info("channel %s: ignored a message from unlisted chat %s", self.name, item.reply_to)
        return False

    async def _call(self, call: Any) -> Any:
        """One API call, its errors translated: 409 fenced, 401/403 refused, the rest retried
        by the runner (429 waits as asked)."""
        try:
            return await call
        except TelegramConflictError as e:
            raise ChannelFenced(f"Telegram: {e.message}") from None
        except (TelegramUnauthorizedError, TelegramForbiddenError, TelegramNotFound) as e:
            raise ChannelRefused(f"Telegram refused the bot token: {e.message}") from None
        except TelegramRetryAfter as e:
            await asyncio.sleep(e.retry_after)
            raise ChannelError(f"Telegram asked to wait {e.retry_after} s") from None
        except (TelegramNetworkError, TelegramServerError, TelegramBadRequest) as e:
            raise ChannelError(redact(f"Telegram: {e.__class__.__name__}: {e.message}")) from None

    async def answer_button(self, item: Inbound, text: str) -> None:
        """Tell the presser what their button did (the little toast in their client)."""
        callback = item.meta.get("callback_id")
        if callback:
            with contextlib.suppress(ChannelError):
                await self._call(self.bot.answer_callback_query(callback, text=text[:200]))
        if item.reply_to:
            await self.send(Outbound(self.name, text, to=item.reply_to))

    # --- sending --------------------------------------------------------------------------------
    async def send(self, message: Outbound) -> str:
        """Queue behind earlier messages to the same chat; the message id once sent."""
        chat = message.to or (self.config.chats[0] if self.config.chats else "")
        if not chat:
            msg = f"channel {self.name}: no chat given and none configured"
            raise ChannelRefused(msg)
        if self.config.chats and chat not in self.config.chats:
            allowed = ", ".join(self.config.chats)
            msg = f"channel {self.name}: chat {chat} is not one of its chats ({allowed})"
            raise ChannelRefused(msg)
        item = _Queued(chat, message.text[:4096], message.buttons)
        queue = self.queues.setdefault(chat, asyncio.Queue())
        await queue.put(item)
        worker = self.workers.get(chat)
        if worker is None or worker.done():
            self.workers[chat] = asyncio.create_task(self._drain(chat), name=f"tg-send-{chat}")
        return await asyncio.shield(item.done)

    async def _drain(self, chat: str) -> None:
        """Send one chat's queue in order, keeping every limit; stop when it is empty."""
        queue = self.queues[chat]
        per_chat = self.per_chat.setdefault(chat, AsyncLimiter(1, 1 / self.config.rate_per_chat))
        group = chat.startswith("-")
        while not queue.empty():
            item = queue.get_nowait()
            try:
                ref = await self._send_one(item, per_chat, group)
            except ChannelError as e:
                item.done.set_exception(e)
            except Exception as e:  # never leave a sender waiting forever
                item.done.set_exception(ChannelError(redact(f"Telegram: {e}")))
            else:
                item.done.set_result(ref)

    async def _send_one(self, item: _Queued, per_chat: AsyncLimiter, group: bool) -> str:
        markup = None
        if item.buttons:
            markup = InlineKeyboardMarkup(
                inline_keyboard=[
                    [InlineKeyboardButton(text=label, callback_data=data[:64])]
                    for label, data in item.buttons
                ]
            )
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(
                (TelegramRetryAfter, TelegramNetworkError, TelegramServerError)
            ),
            wait=_WaitRetryAfter(),
            stop=stop_after_attempt(self.max_attempts),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    await per_chat.acquire()
                    if group:
                        limiter = self.per_group.setdefault(
                            item.chat, AsyncLimiter(self.config.rate_per_group, 60)
                        )
                        await limiter.acquire()
                    await self.overall.acquire()
                    try:
                        sent = await self.bot.send_message(
                            item.chat, item.text, reply_markup=markup
                        )
                    except TelegramRetryAfter:
                        self.retried_after += 1
                        raise
        except (TelegramUnauthorizedError, TelegramForbiddenError, TelegramNotFound) as e:
            raise ChannelRefused(f"Telegram refused: {e.message}") from None
        except TelegramBadRequest as e:
            raise ChannelRefused(f"Telegram refused chat {item.chat}: {e.message}") from None
        except (TelegramRetryAfter, TelegramNetworkError, TelegramServerError) as e:
            raise ChannelError(
                redact(f"Telegram: gave up after {self.max_attempts} attempts: {e.message}")
            ) from None
        self.sent += 1
        return str(sent.message_id)

    async def aclose(self, timeout: float = 10.0) -> None:
        """Let queued messages go out (up to ``timeout`` s), then close the session."""
        workers = [w for w in self.workers.values() if not w.done()]
        if workers:
            await asyncio.wait(workers, timeout=timeout)
        for w in workers:
            w.cancel()
        await self.bot.session.close()
