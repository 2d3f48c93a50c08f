"""An e-mail account as a channel: IMAP in (triaged by the fleet file's rules), SMTP out.

Each configured folder gets its own IMAP connection, which IDLEs when the server can (and
``idle`` is on) and otherwise polls every ``poll``. A message is triaged once: after
``deliver`` returned, the channel sets the keyword ``$McosTriaged`` on it in the mailbox
itself, so a restart or another host never hands it over again, and ``\\Seen`` stays the
humans' business. A message ``deliver`` refused keeps no keyword and is offered again at the
next look.

Mail content is untrusted: it reaches Mission Control as data, and only the rules (never the
mail's own words) make it urgent. A rule's ``from`` glob trusts the From address only when the
receiving server's Authentication-Results header (RFC 8601, parsed by ``authres``; only the
topmost one bearing the configured ``authserv_id``) says DKIM or SPF passed aligned with it, or
DMARC passed (:func:`sender_authenticated`). The channel sends only when asked to through
``send``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage, Message
from email.utils import format_datetime, make_msgid, parseaddr, parsedate_to_datetime
from html.parser import HTMLParser
from typing import Final, Literal

import aioimaplib  # type: ignore[import-untyped]
import aiosmtplib
import authres  # type: ignore[import-untyped]

from mcos.channels.base import Deliver, Inbound, Outbound, account_key
from mcos.channels.oauth import OAuthTokens
from mcos.channels.oauth_refresh import RefreshTokens
from mcos.config.models import ChannelConfig
from mcos.domain.triage import Triage, triage
from mcos.exceptions import ChannelMisconfigured, McosError

TRIAGED: Final = "$McosTriaged"
"""The IMAP keyword that marks a message as taken (delivered, or ignored by a rule)."""
MAX_BODY = 20_000
"""Characters of body text handed on; the rest of a long mail is cut."""
MAX_FETCH = 4 * 1024 * 1024
"""Bytes of a message fetched: attachments past this are never read."""
IDLE_RENEW = 29 * 60.0
"""Seconds before IDLE is re-issued (servers may drop an IDLE after 30 minutes)."""
COMMAND_TIMEOUT = 15.0
"""Seconds an IMAP command (or the greeting) may take before the connection is given up."""
IMAP_PORTS: Final = {"ssl": 993, "starttls": 143, "none": 143}


def mailbox_key(config: ChannelConfig) -> str:
    """The lease key of an IMAP mailbox: one receiver per account across hosts."""
    port = config.imap_port or IMAP_PORTS[config.imap_tls]
    return account_key("email", f"{config.username}@{config.imap_host}:{port}")


SMTP_PORTS: Final = {"ssl": 465, "starttls": 587, "none": 25}

Tls = Literal["ssl", "starttls", "none"]


class ChannelError(McosError):
    """A channel's server refused or failed; names the server and quotes its reply."""

    code = "channel_error"
    status = 502

    def __init__(self, message: str, *, channel: str, host: str, reply: str = "") -> None:
        super().__init__(message, channel=channel, host=host, reply=reply)
        self.channel = channel
        self.host = host
        self.reply = reply


# --- IMAP: aioimaplib has no type hints, so its Any stays inside this class -------------------


