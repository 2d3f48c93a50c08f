"""Paging humans on their own channels, and the buttons they answer with.

Mission Control pages a person when a message for them is urgent, a P0 incident needs them, or
an approval request waits for their vote. Each person is paged once per subject (the store's
``(human, key)`` is unique), on the first of their ``page`` channels that takes it. A button
press is trusted only as far as the channel vouches for the presser: the sender's id must be
the one the fleet file gives that person for that channel kind, and the vote then goes through
the same governance code as the dashboard's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from mcos.api_models import ChannelInboundIn
from mcos.channels.base import Channel, Inbound, Outbound
from mcos.domain.audit import AuditEvent
from mcos.domain.messages import Message, Priority
from mcos.domain.paging import ACK, Page, PageKind, PageRoute, parse_button
from mcos.domain.tokens import Principal, PrincipalKind
from mcos.exceptions import McosError
from mcos.server.context import MissionControl

log = logging.getLogger(__name__)


@dataclass
class Pager:
    """Pages humans through Mission Control's own channels."""

    mc: MissionControl
    channels: dict[str, Channel] = field(default_factory=dict)
    """Mission Control's own channels that are running here."""

    @property
    def routes(self) -> dict[str, tuple[PageRoute, ...]]:
        """Each human's channels, in the order they are tried."""
        return self.mc.settings.page_routes

    def identity(self, kind: str, sender_id: str) -> str | None:
        """The human a channel's sender id belongs to (exact match on their configured id)."""
        for human, routes in self.routes.items():
            if any(r.kind == kind and r.address == sender_id for r in routes):
                return human
        return None

    # --- paging ----------------------------------------------------------------------------------
    async def page(
        self,
        humans: list[str],
        key: str,
        kind: PageKind,
        subject: str,
        body: str,
        approval: int | None = None,
    ) -> int:
        """Page each person once about ``key``; how many new pages went out."""
        sent = 0
        for human in humans:
            if not self.routes.get(human):
                continue
            page = await self.mc.store.open_page(human, key, kind, subject[:300], body[:4000])
            if page is None:
                continue  # already paged about this
            sent += await self._deliver(page, approval)
        return sent

    async def sweep(self) -> int:
        """Retry pages that failed and re-send those nobody acknowledged in time (each at most
        ``max_page_attempts`` times): a page must not fail silently."""
        settings = self.mc.settings
        now = await self.mc.store.now()
        again = 0
        for page in await self.mc.store.pages(limit=500):
            if page.attempts >= settings.max_page_attempts or page.state in ("acked", "pending"):
                continue
            due = page.state == "failed" or (
                page.sent_at is not None and now - page.sent_at >= settings.repage_after
            )
            if not due:
                continue
            approval = page.key.removeprefix("approval:")
            again += await self._deliver(
                page, int(approval) if approval.isdigit() else None, reminder=page.state == "sent"
            )
        return again

    async def _deliver(self, page: Page, approval: int | None, *, reminder: bool = False) -> int:
        buttons: tuple[tuple[str, str], ...] = (("Acknowledge", f"{ACK}:{page.id}"),)
        if approval is not None:
            buttons = (("Approve", f"approve:{approval}"), ("Deny", f"deny:{approval}"), *buttons)
        again = "REMINDER, " if reminder else ""
        text = (
            f"[{again}{page.kind.value.upper()}] {page.subject}\n\n{page.body}\n\n(page {page.id})"
        )
        errors = []
        for route in self.routes[page.human]:
            channel = self.channels.get(route.channel)
            if channel is None:
                errors.append(f"{route.channel}: not running")
                continue
            try:
                ref = await channel.send(
                    Outbound(route.channel, text, to=route.address, subject=page.subject,
                             buttons=buttons)
                )  # fmt: skip
            except (McosError, OSError) as e:
                errors.append(f"{route.channel}: {getattr(e, 'message', e)}")
                continue
            await self.mc.store.page_sent(page.id, state="sent", channel=route.channel, ref=ref)
            await self._audit("page.sent", page, channel=route.channel)
            return 1
        failed = "; ".join(errors)[:1000]
        await self.mc.store.page_sent(page.id, state="failed", channel="", error=failed)
        await self._audit("page.failed", page, error=failed)
        log.warning("page %s to %s failed: %s", page.id, page.human, failed)
        return 0

    async def _audit(self, action: str, page: Page, **detail: str) -> None:
        await self.mc.store.record(
            AuditEvent(
                actor="system:pager",
                action=action,
                targets={"human": page.human, "page": str(page.id)},
                detail={"key": page.key, "kind": page.kind.value, **detail},
            )
        )

    async def message_to_human(self, message: Message) -> int:
        """A message stored for a human: paged when it is an approval request, a P0, or urgent."""
        meta = message.meta
        if "approval" in meta and meta["approval"].isdigit():
            number = int(meta["approval"])
            return await self.page(
                [message.recipient], f"approval:{number}", PageKind.APPROVAL,
                message.subject, message.body, approval=number,
            )  # fmt: skip
        if "incident" in meta and "P0" in (meta.get("gate"), meta.get("severity")):
            return await self.page(
                [message.recipient], f"incident:{meta['incident']}:P0", PageKind.P0,
                message.subject, message.body,
            )  # fmt: skip
        if message.priority is Priority.URGENT:
            return await self.page(
                [message.recipient], f"message:{message.id}", PageKind.URGENT,
                f"from {message.sender}: {message.subject}", message.body,
            )  # fmt: skip
        return 0

    async def page_urgent_item(self, channel: str, agent: str, item: ChannelInboundIn) -> int:
        """An inbound item a channel's rules called urgent: every paged human hears of it."""
        return await self.page(
            sorted(self.routes),
            f"channel:{channel}:{item.ref}",
            PageKind.URGENT,
            f"urgent on {channel} (for {agent}): {item.subject or item.text[:80]}",
            f"From {item.sender}. {agent} has it too.\n\n{item.text[:1500]}",
        )

    # --- answers -----------------------------------------------------------------------------
    async def answer(self, channel: str, kind: str, item: Inbound) -> str:
        """A person's button press or text on a paging channel; the reply to show them."""
        human = self.identity(kind, item.sender_id)
        if human is None:
            await self.mc.store.record(
                AuditEvent(
                    actor=f"{kind}:{item.sender_id}"[:100],
                    action="page.answer",
                    targets={"channel": channel},
                    detail={"rule": "the sender is no human of the fleet", "data": item.action},
                    outcome="refused",
                )
            )
            return "You are not someone this fleet pages; nothing was done."
        if not item.action:
            return "Use the buttons under a page (or the dashboard) to answer."
        parsed = parse_button(item.action)
        if parsed is None:
            return "That button is not one of Mission Control's."
        verb, number = parsed
        if verb == ACK:
            return await self._ack(human, number, via=channel)
        from mcos.server.governance import Governance  # noqa: PLC0415 (governance imports paging)

        me = Principal(PrincipalKind.OPERATOR, human)
        try:
            outcome = await Governance(self.mc).vote(
                me, number, "approve" if verb == "approve" else "deny", f"{verb}d via {channel}"
            )
        except McosError as e:
            return f"Not recorded: {e.message}"
        for page in await self.mc.store.pages(human=human):
            if page.key == f"approval:{number}" and page.state != "acked":
                await self.mc.store.ack_page(page.id, human)
        state = outcome.approval.state if outcome.approval else "pending"
        return f"Your {verb} vote on request {number} is recorded (request now {state})."

    async def _ack(self, human: str, page_id: int, via: str) -> str:
        page = await self.mc.store.page(page_id)
        if page is None or page.human != human:
            return f"Page {page_id} is not yours."
        done = await self.mc.store.ack_page(page_id, human)
        if done is None:
            return f"Page {page_id} was already acknowledged."
        await self._audit("page.acked", done, via=via)
        return f"Page {page_id} acknowledged."
