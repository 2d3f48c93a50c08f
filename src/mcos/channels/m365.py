"""A Microsoft 365 mailbox as a channel: Graph mail in (by delta query), Graph sendMail out.

The same rules as the IMAP channel (:mod:`mcos.channels.email`), with Graph's equivalents:
each watched folder is read by a *delta query*, whose ``@odata.deltaLink`` is kept in the run
dir so a restart resumes where the last complete round ended. A message is triaged once: after
``deliver`` returned, the channel adds the category ``McosTriaged`` to it in the mailbox itself
(the ``$McosTriaged`` keyword's counterpart), so a restart, a resync or another host never
hands it over again; a message ``deliver`` refused keeps no category and the deltaLink is not
advanced past it, so it is offered again at the next look. Triage rules, the trust in From
(only the receiving server's Authentication-Results), untrusted content and the one-receiver
lease are the IMAP channel's own code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from mcos.channels.base import Deliver, Outbound, account_key
from mcos.channels.email import (
    MAX_BODY,
    ParsedMail,
    html_to_text,
    sender_authenticated,
    to_inbound,
)
from mcos.channels.graph import Graph, GraphError, user_path
from mcos.channels.oauth import OAuthTokens
from mcos.config.models import ChannelConfig
from mcos.domain.triage import Triage, triage
from mcos.exceptions import ChannelError

TRIAGED: Final = "McosTriaged"
"""The Outlook category that marks a message as taken (delivered, or ignored by a rule)."""
DEVICE_SCOPES: Final = ("Mail.ReadWrite", "Mail.Send")
"""Delegated permissions asked for on the device-code sign-in."""
WELL_KNOWN: Final = frozenset(
    {"inbox", "archive", "deleteditems", "drafts", "junkemail", "outbox", "sentitems"}
)
"""Graph's well-known folder names, usable wherever a folder id is."""
SELECT: Final = (
    "subject,from,body,internetMessageId,receivedDateTime,categories,internetMessageHeaders"
)
PREFER: Final = {"Prefer": 'outlook.body-content-type="text", IdType="ImmutableId"'}
"""Plain-text bodies, and ids that survive a move (so a ref stays one message's)."""


def m365_key(config: ChannelConfig) -> str:
    """The lease key of a Microsoft 365 mailbox: one receiver per mailbox across hosts."""
    assert config.oauth is not None  # the fleet file's validation requires it
    return account_key("m365", f"{config.oauth.tenant}/{config.mailbox or config.address}")


def parse_graph_message(item: dict[str, Any]) -> ParsedMail:
    """A Graph message resource as the IMAP channel's parsed mail (the same triage follows)."""
    sender = (item.get("from") or {}).get("emailAddress") or {}
    body = item.get("body") or {}
    text = str(body.get("content") or "")
    if str(body.get("contentType", "text")).lower() == "html":
        text = html_to_text(text)
    received: datetime | None = None
    with contextlib.suppress(ValueError, TypeError):
        received = datetime.fromisoformat(str(item.get("receivedDateTime"))).astimezone(UTC)
    headers = item.get("internetMessageHeaders") or []
    results = tuple(
        str(h.get("value", ""))
        for h in headers
        if str(h.get("name", "")).lower() == "authentication-results"
    )[:20]
    return ParsedMail(
        display=" ".join(str(sender.get("name") or "").split())[:200],
        address=" ".join(str(sender.get("address") or "").split())[:320],
        subject=" ".join(str(item.get("subject") or "").split()),
        body=text.strip()[:MAX_BODY],
        message_id=str(item.get("internetMessageId") or "")[:998],
        date=received,
        auth_results=results,
    )


class DeltaLinks:
    """Each folder's last deltaLink, in a file of the run dir (0600: it names the mailbox)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.links: dict[str, str] = {}
        if path.exists():
            try:
                loaded = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                loaded = {}  # a full resync: the category keeps it from delivering twice
            if isinstance(loaded, dict):
                self.links = {str(k): str(v) for k, v in loaded.items()}

    def get(self, folder: str) -> str | None:
        """Where the folder's next delta round starts, if a round ever completed."""
        return self.links.get(folder)

    def set(self, folder: str, link: str | None) -> None:
        """Remember (or, None, forget) a folder's deltaLink, written at once."""
        if link is None:
            self.links.pop(folder, None)
        else:
            self.links[folder] = link
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(self.links, out)
        os.replace(tmp, self.path)