class _Imap:
    """One IMAP connection with typed calls; every refusal raises ChannelError."""

    def __init__(
        self, channel: str, host: str, port: int, tls: Tls, ssl_context: ssl.SSLContext | None
    ) -> None:
        self.channel, self.host, self.port, self.tls = channel, host, port, tls
        self.where = f"{host}:{port}"
        self.lost = asyncio.Event()
        self._ssl = ssl_context
        self._client = aioimaplib.IMAP4(
            host=host,
            port=port,
            timeout=COMMAND_TIMEOUT,
            conn_lost_cb=lambda _exc: self.lost.set(),
            ssl_context=(ssl_context or ssl.create_default_context()) if tls == "ssl" else None,
        )

    def _refused(self, what: str, response: object) -> ChannelError:
        reply = _reply_text(response)
        return ChannelError(
            f"IMAP server {self.where} refused {what}: {reply}",
            channel=self.channel,
            host=self.where,
            reply=reply,
        )

    def _check(self, what: str, response: object) -> list[bytes]:
        if getattr(response, "result", None) != "OK":
            raise self._refused(what, response)
        return [bytes(line) for line in getattr(response, "lines", [])]

    def has(self, capability: str) -> bool:
        """Whether the server announced the capability (after login, the full list)."""
        return bool(self._client.has_capability(capability))

    async def open(self, username: str, password: str, *, token: str | None = None) -> None:
        """Connect, upgrade with STARTTLS where asked, log in (with a password, or with SASL
        XOAUTH2 when given an OAuth ``token``)."""
        await self._client.wait_hello_from_server()
        if self.tls == "starttls":
            await self._starttls()
        if token is not None:
            response = await self._client.xoauth2(username, token)
        else:
            response = await self._client.login(username, password)
        if response.result != "OK":
            reply = _reply_text(response)
            what = (
                "the OAuth token (XOAUTH2)" if token is not None else "the password's key reference"
            )
            raise ChannelError(
                f"IMAP server {self.where} refused the login of {username!r}: {reply} "
                f"(check the username and {what})",
                channel=self.channel,
                host=self.where,
                reply=reply,
            )

    async def _starttls(self) -> None:
        protocol = self._client.protocol
        if "STARTTLS" not in protocol.capabilities:
            raise ChannelError(
                f"IMAP server {self.where} offers no STARTTLS (set imap_tls: ssl or none)",
                channel=self.channel,
                host=self.where,
            )
        command = aioimaplib.Command("STARTTLS", protocol.new_tag(), loop=protocol.loop)
        async with asyncio.timeout(30.0):
            self._check("STARTTLS", await protocol.execute(command))
        loop = asyncio.get_running_loop()
        protocol.transport = await loop.start_tls(
            protocol.transport,
            protocol,
            self._ssl or ssl.create_default_context(),
            server_hostname=self.host,
        )
        async with asyncio.timeout(30.0):
            await protocol.capability()

    async def select(self, folder: str) -> int:
        """Open a folder read-write; its UIDVALIDITY."""
        lines = self._check(f"SELECT {folder}", await self._client.select(_mailbox(folder)))
        for line in lines:
            if match := re.search(rb"\[UIDVALIDITY (\d+)\]", line):
                return int(match[1])
        return 0

    async def untriaged(self) -> list[int]:
        """UIDs of the selected folder's messages not triaged yet (nor deleted), oldest first."""
        response = await self._client.uid_search("UNKEYWORD", TRIAGED, "UNDELETED", charset=None)
        lines = self._check("SEARCH", response)
        # aioimaplib strips "* SEARCH": the first line is the bare list, the last the status.
        found = lines[0].split() if len(lines) > 1 else []
        return sorted(int(n) for n in found if n.isdigit())

    async def fetch(self, uid: int) -> bytes | None:
        """The message's bytes (at most MAX_FETCH), read without setting ``\\Seen``; None if
        it is gone."""
        response = await self._client.uid("fetch", str(uid), f"(BODY.PEEK[]<0.{MAX_FETCH}>)")
        lines = getattr(response, "lines", [])
        if getattr(response, "result", None) != "OK":
            raise self._refused(f"FETCH of UID {uid}", response)
        literals = [bytes(line) for line in lines if isinstance(line, bytearray)]
        if literals:
            return literals[0]
        if any(isinstance(line, bytes) and b"FETCH" in line for line in lines):
            return b""
        return None

    async def add_flags(self, uid: int, flags: list[str]) -> None:
        """STORE +FLAGS on one message."""
        response = await self._client.uid(
            "store", str(uid), "+FLAGS.SILENT", f"({' '.join(flags)})"
        )
        self._check(f"STORE on UID {uid}", response)

    async def move(self, uid: int, folder: str) -> None:
        """MOVE one message, creating the folder if missing; COPY + expunge without MOVE."""
        target = _mailbox(folder)
        for attempt in range(2):
            if self.has("MOVE"):
                response = await self._client.uid("move", str(uid), target)
            else:
                response = await self._client.uid("copy", str(uid), target)
            if response.result == "OK":
                break
            if attempt == 0:  # most likely a missing folder ([TRYCREATE]): create, try again
                await self._client.create(target)
                continue
            raise self._refused(f"moving UID {uid} to {folder}", response)
        if not self.has("MOVE"):
            await self.add_flags(uid, ["\\Deleted"])
            if self.has("UIDPLUS"):
                self._check("UID EXPUNGE", await self._client.uid("expunge", str(uid)))
            else:
                self._check("EXPUNGE", await self._client.expunge())

    async def idle(self, timeout: float) -> None:
        """IDLE until the server reports a change, ``timeout`` passes or the line drops."""
        async with asyncio.timeout(COMMAND_TIMEOUT):  # unlike 3.11's wait_for, keeps a cancel
            idle = await self._client.idle_start(timeout=timeout)
        push = asyncio.ensure_future(self._client.wait_server_push(timeout=timeout + 5))
        dropped = asyncio.ensure_future(self.lost.wait())
        try:
            # Looked at each second: a cancellation aioimaplib's own wait_for dropped while IDLE
            # started would otherwise leave us waiting out the whole IDLE (up to IDLE_RENEW).
            while not (push.done() or dropped.done()):
                await asyncio.wait(
                    {push, dropped}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED
                )
                _stop_if_cancelled()
        finally:
            for waiter in (push, dropped):
                if waiter.done() and not waiter.cancelled():
                    waiter.exception()  # retrieved: a push timeout is not an error
                waiter.cancel()
            if not self.lost.is_set() and self._client.has_pending_idle():
                self._client.idle_done()
                # Never let ending IDLE replace a cancellation or the error that got us here.
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(10.0):
                        await idle
        if self.lost.is_set():
            raise ConnectionError(f"IMAP server {self.where} closed the connection")

    async def pause(self, seconds: float) -> None:
        """Wait ``seconds`` (or until the line drops), then NOOP so the server reports news."""
        try:
            async with asyncio.timeout(seconds):  # unlike 3.11's wait_for, never eats a cancel
                await self.lost.wait()
        except TimeoutError:
            self._check("NOOP", await self._client.noop())
            return
        raise ConnectionError(f"IMAP server {self.where} closed the connection")

    async def close(self) -> None:
        """End IDLE and log out, giving up after a few seconds (the socket closes anyway)."""
        try:
            async with asyncio.timeout(3):
                if not self.lost.is_set():
                    if self._client.has_pending_idle():
                        self._client.idle_done()
                    if self._client.get_state() != "STARTED":
                        await self._client.logout()
        except (OSError, TimeoutError, aioimaplib.AioImapException):
            pass
        finally:
            transport = getattr(self._client.protocol, "transport", None)
            if transport is not None:
                transport.close()


