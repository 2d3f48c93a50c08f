"""Real mail servers for the channel tests: a throwaway dovecot (IMAP) and aiosmtpd (SMTP).

Dovecot runs in the foreground from its own config in the test's tmp_path, on a free loopback
port, with passwords in a passwd-file. Under root, dovecot refuses to touch mail as uid 0
("Mail access not allowed for root") and to run its login processes as root, so the mail
processes run as ``nobody`` over a mail folder made for it outside tmp_path (pytest's
``/tmp/pytest-of-root`` is closed to other users), and the login processes as ``dovenull``.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import aioimaplib
import psutil
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session
from tenacity import Retrying, retry_if_result, stop_after_delay, wait_fixed

from tests.conftest import IN_CI
from tests.waiting import wait_until

DOVECOT = "/usr/sbin/dovecot"
ACCOUNTS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Dovecot:
    """A running dovecot: where it listens, its accounts, its log."""

    host: str
    port: int
    accounts: dict[str, str]
    log: Path
    conf: Path

    def log_tail(self, lines: int = 30) -> str:
        """The end of dovecot's log, for failure messages."""
        if not self.log.exists():
            return "(no log written)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _user(name: str, fallback: str = "nobody") -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return pwd.getpwnam(fallback)


def _config(
    base: Path, mail: Path, port: int, users: Path, log: Path, oauth2: Path | None = None
) -> str:
    if os.geteuid() == 0:
        mail_user = _user("nobody")
        login_user, internal_user = _user("dovenull").pw_name, _user("dovecot").pw_name
    else:  # an ordinary user: every process is that user
        mail_user = pwd.getpwuid(os.geteuid())
        login_user = internal_user = mail_user.pw_name
    # With an OAuth 2.0 introspection endpoint, XOAUTH2/OAUTHBEARER logins are checked by
    # dovecot's oauth2 passdb (the token POSTed to the endpoint); PLAIN stays on the passwd-file.
    oauth = (
        f"""passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {oauth2}
}}
"""
        if oauth2 is not None
        else ""
    )
    mechanisms = "plain login xoauth2 oauthbearer" if oauth2 is not None else "plain login"
    return f"""\
protocols = imap
listen = 127.0.0.1
base_dir = {base}/run
state_dir = {base}/state
instance_name = mcos-test-{port}
log_path = {log}
info_log_path = {log}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = {mechanisms}
first_valid_uid = 0
first_valid_gid = 0
default_login_user = {login_user}
default_internal_user = {internal_user}
default_internal_group = {grp.getgrgid(pwd.getpwnam(internal_user).pw_gid).gr_name}
mail_location = maildir:{mail}/%u
mail_uid = {mail_user.pw_uid}
mail_gid = {mail_user.pw_gid}
mailbox_idle_check_interval = 1 secs
{oauth}passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {users}
  mechanisms = plain login
}}
userdb {{
  driver = static
  args = home={mail}/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
"""


def _greets(port: int, proc: subprocess.Popen[bytes], stderr: Path) -> bool:
    """Whether dovecot answers with its greeting (then auth is ready too); fails if it exited."""
    if proc.poll() is not None:
        pytest.fail(f"dovecot exited ({proc.returncode}):\n{stderr.read_text(errors='replace')}")
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 2) as s:
        return s.recv(100).startswith(b"* OK")
    return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL to the whole group (a throwaway server: nothing to flush), then make sure it is
    gone — a graceful SIGTERM costs a second per test."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(5)
    # Children may outlive the master for a moment: wait up to 5 s, then kill what is left.
    left = Retrying(
        retry=retry_if_result(bool),
        stop=stop_after_delay(5),
        wait=wait_fixed(0.05),
        retry_error_callback=lambda state: state.outcome.result() if state.outcome else [],
    )(_group, proc.pid)
    for child in left:
        with contextlib.suppress(psutil.Error):
            child.kill()


def _group(pgid: int) -> list[psutil.Process]:
    """The live processes of a process group (zombies left to whoever reaps them)."""
    members = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(process.pid) == pgid and process.status() != psutil.STATUS_ZOMBIE:
                members.append(process)
    return members


@pytest.fixture
def dovecot(tmp_path: Path) -> Iterator[Dovecot]:
    """A throwaway dovecot with the accounts of ACCOUNTS (passwords in clear), IMAP only."""
    yield from run_dovecot(tmp_path)