class M365Channel:
    """One Microsoft 365 mailbox: its folders read by delta query, mail sent by Graph."""

    kind = "m365"
    redelivers = True

    def __init__(
        self,
        name: str,
        config: ChannelConfig,
        tokens: OAuthTokens,
        *,
        state_dir: Path,
        verify: str | bool = True,
        logger: logging.Logger | None = None,
    ) -> None:
        """``tokens``: the account's msal tokens; ``state_dir``: the run dir (deltaLinks);
        ``verify``: a CA bundle for Graph's TLS (tests, a private CA)."""
        self.name = name
        self.config = config
        self.log = logger or logging.getLogger("mcos.channels.m365")
        self.graph = Graph(name, config.graph_url, tokens, verify=verify)
        self.user = user_path(config.mailbox)
        self.deltas = DeltaLinks(state_dir / "m365" / f"{name}.json")
        self._folders: dict[str, str] = {}
        self._closing = False
        if config.authserv_id is None and any(r.sender is not None for r in config.rules):
            self.log.warning(
                "m365 %s: no authserv_id is set, so its rules with a from glob never match",
                name,
            )

    def __repr__(self) -> str:
        return f"M365Channel({self.name!r}, {self.user})"

    def exclusive_key(self) -> str | None:
        """One receiver per mailbox across hosts (the category makes two harmless, not cheap)."""
        return m365_key(self.config)

    # receiving

    async def run(self, deliver: Deliver) -> None:
        """Look at every folder, then wait ``poll``, until cancelled. A misconfiguration
        (consent, permissions) ends the run: the runner reports it and waits for a person."""
        poll = self.config.poll_interval.total_seconds()
        while not self._closing:
            for folder in self.config.folders:
                await self.look(folder, deliver)
            await asyncio.sleep(poll)

    async def look(self, folder: str, deliver: Deliver) -> int:
        """One delta round over ``folder``: triage what is new; how many ``deliver`` refused."""
        start = self.deltas.get(folder) or (
            f"{self.user}/mailFolders/{self._well_known(folder)}/messages/delta"
        )
        params = None if "?" in start or start.startswith("http") else {"$select": "id,categories"}
        kept = 0
        last: str | None = None
        try:
            async for page in self.graph.pages(start, params=params, headers=PREFER):
                for item in page.get("value", []):
                    if "@removed" in item or TRIAGED in (item.get("categories") or []):
                        continue
                    kept += await self._take(str(item["id"]), folder, deliver)
                last = page.get("@odata.deltaLink") or last
        except GraphError as e:
            if e.status_code == 410 or e.error in ("syncStateNotFound", "resyncRequired"):
                self.log.warning("m365 %s: %s: delta state expired; resyncing", self.name, folder)
                self.deltas.set(folder, None)
                return kept
            raise
        if last is not None and kept == 0:
            self.deltas.set(folder, last)
        return kept

    def _well_known(self, folder: str) -> str:
        lowered = folder.lower()
        return lowered if lowered in WELL_KNOWN else self._folders.get(folder, folder)

    async def _take(self, message_id: str, folder: str, deliver: Deliver) -> int:
        """Read, triage, deliver and confirm one message; 1 if ``deliver`` refused it."""
        try:
            item = await self.graph.call(
                "GET",
                f"{self.user}/messages/{message_id}",
                params={"$select": SELECT},
                headers=PREFER,
            )
        except GraphError as e:
            if e.status_code == 404:  # deleted since the delta round listed it
                return 0
            raise
        if TRIAGED in (item.get("categories") or []):
            return 0
        mail = parse_graph_message(item)
        vouched = sender_authenticated(mail.auth_results, self.config.authserv_id, mail.address)
        decision = triage(
            self.config.rules,
            mail.address,
            mail.subject,
            mail.body,
            authenticated=vouched is not None,
        )
        ref = f"m365/{message_id}"
        if decision.action != "ignore":
            inbound = to_inbound(
                self.name, mail, decision, folder=folder, ref=ref, now=datetime.now(UTC)
            )
            try:
                await deliver(inbound)
            except Exception as exc:  # kept uncategorised, offered again next look
                self.log.warning(
                    "m365 %s: %s not taken (%s: %s); kept for the next look",
                    self.name,
                    ref,
                    type(exc).__name__,
                    exc,
                )
                return 1
        await self._confirm(message_id, list(item.get("categories") or []), decision)
        self.log.info(
            "m365 %s: %s %s%s",
            self.name,
            ref,
            decision.action,
            f" -> {decision.move_to}" if decision.move_to else "",
        )
        return 0

    async def _confirm(self, message_id: str, categories: list[str], decision: Triage) -> None:
        change: dict[str, Any] = {"categories": [*categories, TRIAGED]}
        if decision.flag:
            change["flag"] = {"flagStatus": "flagged"}
        await self.graph.call("PATCH", f"{self.user}/messages/{message_id}", json=change)
        if decision.move_to:
            target = await self._folder_id(decision.move_to)
            await self.graph.call(
                "POST", f"{self.user}/messages/{message_id}/move", json={"destinationId": target}
            )

    async def _folder_id(self, name: str) -> str:
        """A folder's id by display name (top level), created when missing."""
        if name.lower() in WELL_KNOWN:
            return name.lower()
        if name in self._folders:
            return self._folders[name]
        quoted = name.replace("'", "''")
        found = await self.graph.call(
            "GET", f"{self.user}/mailFolders", params={"$filter": f"displayName eq '{quoted}'"}
        )
        folders = found.get("value", [])
        if folders:
            self._folders[name] = str(folders[0]["id"])
        else:
            made = await self.graph.call(
                "POST", f"{self.user}/mailFolders", json={"displayName": name}
            )
            self._folders[name] = str(made["id"])
        return self._folders[name]

    # sending

    async def send(self, message: Outbound) -> str:
        """Send one mail with Graph's sendMail (a copy kept in Sent Items); a reference."""
        if not message.to:
            msg = f"channel {self.name}: a mail needs a recipient (Outbound.to)"
            raise ChannelError(msg, channel=self.name)
        mail = {
            "message": {
                "subject": message.subject,
                "body": {"contentType": "Text", "content": message.text},
                "toRecipients": [{"emailAddress": {"address": message.to}}],
            },
            "saveToSentItems": True,
        }
        await self.graph.call("POST", f"{self.user}/sendMail", json=mail)
        ref = f"sendMail:{datetime.now(UTC):%Y%m%dT%H%M%S.%f}"
        self.log.info("m365 %s: sent mail to %s", self.name, message.to)
        return ref

    async def aclose(self) -> None:
        """Nothing is queued (each mail is sent at once); stop looking, close connections."""
        self._closing = True
        await self.graph.aclose()