def _stop_if_cancelled() -> None:
    """Stop a task that was asked to stop, even if the request got lost on the way.

    Python 3.11's ``asyncio.wait_for`` (aioimaplib runs every command through it) drops a
    cancellation that lands just as the command completes; the watcher would then poll on
    forever after ``cancel()``. The request is still recorded on the task, so each pass of a
    loop checks it.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _reply_text(response: object) -> str:
    lines = getattr(response, "lines", None) or []
    texts = [bytes(line).decode(errors="replace") for line in lines if isinstance(line, bytes)]
    return (texts[-1] if texts else str(getattr(response, "result", "no reply"))).strip()


def _mailbox(name: str) -> str:
    """A folder name as IMAP wants it: modified UTF-7 (RFC 3501 5.1.3), quoted."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            raw = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(raw).decode().rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    encoded = "".join(out).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{encoded}"'


# --- parsing: any bytes in, sensible values out ------------------------------------------------


@dataclass(frozen=True)
class ParsedMail:
    """What the channel reads from one message; every field has a default for broken mail."""

    display: str
    address: str
    subject: str
    body: str
    message_id: str
    date: datetime | None
    auth_results: tuple[str, ...] = ()
    """The Authentication-Results headers, topmost (the last server's) first."""


def _one_line(text: str, limit: int = 998) -> str:
    return " ".join(text.split())[:limit]