def run_dovecot(tmp_path: Path, introspection_url: str | None = None) -> Iterator[Dovecot]:
    """Run a throwaway dovecot until the generator is closed; ``introspection_url``: also
    accept XOAUTH2 tokens that this OAuth 2.0 introspection endpoint says are active."""
    if not Path(DOVECOT).exists():
        reason = f"{DOVECOT} is missing (apt-get install dovecot-imapd)"
        if IN_CI:
            pytest.fail(reason + " (CI=true: the e-mail tests never skip)")
        pytest.skip(reason)
    base = tmp_path / "dovecot"
    base.mkdir()
    log = base / "dovecot.log"
    # Under root, dovecot's own users (auth, mail) must reach the sockets, the passwd-file and
    # the mail; pytest's tmp_path sits in a root-only folder, so those live in /tmp instead.
    shared = Path(tempfile.mkdtemp(prefix="mcos-dovecot-")) if os.geteuid() == 0 else base
    shared.chmod(0o755)
    for sub in ("run", "state", "mail"):
        (shared / sub).mkdir()
    if os.geteuid() == 0:
        nobody = _user("nobody")
        os.chown(shared / "mail", nobody.pw_uid, nobody.pw_gid)
    users = shared / "users"
    users.write_text("".join(f"{u}:{{PLAIN}}{p}::::::\n" for u, p in ACCOUNTS.items()))
    users.chmod(0o644)  # test passwords only
    port = free_port()
    oauth2 = None
    if introspection_url is not None:
        oauth2 = shared / "dovecot-oauth2.conf.ext"
        oauth2.write_text(
            f"introspection_mode = post\nintrospection_url = {introspection_url}\n"
            "username_attribute = username\nactive_attribute = active\nactive_value = true\n"
        )
        oauth2.chmod(0o644)
    conf = base / "dovecot.conf"
    conf.write_text(_config(shared, shared / "mail", port, users, log, oauth2))
    proc = subprocess.Popen(
        [DOVECOT, "-F", "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=(base / "stderr").open("wb"),
        start_new_session=True,
    )
    server = Dovecot("127.0.0.1", port, dict(ACCOUNTS), log, conf)
    try:
        wait_until(
            f"dovecot to greet on port {port}",
            lambda: _greets(port, proc, base / "stderr"),
            timeout=30,
        )
        yield server
    finally:
        _stop(proc)
        if shared != base:
            shutil.rmtree(shared, ignore_errors=True)


# --- putting mail in and reading it back over IMAP ----------------------------------------------


def make_mail(
    subject: str = "Hello",
    body: str = "Hi there.",
    sender: str = "Bob Sender <bob@example.org>",
    to: str = "alice@example.com",
    *,
    html: str | None = None,
    auth_results: tuple[str, ...] = (),
) -> bytes:
    """An RFC 5322 message as bytes; ``auth_results``: Authentication-Results headers (the
    receiving server's first), as a server that checked DKIM/SPF/DMARC adds them."""
    mail = EmailMessage()
    for result in auth_results:
        mail["Authentication-Results"] = result
    mail["From"] = sender
    mail["To"] = to
    mail["Subject"] = subject
    mail["Date"] = format_datetime(datetime.now(UTC))
    mail["Message-ID"] = f"<{time.time_ns()}@example.org>"
    mail.set_content(body)
    if html is not None:
        mail.add_alternative(html, subtype="html")
    return bytes(mail)


@contextlib.asynccontextmanager
async def imap_session(server: Dovecot, user: str) -> AsyncIterator[Any]:
    """A logged-in aioimaplib client (the test's own, not the channel's)."""
    client = aioimaplib.IMAP4(host=server.host, port=server.port, timeout=10)
    await client.wait_hello_from_server()
    response = await client.login(user, server.accounts[user])
    assert response.result == "OK", response
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            await client.logout()


async def append(server: Dovecot, user: str, raw: bytes, folder: str = "INBOX") -> None:
    """Put one message in a mailbox, as a mail server's delivery would."""
    async with imap_session(server, user) as client:
        if folder != "INBOX":
            await client.create(folder)
        response = await client.append(raw, mailbox=folder)
        assert response.result == "OK", response


@dataclass(frozen=True)
class Stored:
    """One message as the server holds it."""

    uid: int
    flags: frozenset[str]
    subject: str


async def mailbox(server: Dovecot, user: str, folder: str = "INBOX") -> list[Stored]:
    """Every message of a folder with its flags; [] when the folder does not exist."""
    async with imap_session(server, user) as client:
        selected = await client.select(folder)
        if selected.result != "OK":
            return []
        response = await client.fetch("1:*", "(UID FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        found: list[Stored] = []
        lines = response.lines
        for index, line in enumerate(lines):
            if not isinstance(line, bytes) or b" FETCH (" not in line:
                continue
            uid = int(line.split(b"UID ")[1].split()[0])
            flags = frozenset(
                line.split(b"FLAGS (")[1].split(b")")[0].decode().split()
                if b"FLAGS (" in line
                else []
            )
            header = lines[index + 1] if index + 1 < len(lines) else b""
            parsed = message_from_bytes(bytes(header), policy=policy.default)
            found.append(Stored(uid, flags, str(parsed.get("Subject", ""))))
        return found


# --- SMTP ----------------------------------------------------------------------------------------


@dataclass
class Received:
    """One mail aiosmtpd took: the envelope and the parsed message."""

    sender: str
    recipients: list[str]
    message: EmailMessage


@dataclass
class RecordingHandler:
    """Records every mail; answers ``reply`` to DATA when set (``"550 ..."`` refuses)."""

    received: list[Received] = field(default_factory=list)
    reply: str | None = None

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        """aiosmtpd's hook for a complete message."""
        if self.reply is not None:
            return self.reply
        content = envelope.original_content or b""
        parsed = message_from_bytes(content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        self.received.append(Received(str(envelope.mail_from), list(envelope.rcpt_tos), parsed))
        return "250 OK"


@dataclass(frozen=True)
class SmtpServer:
    """A running aiosmtpd."""

    host: str
    port: int
    handler: RecordingHandler


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """aiosmtpd on a free loopback port, recording what it receives."""
    handler = RecordingHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield SmtpServer("127.0.0.1", port, handler)
    finally:
        controller.stop()
