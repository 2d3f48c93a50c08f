"""Posts that survive the agent: queued in the spool before the service is called, sent once.

A post (``post_to_channel``, a reply that goes back out on a channel) is written to the spool
first; one sender per (channel, chat) then sends that chat's posts one at a time in the order
they were queued — so order holds per chat and the channel's own limits (Telegram's per-chat
and overall rates, its 429 ``retry_after``; discord.py's rate-limit handling) still apply
inside ``send``. A post the service refused for good (a chat not configured, a bad request) is
marked ``failed`` and its caller told; one it could not take now (a network error, a 5xx, a
Telegram that kept answering 429) is retried with backoff until it goes. After a crash or a
restart the unsent posts go out first; sent ones never again.

**The one duplicate window**: the spool marks a post ``sending`` before the call and ``sent``
right after it returned. If the process dies after the service accepted the post and before
that mark is on disk (the time of one response parse and one fsync'd SQLite commit — a
millisecond or two), the post is sent again on restart: at most one duplicate per chat per crash.
Neither Telegram's ``sendMessage`` nor a Discord post has an idempotency key mcos could use to
close it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from tenacity import AsyncRetrying, retry_if_exception, wait_exponential_jitter

from mcos.channels.base import Channel, Deliver, Outbound
from mcos.channels.spool import Post, Spool, SpoolError
from mcos.exceptions import (
    AuthError,
    ChannelRefused,
    Forbidden,
    InvalidRequest,
    McosError,
)

log = logging.getLogger(__name__)

Report = Callable[[str, str], Awaitable[None]]


def refused_for_good(error: BaseException) -> bool:
    """Whether sending again cannot help: the service (or the channel's own check) refused the
    post itself. A refused *token* is not: the post waits until the token is fixed."""
    if isinstance(error, ChannelRefused | InvalidRequest | Forbidden):
        return True
    if isinstance(error, McosError) and not isinstance(error, AuthError):
        status = error.details.get("status")
        return isinstance(status, int) and 400 <= status < 500 and status not in (401, 429)
    return False


def _body(message: Outbound) -> dict[str, Any]:
    return {
        "text": message.text,
        "to": message.to,
        "subject": message.subject,
        "buttons": [list(b) for b in message.buttons],
        "reply_to_ref": message.reply_to_ref,
    }


def _message(channel: str, body: dict[str, Any]) -> Outbound:
    """A spooled body back as a post; ``ValueError`` when it is not one."""
    text, to = body.get("text"), body.get("to", "")
    buttons = body.get("buttons", [])
    if not isinstance(text, str) or not isinstance(to, str) or not isinstance(buttons, list):
        msg = "not a spooled post (text, to and buttons are missing or of the wrong type)"
        raise ValueError(msg)
    return Outbound(
        channel,
        text,
        to=to,
        subject=str(body.get("subject", "")),
        buttons=tuple((str(b[0]), str(b[1])) for b in buttons),
        reply_to_ref=str(body.get("reply_to_ref", "")),
    )


class Outbox:
    """The senders of one agent's outboxed channels."""

    def __init__(
        self,
        spool: Spool,
        channels: dict[str, Channel],
        report: Report,
        *,
        settle: float = 10.0,
        backoff: tuple[float, float] = (1.0, 300.0),
    ) -> None:
        """``settle``: how long ``post`` waits for the service before answering "queued"."""
        self.spool = spool
        self.channels = channels
        self.report = report
        self.settle = settle
        self.backoff = backoff
        self.workers: dict[tuple[str, str], asyncio.Task[None]] = {}
        self.waiters: dict[int, asyncio.Future[str]] = {}
        self.resuming: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Send what a previous run left unsent (and whatever is posted from now on)."""
        if self.resuming is None or self.resuming.done():
            self.resuming = asyncio.create_task(self._resume(), name="outbox-resume")

    async def _resume(self) -> None:
        failures = 0
        while True:
            try:
                unsent = self.spool.unsent()
            except SpoolError as e:  # another instance holds it, or the disk is in trouble
                failures += 1
                await self.report("spool_failed", e.message)
                low, high = self.backoff
                await asyncio.sleep(min(high, low * 2.0 ** min(failures, 16)))
                continue
            break
        for post in unsent:
            if post.channel not in self.channels:
                log.warning(
                    "outbox: post %d is for channel %s, which this agent no longer has; kept",
                    post.id,
                    post.channel,
                )
                continue
            self._wake(post.channel, post.chat)

    async def post(self, channel: str, message: Outbound) -> str:
        """Queue durably, then wait up to ``settle`` seconds for the service; the service's id,
        or ``outbox #N (queued)`` while it has not taken it yet. Raises what the service
        answered when it refused the post for good."""
        post_id = self.spool.queue(channel, message.to, _body(message))
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.waiters[post_id] = done
        self._wake(channel, message.to)
        try:
            async with asyncio.timeout(self.settle):
                return await asyncio.shield(done)
        except TimeoutError:
            return f"outbox #{post_id} (queued; it goes out when {channel} takes it)"
        finally:
            self.waiters.pop(post_id, None)

    def _wake(self, channel: str, chat: str) -> None:
        key = (channel, chat)
        worker = self.workers.get(key)
        if worker is None or worker.done():
            self.workers[key] = asyncio.create_task(
                self._drain(channel, chat), name=f"outbox-{channel}-{chat or 'default'}"
            )

    async def _drain(self, channel: str, chat: str) -> None:
        """Send one chat's unsent posts in order until none is left (the spool file's own
        trouble is reported and tried again: the posts are still in it)."""
        target = self.channels[channel]
        failures = 0
        while True:
            try:
                posts = self.spool.unsent(channel, chat)
                if not posts:
                    return
                for post in posts:
                    await self._send(target, post)
                failures = 0
            except SpoolError as e:
                failures += 1
                await self.report("spool_failed", e.message)
                low, high = self.backoff
                await asyncio.sleep(min(high, low * 2.0 ** min(failures, 16)))

    async def _send(self, target: Channel, post: Post) -> None:
        try:
            message = _message(post.channel, json.loads(post.body))
        except (ValueError, TypeError, AttributeError, IndexError) as e:
            why = f"outbox post {post.id} of {post.channel} is unreadable ({e}); set aside"
            self.spool.set_outbound(post.id, "corrupt", str(e))
            await self.report("outbox_corrupt", why)
            self._settle(post.id, error=McosError(why))
            return
        low, high = self.backoff
        retrying = AsyncRetrying(
            retry=retry_if_exception(lambda e: not refused_for_good(e)),
            wait=wait_exponential_jitter(multiplier=low, max=high),
            before_sleep=lambda state: self._retrying(post, state.outcome),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    self.spool.sending(post.id)
                    ref = await target.send(message)
        except Exception as e:  # refused for good (the only way out of the retrying)
            self.spool.set_outbound(post.id, "failed", str(e))
            if post.id in self.waiters:
                log.warning("outbox: post %d to %s refused: %s", post.id, post.channel, e)
            else:  # nobody waits for the answer any more: the agent's log must say it
                await self.report(
                    "outbox_failed", f"channel {post.channel}: post {post.id} refused: {e}"
                )
            self._settle(post.id, error=e)
            return
        self.spool.sent(post.id, ref)
        self._settle(post.id, ref=ref)

    def _retrying(self, post: Post, outcome: Any) -> None:
        error = outcome.exception() if outcome is not None else None
        reason = f"{type(error).__name__}: {error}" if error else "unknown"
        self.spool.retry_later(post.id, reason)
        log.warning(
            "outbox: post %d to %s not sent yet (%s); retrying", post.id, post.channel, reason
        )

    def _settle(self, post_id: int, *, ref: str = "", error: BaseException | None = None) -> None:
        done = self.waiters.get(post_id)
        if done is None or done.done():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(ref)

    async def stop(self, timeout: float = 10.0) -> None:
        """Let the senders finish what they hold (up to ``timeout``), then stop them; what is
        left stays queued for the next start."""
        if self.resuming is not None:
            self.resuming.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.resuming
            self.resuming = None
        workers = [w for w in self.workers.values() if not w.done()]
        if workers:
            await asyncio.wait(workers, timeout=timeout)
        for worker in workers:
            worker.cancel()
        for worker in workers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await worker
        self.workers = {}


class OutboxedChannel:
    """A channel whose ``send`` goes through the outbox; everything else is the channel's."""

    def __init__(self, inner: Channel, outbox: Outbox) -> None:
        self.inner = inner
        self.outbox = outbox
        self.name = inner.name
        self.kind = inner.kind
        self.redelivers = inner.redelivers

    def exclusive_key(self) -> str | None:
        """The channel's own lease key."""
        return self.inner.exclusive_key()

    async def run(self, deliver: Deliver) -> None:
        """The channel's own receiving."""
        await self.inner.run(deliver)

    async def send(self, message: Outbound) -> str:
        """Queued durably, then sent in order (see :class:`Outbox`)."""
        return await self.outbox.post(self.name, message)

    async def aclose(self) -> None:
        """The channel's own close (the outbox is stopped by its owner first)."""
        await self.inner.aclose()