def _header(msg: Message, name: str) -> str:
    try:
        value = msg.get(name)
    except Exception:  # a header the parser chokes on counts as absent
        return ""
    return "" if value is None else str(value)


class _HtmlText(HTMLParser):
    """Crude text of an HTML body: the text nodes, blocks on their own lines, no scripts."""

    BLOCKS: Final = frozenset({"br", "p", "div", "li", "tr", "h1", "h2", "h3", "h4", "table"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._skip = max(0, self._skip - 1)

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """The readable text of an HTML body, whitespace folded."""
    parser = _HtmlText()
    parser.feed(html)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return "\n".join(line for line in lines if line)


def _text_of(part: Message) -> str:
    try:
        content = part.get_content()  # type: ignore[attr-defined]
        if isinstance(content, str):
            return content
    except Exception:  # noqa: S110 - an unknown charset or broken encoding: raw below
        pass
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        return payload.decode("utf-8", errors="replace")
    return str(part.get_payload())


def _body(msg: Message) -> str:
    if not isinstance(msg, EmailMessage):
        return ""
    plain = msg.get_body(preferencelist=("plain",))
    if plain is not None:
        return _text_of(plain)
    html = msg.get_body(preferencelist=("html",))
    if html is not None:
        return html_to_text(_text_of(html))
    return ""


def parse_mail(raw: bytes) -> ParsedMail:
    """Sender, subject, plain-text body, Message-ID and date of a message, however broken."""
    try:
        msg = message_from_bytes(raw, policy=policy.default)
    except Exception:  # the parser is lenient; this is the last resort
        return ParsedMail("", "", "", raw[:MAX_BODY].decode(errors="replace"), "", None)
    display, address = parseaddr(_header(msg, "From"))
    try:
        body = _body(msg)
    except Exception:  # broken MIME structure: hand on the raw payload
        body = str(msg.get_payload())
    date: datetime | None = None
    if text := _header(msg, "Date"):
        try:
            date = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            date = None
        if date is not None:
            date = (date if date.tzinfo else date.replace(tzinfo=UTC)).astimezone(UTC)
    try:
        results = tuple(str(v) for v in msg.get_all("Authentication-Results") or ())[:20]
    except Exception:  # a header the parser chokes on counts as absent
        results = ()
    return ParsedMail(
        display=_one_line(display, 200),
        address=_one_line(address, 320),
        subject=_one_line(_header(msg, "Subject")),
        body=body.strip()[:MAX_BODY],
        message_id=_one_line(_header(msg, "Message-ID"), 998),
        date=date,
        auth_results=results,
    )


def _aligned(domain: str, from_domain: str) -> bool:
    """Whether an authenticated domain is aligned with the From domain: the same, or a parent
    of it that is not a bare top-level name (``bank.example`` for ``mail.bank.example``)."""
    d = domain.strip().strip(".").lower().rpartition("@")[2]
    return bool(d) and (d == from_domain or ("." in d and from_domain.endswith("." + d)))


def sender_authenticated(
    results: tuple[str, ...], authserv_id: str | None, address: str
) -> str | None:
    """What vouches for the From ``address`` (``dmarc``, ``dkim`` or ``spf``), or None.

    Only the topmost Authentication-Results header whose authserv-id is ``authserv_id`` counts
    — the receiving server adds its own on top (and removes look-alikes a sender sent); a
    header naming another server, or any header at all when ``authserv_id`` is unset, is what
    the sender may have written. It must say ``dmarc=pass`` for the From domain, or
    ``dkim=pass`` (``header.d``/``header.i``) or ``spf=pass`` (``smtp.mailfrom``) for a domain
    aligned with it. An unparsable header vouches for nothing.
    """
    from_domain = address.rpartition("@")[2].strip().lower()
    if not authserv_id or not from_domain or "@" not in address:
        return None
    for text in results:
        try:
            header = authres.AuthenticationResultsHeader.parse_value(" ".join(text.split()))
        except (authres.AuthResError, ValueError, IndexError):
            continue
        if str(header.authserv_id).lower() != authserv_id.lower():
            continue
        for result in header.results:
            if str(result.result).lower() != "pass":
                continue
            props = {f"{p.type}.{p.name}".lower(): str(p.value or "") for p in result.properties}
            method = str(result.method).lower()
            if method == "dmarc" and props.get("header.from", "").lower() == from_domain:
                return "dmarc"
            if method == "dkim" and any(
                _aligned(props.get(k, ""), from_domain) for k in ("header.d", "header.i")
            ):
                return "dkim"
            if method == "spf" and _aligned(props.get("smtp.mailfrom", ""), from_domain):
                return "spf"
        return None  # the receiving server's own header said no
    return None


def to_inbound(
    channel: str, mail: ParsedMail, decision: Triage, *, folder: str, ref: str, now: datetime
) -> Inbound:
    """The item handed to Mission Control for a parsed and triaged message."""
    sender = f"{mail.display} <{mail.address}>" if mail.display else mail.address
    labels: list[str] = []
    if decision.flag:
        labels.append("flagged")
    if decision.move_to:
        labels.append(f"moved:{decision.move_to}")
    meta = {"message_id": mail.message_id, "folder": folder}
    if decision.rule is not None:
        meta["rule"] = str(decision.rule)
    return Inbound(
        channel=channel,
        sender=sender or "unknown",
        text=mail.body,
        at=mail.date or now,
        ref=ref,
        sender_id=mail.address,
        reply_to=mail.address,
        subject=mail.subject,
        urgent=decision.action == "urgent",
        labels=tuple(labels),
        meta=meta,
    )


# --- the channel --------------------------------------------------------------------------------


class _Backoff:
    """Capped exponential delays between reconnects, back to the start once connected."""

    def __init__(self, first: float, cap: float) -> None:
        self.first, self.cap, self.current = first, cap, first

    def next(self) -> float:
        delay, self.current = self.current, min(self.current * 2, self.cap)
        return delay

    def reset(self) -> None:
        self.current = self.first


class EmailChannel:
    """One mailbox: its folders watched over IMAP, its replies sent over SMTP."""

    kind = "email"
    redelivers = True
    reconnect_first = 1.0
    """Seconds before the first reconnect; doubled on each failure up to ``reconnect_cap``."""
    reconnect_cap = 300.0

    def __init__(
        self,
        name: str,
        config: ChannelConfig,
        password: str,
        smtp_password: str | None = None,
        *,
        logger: logging.Logger | None = None,
        ssl_context: ssl.SSLContext | None = None,
        tokens: OAuthTokens | RefreshTokens | None = None,
    ) -> None:
        """``password`` and ``smtp_password`` are the secrets themselves, already resolved
        from their key references; ``ssl_context`` replaces the system's trust (tests, a
        private CA); ``tokens``: log in with SASL XOAUTH2 and these OAuth tokens instead of
        the password (Exchange Online, Gmail)."""
        if not config.imap_host or not config.username:
            msg = f"channel {name}: an email channel needs imap_host and username"
            raise ValueError(msg)
        self.name = name
        self.config = config
        self.log = logger or logging.getLogger("mcos.channels.email")
        self._password = password
        self._tokens = tokens
        self._smtp_password = smtp_password
        self._ssl = ssl_context
        self._host: str = config.imap_host
        self._username: str = config.username
        self._port = config.imap_port or IMAP_PORTS[config.imap_tls]
        self._sessions: set[_Imap] = set()
        self._closing = False
        if config.authserv_id is None and any(r.sender is not None for r in config.rules):
            self.log.warning(
                "email %s: no authserv_id is set, so its rules with a from glob never match "
                "(a From address is trusted only when the receiving server authenticated it)",
                name,
            )

    def __repr__(self) -> str:
        return f"EmailChannel({self.name!r}, {self._username}@{self._host}:{self._port})"

    def exclusive_key(self) -> str | None:
        """One receiver per mailbox across hosts (the keyword makes two harmless, not cheap)."""
        return mailbox_key(self.config)

    # receiving

    async def run(self, deliver: Deliver) -> None:
        """Watch every configured folder, each on its own connection, until cancelled."""
        try:
            async with asyncio.TaskGroup() as group:
                for folder in self.config.folders:
                    group.create_task(
                        self._watch(folder, deliver), name=f"email:{self.name}:{folder}"
                    )
        except* ChannelMisconfigured as group:  # no token (consent, secret): a person must act
            raise group.exceptions[0] from None

    async def _watch(self, folder: str, deliver: Deliver) -> None:
        backoff = _Backoff(self.reconnect_first, self.reconnect_cap)
        while not self._closing:
            _stop_if_cancelled()
            try:
                await self._session(folder, deliver, backoff)
            except ChannelMisconfigured:
                raise
            except (OSError, TimeoutError, ChannelError, aioimaplib.AioImapException) as exc:
                problem = str(exc) or type(exc).__name__
            except Exception as exc:  # the watcher outlives any one bad session
                self.log.exception("email %s: %s: unexpected failure", self.name, folder)
                problem = str(exc) or type(exc).__name__
            else:
                return
            if self._closing:
                return
            delay = backoff.next()
            self.log.warning(
                "email %s: %s on %s:%s: %s; reconnecting in %.1fs",
                self.name,
                folder,
                self._host,
                self._port,
                problem,
                delay,
            )
            await asyncio.sleep(delay)

    async def _session(self, folder: str, deliver: Deliver, backoff: _Backoff) -> None:
        imap = _Imap(self.name, self._host, self._port, self.config.imap_tls, self._ssl)
        self._sessions.add(imap)
        try:
            token = await self._tokens.token() if self._tokens is not None else None
            await imap.open(self._username, self._password, token=token)
            uidvalidity = await imap.select(folder)
            idle = self.config.idle and imap.has("IDLE")
            poll = self.config.poll_interval.total_seconds()
            self.log.info(
                "email %s: watching %s (%s)",
                self.name,
                folder,
                "IDLE" if idle else f"every {poll:g}s",
            )
            while not self._closing:
                _stop_if_cancelled()
                kept = await self._look(imap, folder, uidvalidity, deliver)
                backoff.reset()
                if idle:
                    await imap.idle(min(poll, IDLE_RENEW) if kept else IDLE_RENEW)
                else:
                    await imap.pause(poll)
        finally:
            self._sessions.discard(imap)
            await imap.close()

    async def _look(self, imap: _Imap, folder: str, uidvalidity: int, deliver: Deliver) -> int:
        """Triage every untriaged message of the folder; how many ``deliver`` refused."""
        kept = 0
        for uid in await imap.untriaged():
            raw = await imap.fetch(uid)
            if raw is None:  # expunged since the search
                continue
            mail = parse_mail(raw)
            vouched = sender_authenticated(mail.auth_results, self.config.authserv_id, mail.address)
            decision = triage(
                self.config.rules,
                mail.address,
                mail.subject,
                mail.body,
                authenticated=vouched is not None,
            )
            ref = f"{folder}/{uidvalidity}/{uid}"
            if decision.action != "ignore":
                item = to_inbound(
                    self.name, mail, decision, folder=folder, ref=ref, now=datetime.now(UTC)
                )
                try:
                    await deliver(item)
                except Exception as exc:  # kept unmarked, offered again next look
                    kept += 1
                    self.log.warning(
                        "email %s: %s not taken (%s: %s); kept for the next look",
                        self.name,
                        ref,
                        type(exc).__name__,
                        exc,
                    )
                    continue
            await self._confirm(imap, uid, decision)
            self.log.info(
                "email %s: %s %s%s",
                self.name,
                ref,
                decision.action,
                f" -> {decision.move_to}" if decision.move_to else "",
            )
        return kept

    async def _confirm(self, imap: _Imap, uid: int, decision: Triage) -> None:
        flags = [TRIAGED, "\\Flagged"] if decision.flag else [TRIAGED]
        await imap.add_flags(uid, flags)
        if decision.move_to:
            await imap.move(uid, decision.move_to)

    # sending

    async def send(self, message: Outbound) -> str:
        """Send one mail over SMTP; its Message-ID."""
        config = self.config
        host = config.smtp_host
        if not host:
            raise ChannelError(
                f"channel {self.name} has no smtp_host: it can receive but not send",
                channel=self.name,
                host="",
            )
        port = config.smtp_port or SMTP_PORTS[config.smtp_tls]
        where = f"{host}:{port}"
        if not message.to:
            raise ChannelError(
                f"channel {self.name}: a mail needs a recipient (Outbound.to)",
                channel=self.name,
                host=where,
            )
        sender = config.address or self._username
        domain = sender.rpartition("@")[2] or None
        mail = EmailMessage()
        mail["From"] = sender
        mail["To"] = message.to
        mail["Subject"] = message.subject
        mail["Date"] = format_datetime(datetime.now(UTC))
        message_id = make_msgid(domain=domain)
        mail["Message-ID"] = message_id
        if parent := _message_id(message.reply_to_ref):
            mail["In-Reply-To"] = parent
            mail["References"] = parent
        mail.set_content(message.text)
        try:
            await self._smtp(host, port, mail)
        except aiosmtplib.SMTPResponseException as exc:
            reply = f"{exc.code} {exc.message}"
            raise ChannelError(
                f"SMTP server {where} refused the mail to {message.to}: {reply}",
                channel=self.name,
                host=where,
                reply=reply,
            ) from None
        except aiosmtplib.SMTPRecipientsRefused as exc:
            reply = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
            raise ChannelError(
                f"SMTP server {where} refused every recipient: {reply}",
                channel=self.name,
                host=where,
                reply=reply,
            ) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            problem = str(exc) or type(exc).__name__
            raise ChannelError(
                f"SMTP server {where} failed: {problem}", channel=self.name, host=where, reply=""
            ) from None
        self.log.info("email %s: sent %s to %s", self.name, message_id, message.to)
        return message_id

    async def _smtp(self, host: str, port: int, mail: EmailMessage) -> None:
        tls = self.config.smtp_tls
        client = aiosmtplib.SMTP(
            hostname=host,
            port=port,
            use_tls=tls == "ssl",
            start_tls=tls == "starttls",
            tls_context=self._ssl,
            timeout=30,
        )
        username = self.config.smtp_username or self._username
        password = self._smtp_password if self._smtp_password is not None else self._password
        await client.connect()
        try:
            # Over a plain line the password is only sent when the server insists (530).
            logged_in = False
            if self._tokens is not None:  # XOAUTH2, whatever the line's protection
                await client.auth_xoauth2(username, await self._tokens.token())
                logged_in = True
            elif tls != "none" and client.supports_extension("auth"):
                await client.login(username, password)
                logged_in = True
            try:
                await client.send_message(mail)
            except aiosmtplib.SMTPResponseException as exc:
                if exc.code != 530 or logged_in or not client.supports_extension("auth"):
                    raise
                await client.login(username, password)
                await client.send_message(mail)
        finally:
            try:
                await client.quit()
            except aiosmtplib.SMTPException:
                client.close()

    async def aclose(self) -> None:
        """Nothing is queued (each mail is sent at once); stop watching, log out."""
        self._closing = True
        for imap in list(self._sessions):
            await imap.close()
        if self._tokens is not None:
            self._tokens.close()


def _message_id(ref: str) -> str:
    """``reply_to_ref`` as a Message-ID, or "" when it is not one (an IMAP ref, say)."""
    ref = ref.strip()
    if re.fullmatch(r"<[^<>\s]+@[^<>\s]+>", ref):
        return ref
    if re.fullmatch(r"[^<>\s/]+@[^<>\s]+", ref):
        return f"<{ref}>"
    return ""
