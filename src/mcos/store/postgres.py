"""The production store: PostgreSQL through psycopg 3 and a connection pool.

Claims use ``FOR UPDATE SKIP LOCKED``; every time is the database's ``clock_timestamp()``.
Sends wake this process's waiters at once and other servers' waiters with one ``NOTIFY`` per
batch of sends, at most one every ``NOTIFY_EVERY``: the send that finds one due carries it in its
own statement, and a notifier task sends what none carried — never one per send inside each
message's commit, which would serialise commits on the notification queue lock. A dedicated
LISTEN connection feeds other servers' sends to local waiters and reconnects after the database
restarts.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import select
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractContextManager, asynccontextmanager, suppress
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb, set_json_loads
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from mcos.domain.approvals import Approval, ApprovalState, Vote, duplicate_request
from mcos.domain.audit import (
    GENESIS,
    AuditEvent,
    AuditRecord,
    ChainState,
    Checkpoint,
    canonical,
    record_hash,
    verify,
)
from mcos.domain.bounded import decode_stored
from mcos.domain.budget import Committed, Limits
from mcos.domain.budget import grant as grant_budget
from mcos.domain.incidents import Incident, IncidentEvent, IncidentState
from mcos.domain.leases import FenceGuard, Grant, Lease, grant, held_error, lost_error, ours
from mcos.domain.message_search import MessageHit, MessageSearch, MessageState
from mcos.domain.messages import (
    EXPIRED,
    Delivery,
    DeliveryPolicy,
    DeliveryState,
    Message,
    NewMessage,
    RecipientKind,
    SendResult,
    check_expiries,
    defer_until,
)
from mcos.domain.paging import Page, PageKind
from mcos.domain.sessions import DashboardSession
from mcos.domain.tokens import PrincipalKind, TokenRecord
from mcos.domain.workspace_sync import (
    BlobBatch,
    WorkspaceFile,
    WorkspaceManifest,
    change,
    fetch_plan,
    missing_blob,
    push_refusal,
)
from mcos.exceptions import (
    Conflict,
    IdempotencyConflict,
    InvalidRequest,
    LastOperatorToken,
    LeaseLost,
    McosError,
    NotFound,
    SchemaOutOfDate,
    StaleReceipt,
    StoreError,
    StoreUnavailable,
    in_batch,
)
from mcos.store import rows
from mcos.store.coalesce import Coalescer
from mcos.store.lanes import Lanes, NoLane
from mcos.store.migrations import latest, migrations
from mcos.store.notify import Waiters
from mcos.store.protocol import (
    AgentEntry,
    AgentState,
    AuditQuery,
    AuditVerification,
    BudgetAsk,
    Directory,
    Held,
    InboxDepth,
    KnowledgeChunk,
    KnowledgeChunkHit,
    ModelCall,
    NewApproval,
    NewIncident,
    Reservation,
    StoredTrace,
    UsageRow,
)
from mcos.store.queries import queries
from mcos.store.rows import usage_row

T = TypeVar("T")
Q = queries("postgres")
POOL_WAIT = 10.0
"""Seconds a request waits for a pooled connection while every one is in use."""
DOWN_WAIT = 1.0
"""Seconds it waits once the pool failed to connect, before it answers 503 ``store_unavailable``."""
RECONNECT_FOR = 2.0
"""Seconds the pool retries a failed connection in the background before leaving it to the
next request to try afresh: its backoff doubles without bound, so a database back after a long
outage would otherwise be found minutes late."""
CHANNEL = "mcos_inbox"
LISTENER_NAME = "mcos-listen"
"""The ``application_name`` of each Mission Control's LISTEN connection (in pg_stat_activity)."""
SEND_LANES = 4
"""Single sends of this process running at once, each alone; sends arriving while all run go
together in the next transaction (:mod:`mcos.store.coalesce`). A send's time is mostly its
commit's wait for the disk, which PostgreSQL shares among the commits in flight: with two lanes
four concurrent senders had about two messages in flight per flush and reached 400–740 msg/s
where four lanes (as PgQueuer's four connections) reached 580–1,020. Four leave six of the
pool's ten connections to claims and acks."""
LANES = SEND_LANES + 4
"""Connections of the hot statements' own per process: one per send lane, four for claims
and acks; a statement finding all busy goes through the pool."""
LANE_STATEMENTS = ("message_send", "claim", "deliveries_ack_all", "notify_soft")
SEND_BATCH_MOST = 64
"""Sends in one such transaction at most."""
NOTIFY_EVERY = 0.002
"""Seconds between this process's NOTIFYs at most (see ``PostgresStore._notify``)."""
WAKE_ALL = "*"
"""In a NOTIFY's inbox list: wake every long-poll (no inbox is named ``*``)."""
HELLO_EVERY = 1.0
"""Seconds between this process's hellos: a NOTIFY naming no inbox, which tells the other
servers on the database that this one listens, so that their sends notify it."""
PEERS_FOR = 3.5
"""Seconds another server counts as listening after its last hello or NOTIFY. A server alone
on its database sends no NOTIFY at all: its own waiters are woken in process, and each NOTIFY
cost its commit the notification queue's lock and its listener the echo."""
LIVENESS: dict[str, int] = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 1,
    "keepalives_count": 3,
    "tcp_user_timeout": 5000,
    "connect_timeout": 3,
}
"""libpq settings of every connection Mission Control keeps to PostgreSQL (the pool's and the
LISTEN connection), so that a database gone silent — its host's link cut, packets dropped with
no refusal — is noticed within seconds, not after TCP's retransmissions (about 15 minutes):
data unacknowledged for ``tcp_user_timeout`` ms fails the query; an idle connection is probed
after ``keepalives_idle`` s, every ``keepalives_interval`` s (dead within about 6 s); a new
connection gives up after ``connect_timeout`` s. The store URL's own parameters win
(``postgresql://…/mcos?keepalives_idle=30``). docs/deploy.md states the bounds."""
log = logging.getLogger("mcos.store.postgres")
Conn = psycopg.AsyncConnection[DictRow]
set_json_loads(decode_stored)  # json/jsonb columns too deep to show stay text, in a placeholder


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def _liveness(url: str) -> dict[str, int]:
    """:data:`LIVENESS` without the parameters the store URL sets itself."""
    try:
        given = conninfo_to_dict(url)
    except psycopg.ProgrammingError as e:
        msg = f"store URL {_safe(url)!r} is not a PostgreSQL connection URL: {str(e).strip()}"
        raise InvalidRequest(msg) from None
    return {key: value for key, value in LIVENESS.items() if key not in given}


def _utc(dt: datetime) -> datetime:
    return dt.astimezone(UTC)


def _opt(dt: datetime | None) -> datetime | None:
    return None if dt is None else _utc(dt)


def _delivery(row: DictRow) -> Delivery:
    msg = rows.message(row, _utc(row["created_at"]))
    visible = _utc(row["d_visible_at"])
    deadline = visible if row["state"] == "claimed" else None
    return rows.delivery(row, msg, visible, deadline, _opt(row["d_expires_at"]))


async def _check_idle(conn: Conn) -> None:
    """Round-trip only to a pooled connection whose socket has something to say.

    An idle connection's socket is readable only if the server wrote to it unasked: it shut
    down or killed the backend (after a restart, say). Checking every checkout with a round
    trip would cost as much as the query it precedes.
    """
    if conn.closed:
        raise psycopg.OperationalError("the connection is closed")
    readable, _, _ = select.select([conn.fileno()], [], [], 0)
    if readable:
        await AsyncConnectionPool.check_connection(conn)


def _message(row: DictRow) -> Message:
    return rows.message(row, _utc(row["created_at"]))


def _send_params(message: NewMessage, digest: str) -> dict[str, Any]:
    return {
        "sender": message.sender,
        "recipient": message.recipient,
        "kind": str(message.kind),
        "priority": message.priority.rank,
        "subject": message.subject,
        "body": message.body,
        "reply_to": message.reply_to,
        "idempotency_key": message.idempotency_key,
        "content_hash": digest,
        "meta": Jsonb(message.meta),
        "expires_at": message.expires_at,
        "ttl": message.ttl,
        "item": 0,  # its place among the sends of one transaction (given back in its row)
    }


def _sent(message: NewMessage, row: Mapping[str, Any]) -> Message:
    """The message as stored: what the sender gave, and what the send statement returned
    (id, thread, recipient kind, time, and the meta as stored, ordered as a read gives it)."""
    return Message(
        id=row["id"],
        sender=message.sender,
        recipient=message.recipient,
        recipient_kind=RecipientKind(row["recipient_kind"]),
        kind=message.kind,
        priority=message.priority,
        subject=message.subject,
        body=message.body,
        thread_id=row["thread_id"],
        reply_to=message.reply_to,
        idempotency_key=message.idempotency_key,
        created_at=_utc(row["created_at"]),
        meta=rows.json_column(row["meta"]) or {},
    )


def _no_note() -> dict[str, object]:
    """``message_send``'s NOTIFY parameters for a send that carries none."""
    return {"channel": CHANNEL, "note_prefix": None, "note_pending": None}


def _committed(row: DictRow | None) -> Committed:
    assert row is not None
    return Committed(int(row["usd"]), int(row["tokens"]))


def _held(row: DictRow) -> Held:
    return Held(
        int(row["id"]), row["model"], int(row["prompt_tokens"]), int(row["max_output"]),
        int(row["usd_micros"]),
    )  # fmt: skip


def _agent_state(r: DictRow) -> AgentState:
    return AgentState(
        name=r["name"],
        state=r["state"],
        detail=r["detail"],
        until=_opt(r["until"]),
        info=dict(r["info"]),
        updated_at=_utc(r["updated_at"]),
    )


def _incident(r: DictRow) -> Incident:
    return Incident(
        id=r["id"], severity=r["severity"], reported_as=r["reported_as"],
        state=IncidentState(r["state"]), summary=r["summary"], evidence=r["evidence"],
        reporter=r["reporter"], fingerprint=r["fingerprint"], reports=r["reports"],
        created_at=_utc(r["created_at"]), updated_at=_utc(r["updated_at"]),
    )  # fmt: skip


def _incident_event(r: DictRow) -> IncidentEvent:
    return IncidentEvent(
        r["incident_id"], _utc(r["at"]), r["actor"], r["action"], r["severity"], r["reason"]
    )


def _approval(r: DictRow) -> Approval:
    return Approval(
        id=r["id"], action=r["action"], payload=dict(r["payload"]),
        requester=r["requester"], rationale=r["rationale"], quorum=r["quorum"],
        state=ApprovalState(r["state"]), executor=r["executor"], constraints=r["constraints"],
        report_every=r["report_every"],
        created_at=_utc(r["created_at"]), expires_at=_utc(r["expires_at"]),
        decided_at=_opt(r["decided_at"]), decided_by=r["decided_by"], reason=r["reason"],
        directive_id=r["directive_id"], acknowledged_at=_opt(r["acknowledged_at"]),
    )  # fmt: skip


def _page(r: DictRow) -> Page:
    return Page(
        r["id"], r["human"], r["key"], PageKind(r["kind"]), r["subject"], r["body"], r["state"],
        r["channel"], r["ref"], r["attempts"], r["error"], _utc(r["created_at"]),
        None if r["sent_at"] is None else _utc(r["sent_at"]),
        None if r["acked_at"] is None else _utc(r["acked_at"]), r["acked_by"],
    )  # fmt: skip


def _vote(r: DictRow) -> Vote:
    return Vote(r["approval_id"], r["voter"], r["vote"], r["rationale"], _utc(r["at"]))


def _lease(r: DictRow) -> Lease:
    return Lease(
        agent=r["agent"],
        holder=r["holder"],
        host=r["host"],
        fence=int(r["fence"]),
        expires_at=_utc(r["expires_at"]),
        acquired_at=_utc(r["acquired_at"]),
        renewed_at=_utc(r["renewed_at"]),
    )


def _token(row: DictRow) -> TokenRecord:
    return rows.token(
        row, _utc(row["created_at"]), _opt(row["expires_at"]), _opt(row["revoked_at"])
    )


def _session(row: DictRow) -> DashboardSession:
    return DashboardSession(
        id=int(row["id"]),
        id_hash=row["id_hash"],
        token_id=int(row["token_id"]),
        operator=row["operator"],
        created_at=_utc(row["created_at"]),
        expires_at=_utc(row["expires_at"]),
        ended_at=_opt(row["ended_at"]),
    )


def _fence_params(guard: FenceGuard | None) -> dict[str, object]:
    """The fence predicate's parameters: no agent (NULL) matches no lease, so no guard passes."""
    if guard is None:
        return {"fence_agent": None, "fence_floor": 0}
    return {"fence_agent": guard.agent, "fence_floor": guard.floor}


class PostgresStore:
    """Mission Control's store on PostgreSQL."""

    dialect = "postgres"

    def __init__(
        self,
        url: str,
        policy: DeliveryPolicy | None = None,
        *,
        pool_size: int = 10,
        audit_key: bytes | None = None,
    ) -> None:
        self._audit_key = audit_key
        self.url = url
        self.policy = policy or DeliveryPolicy()
        self._conninfo = make_conninfo(url, **_liveness(url))
        """The URL with :data:`LIVENESS` added (the URL's own parameters kept)."""
        self._pool = AsyncConnectionPool(
            self._conninfo,
            min_size=1,
            max_size=pool_size,
            open=False,
            kwargs={"row_factory": dict_row, "autocommit": True, "options": "-c TimeZone=UTC"},
            check=_check_idle,
            timeout=POOL_WAIT,
            reconnect_timeout=RECONNECT_FOR,
        )
        self._waiters = Waiters()
        self._lanes = Lanes(url, {name: Q[name] for name in LANE_STATEMENTS}, size=LANES,
                            liveness=LIVENESS)  # fmt: skip
        """Connections of the hot statements' own (asyncpg, prepared: :mod:`mcos.store.lanes`)."""
        self._sends: Coalescer[tuple[NewMessage, dict[str, Any]], SendResult | None] = Coalescer(
            self._send_together, lanes=SEND_LANES, most=SEND_BATCH_MOST
        )
        self.dead_lettered = 0
        """Deliveries this process dead-lettered (a cheap hint that someone must be told)."""
        self._pending: set[str] = set()
        self._pending_event = asyncio.Event()
        self._last_notify = float("-inf")
        """Event-loop time of this process's last NOTIFY, sent or carried by a send."""
        self._peers: dict[str, float] = {}
        """Other servers heard on the channel: their origin, and when (event-loop time)."""
        self._listening_since: float | None = None
        """When this process's LISTEN connection last connected; None while it is down."""
        self._skipped = False
        """A send notified no one (no other server heard within ``PEERS_FOR``): a server heard
        again (a stalled one, or one whose hello was late) is then asked to wake all its
        long-polls, which may have missed those sends."""
        self._origin = secrets.token_hex(6)
        """Prefixes this process's NOTIFY payloads (``ORIGIN:inbox,inbox``; names hold no
        ``:``), so its listener skips what its own sends already woke in process: each echo
        woke every waiter of those inboxes into a claim that found nothing."""
        self._tasks: list[asyncio.Task[None]] = []
        self._opened = False
        self._closing = False
        self._down = False
        """The pool failed to connect and has given no connection since."""
        self._connect_errors = 0

    # --- plumbing ----------------------------------------------------------------------------
    async def _ensure_pool(self) -> None:
        if not self._opened:
            try:
                await self._pool.open(wait=True, timeout=10)
            except PoolTimeout as e:
                raise StoreUnavailable(f"PostgreSQL at {_safe(self.url)} is unreachable") from e
            self._opened = True

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[Conn]:
        """A pooled connection; database failures become ``StoreUnavailable``."""
        await self._ensure_pool()
        try:
            conn = await self._checkout()
            try:
                yield conn
            finally:
                await self._pool.putconn(conn)
        except McosError:
            raise
        except (psycopg.OperationalError, PoolTimeout) as e:
            raise StoreUnavailable(
                f"PostgreSQL at {_safe(self.url)} is unavailable: {type(e).__name__}"
            ) from e
        except psycopg.Error as e:
            raise StoreError(f"PostgreSQL error: {str(e).strip()}") from e

    async def _checkout(self) -> Conn:
        """A connection from the pool, waited for up to ``POOL_WAIT`` while the pool is busy,
        but given up after ``DOWN_WAIT`` once its attempts to connect fail (the database is
        down or cut off): each request would otherwise hang ten seconds before its 503, longer
        than a client waits. The request keeps its place in the pool's queue meanwhile.

        With a connection idle in the pool (so nobody queued) it is taken without the task and
        timer that watch a wait: they cost more than the statement's own Python. That take
        waits only if the idle connection fails its check, and then no longer than
        ``DOWN_WAIT`` before the watched wait below takes over."""
        if self._pool.get_stats().get("pool_available", 0):
            try:
                conn = await self._pool.getconn(timeout=DOWN_WAIT)
            except PoolTimeout:
                self._note_connect_errors()
                if self._down:
                    raise
            else:
                self._down = False
                return conn
        return await self._checkout_watched()

    def _note_connect_errors(self) -> None:
        """Mark the pool down if it failed to connect since we last looked."""
        errors = self._pool.get_stats().get("connections_errors", 0)
        if errors > self._connect_errors:
            self._connect_errors, self._down = errors, True

    async def _checkout_watched(self) -> Conn:
        """:meth:`_checkout` while every connection is in use (or the idle one failed)."""
        getting = asyncio.ensure_future(self._pool.getconn(timeout=POOL_WAIT))
        try:
            while True:
                done, _ = await asyncio.wait({getting}, timeout=DOWN_WAIT)
                if done:
                    conn = getting.result()  # PoolTimeout after POOL_WAIT
                    self._down = False
                    return conn
                self._note_connect_errors()
                if self._down:
                    raise PoolTimeout(f"no connection for {DOWN_WAIT:g} s while connects fail")
        finally:
            if not getting.done():
                getting.cancel()
                with suppress(asyncio.CancelledError, PoolTimeout):
                    late = await getting  # handed a connection as we gave up: give it back
                    await self._pool.putconn(late)

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[Conn]:
        async with self._conn() as conn, conn.transaction():
            yield conn

    # --- lifecycle ---------------------------------------------------------------------------
    async def open(self) -> None:
        """Connect, check the schema, and start the listener and the notifier."""
        version = await self.schema_version()
        wanted = latest(self.dialect)
        if version < wanted:
            msg = (
                f"the database {_safe(self.url)} is at schema version {version}, this mcos "
                f"needs {wanted}: run `mcos db upgrade`"
            )
            raise SchemaOutOfDate(msg, version=version, wanted=wanted)
        if version > wanted:
            msg = (
                f"the database {_safe(self.url)} is at schema version {version}, newer than "
                f"this mcos ({wanted}): upgrade mcos"
            )
            raise SchemaOutOfDate(msg, version=version, wanted=wanted)
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._listen(), name="mcos-pg-listen"),
                asyncio.create_task(self._notify(), name="mcos-pg-notify"),
            ]

    async def close(self) -> None:
        """Stop background tasks, close the pool and wake every waiter."""
        self._closing = True
        self._pending_event.set()
        for task in self._tasks:
            if task.get_name() == "mcos-pg-listen":  # it holds nothing: no need to wait out
                task.cancel()  # its slice of listening (up to 0.25 s of every close)
                with suppress(asyncio.CancelledError):
                    await task
                continue
            try:
                async with asyncio.timeout(5):
                    await asyncio.shield(task)
            except TimeoutError:
                log.warning("background task %s did not stop in time", task.get_name())
                task.cancel()
        self._tasks = []
        self._waiters.wake_all()
        await self._lanes.close()
        if self._opened:
            await self._pool.close()
            self._opened = False

    async def upgrade(self, target: int | None = None) -> list[int]:
        """Apply pending migrations, serialised across processes by an advisory lock."""
        applied: list[int] = []
        async with self._tx() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock(7262001)")
            await conn.execute(Q["schema_migrations_create"])
            current = (await (await conn.execute(Q["schema_version"])).fetchone() or {})["version"]
            for m in migrations(self.dialect):
                if m.version <= current or (target is not None and m.version > target):
                    continue
                async with conn.transaction():
                    await conn.execute(m.sql.encode())
                    await conn.execute(Q["schema_record"], (m.version, m.name))
                applied.append(m.version)
        return applied

    async def schema_version(self) -> int:
        """The version the database is at."""
        async with self._conn() as conn:
            await conn.execute(Q["schema_migrations_create"])
            row = await (await conn.execute(Q["schema_version"])).fetchone()
            return int(row["version"]) if row else 0

    async def now(self) -> datetime:
        """The database server's clock."""
        async with self._conn() as conn:
            row = await (await conn.execute("SELECT clock_timestamp() AS now")).fetchone()
            assert row is not None
            return _utc(row["now"])

    # --- wake-ups ----------------------------------------------------------------------------
    def _announce(self, inboxes: Sequence[str]) -> None:
        self._waiters.wake(inboxes)
        if self._tasks and self._others_listen():
            self._pending.update(inboxes)
            self._pending_event.set()
        elif self._tasks:
            self._skipped = True

    def _heard(self, origin: str, now: float) -> None:
        """Another server spoke: a server not heard within ``PEERS_FOR`` (or never) while
        this one's sends notified no one gets a wake-all (``ORIGIN:*``)."""
        last = self._peers.get(origin)
        self._peers[origin] = now
        if self._skipped and (last is None or now - last >= PEERS_FOR):
            self._skipped = False
            self._pending.add(WAKE_ALL)
            self._pending_event.set()

    def _others_listen(self) -> bool:
        """Whether another server may be listening, so that a send must NOTIFY: one was heard
        within ``PEERS_FOR`` — or this process cannot tell (its LISTEN connection is down, or
        connected less than ``PEERS_FOR`` ago: every server hellos that often, and at once to
        a newcomer)."""
        now = asyncio.get_running_loop().time()
        since = self._listening_since
        if since is None or now - since < PEERS_FOR:
            return True
        return any(now - seen < PEERS_FOR for seen in self._peers.values())

    async def _say_hello(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Tell the other servers this one listens (a NOTIFY naming no inbox, sent on the
        LISTEN connection every ``HELLO_EVERY`` and at once to a newcomer), and forget the
        servers not heard for long (each restart is a new origin)."""
        await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, f"{self._origin}:"))
        now = asyncio.get_running_loop().time()
        for origin, seen in list(self._peers.items()):
            if now - seen > 10 * PEERS_FOR:
                del self._peers[origin]

    async def _notify(self) -> None:
        """One NOTIFY per batch of sends, at most one every ``NOTIFY_EVERY``: a send that finds
        one due carries it in its own statement (:meth:`_carry`: no round trip or transaction
        of its own); what no send carried within one more interval (the end of a burst, batch
        sends, nacks) this task sends alone, outside any message's transaction — a quiet spell's
        at once. One NOTIFY per send would serialise commits on the notification queue lock."""
        loop = asyncio.get_running_loop()
        while not self._closing:
            await self._pending_event.wait()
            if self._closing:
                return
            if (gap := self._last_notify + 2 * NOTIFY_EVERY - loop.time()) > 0:
                await asyncio.sleep(gap)
            self._pending_event.clear()
            if not self._pending:
                continue  # a send carried them
            self._last_notify = loop.time()
            batch, self._pending = sorted(self._pending), set()
            payloads: list[str] = []
            current = ""
            origin = f"{self._origin}:"
            for inbox in batch:
                candidate = f"{current},{inbox}" if current else inbox
                if len(candidate) > 7000:
                    payloads.append(current)
                    candidate = inbox
                current = candidate
            if current:
                payloads.append(current)
            try:
                for payload in payloads:
                    note = {"channel": CHANNEL, "payload": origin + payload}
                    await self._hot("notify_soft", note)
            except StoreError as e:
                log.warning("could not notify other servers: %s", e.message)

    async def _listen(self) -> None:
        """Feed other servers' sends to local waiters; reconnect with backoff when cut off."""
        delay = 0.1
        reconnecting = False
        while not self._closing:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True, application_name=LISTENER_NAME
                )
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    loop = asyncio.get_running_loop()
                    self._listening_since = loop.time()
                    if reconnecting:
                        self._waiters.wake_all()  # sends may have happened while cut off
                    reconnecting = True
                    delay = 0.1
                    hello_at = 0.0  # at once: the others learn of this one
                    while not self._closing:
                        if loop.time() >= hello_at:
                            await self._say_hello(conn)
                            hello_at = loop.time() + HELLO_EVERY
                        async for note in conn.notifies(timeout=0.25):
                            origin, _, inboxes = note.payload.rpartition(":")
                            if origin == self._origin:  # our own sends woke ours already
                                continue
                            if origin not in self._peers:
                                hello_at = 0.0  # a newcomer: it learns of this one at once
                            self._heard(origin, loop.time())
                            names = inboxes.split(",") if inboxes else []  # a hello names none
                            if WAKE_ALL in names:
                                self._waiters.wake_all()
                            elif names:
                                self._waiters.wake(names)
                            if not hello_at:
                                break
                    return
            except psycopg.Error as e:
                self._listening_since = None
                log.warning(
                    "LISTEN connection lost (%s); reconnecting in %.1fs", type(e).__name__, delay
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def armed(self, inbox: str) -> AbstractContextManager[asyncio.Future[None]]:
        """A future resolved by the next send to ``inbox`` on any server."""
        return self._waiters.armed(inbox)

    async def wait(self, inbox: str, timeout: float) -> bool:
        """Wait for a send to ``inbox``."""
        return await self._waiters.wait(inbox, timeout)

    # --- directory ---------------------------------------------------------------------------
    async def sync_directory(self, directory: Directory, audit: AuditEvent | None = None) -> None:
        """Make recipients and subscriptions match the fleet file."""
        async with self._tx() as conn:
            await conn.execute("LOCK TABLE subscriptions IN EXCLUSIVE MODE")
            await conn.execute(Q["recipients_deactivate_all"])
            async with conn.cursor() as cur:
                await cur.executemany(
                    Q["recipient_upsert"],
                    [
                        (a.name, "agent", a.role, a.host, a.reports_to, Jsonb(a.info))
                        for a in directory.agents
                    ]
                    + [(h, "human", "", "", None, Jsonb({})) for h in directory.humans]
                    + [(t, "topic", "", "", None, Jsonb({})) for t in directory.topics],
                )
                await conn.execute(Q["subscriptions_clear"])
                pairs = [(t, s) for t, subs in directory.topics.items() for s in subs]
                if pairs:
                    await cur.executemany(Q["subscription_insert"], pairs)
            if audit is not None:
                await self._append_audit(conn, audit)

    async def list_agents(self, names: Sequence[str] | None = None) -> list[AgentEntry]:
        """Every active agent (of ``names`` when given)."""
        async with self._conn() as conn:
            if names is None:
                result = await (await conn.execute(Q["agents_list"])).fetchall()
            else:
                result = await (await conn.execute(Q["agents_named"], (list(names),))).fetchall()
        return [
            AgentEntry(
                name=r["name"],
                role=r["role"],
                host=r["host"],
                reports_to=r["reports_to"],
                last_seen_at=_opt(r["last_seen_at"]),
                info=dict(r["info"]),
            )
            for r in result
        ]

    async def recipient_kind(self, name: str) -> RecipientKind | None:
        """What ``name`` is, or None."""
        async with self._conn() as conn:
            row = await (await conn.execute(Q["recipient_kind"], (name,))).fetchone()
        return None if row is None else RecipientKind(row["kind"])

    async def subscriptions(self, name: str) -> list[str]:
        """Topics ``name`` subscribes to."""
        async with self._conn() as conn:
            result = await (await conn.execute(Q["subscriptions_of"], (name,))).fetchall()
        return [r["topic"] for r in result]

    async def touch_agent(self, name: str) -> None:
        """Record that ``name`` was seen now."""
        async with self._conn() as conn:
            await conn.execute(Q["agent_touch"], (name,))

    # --- messages ----------------------------------------------------------------------------
    async def send(self, message: NewMessage, *, guard: FenceGuard | None = None) -> SendResult:
        """Store a message and its deliveries; a repeated idempotency key returns the original."""
        return (await self.send_many([message], guard=guard))[0]

    async def send_many(
        self, messages: Sequence[NewMessage], *, guard: FenceGuard | None = None
    ) -> list[SendResult]:
        """Store several messages atomically, in order; see the protocol."""
        if not messages:
            return []
        if any(m.expires_at is not None for m in messages):
            check_expiries(messages, await self.now())
        digests = [m.content_hash() for m in messages]
        fence = _fence_params(guard)
        params = [_send_params(m, d) | fence for m, d in zip(messages, digests, strict=True)]
        results: list[SendResult] = []
        woken: list[str] = []
        if len(messages) == 1:  # the common case: one statement, no transaction round trips
            one = await self._send_one(messages[0], params[0])
            if one is not None:
                return [one]
        batch = [p | _no_note() for p in params]
        async with self._tx() as conn:
            await self._check_guard(conn, guard)
            async with conn.cursor() as cur:  # pipelined: one round trip for the batch
                await cur.executemany(Q["message_send"], batch, returning=True)
                sent = [await cur.fetchone()]
                while cur.nextset():
                    sent.append(await cur.fetchone())
            for i, (message, digest, row) in enumerate(zip(messages, digests, sent, strict=True)):
                if row is not None:
                    results.append(SendResult(_sent(message, row), len(row["inboxes"]), True))
                    woken.extend(row["inboxes"])
                    continue
                try:
                    result, inboxes = await self._send_explained(conn, message, digest)
                except McosError as e:
                    if len(messages) == 1:
                        raise
                    raise in_batch(e, i) from e
                results.append(result)
                woken.extend(inboxes)
        self._announce(sorted(set(woken)))
        return results

    async def _send_one(self, message: NewMessage, params: dict[str, Any]) -> SendResult | None:
        """One message in one statement — with the sends of other callers arriving meanwhile
        in one transaction, when ``SEND_LANES`` are busy (:mod:`mcos.store.coalesce`); None
        when the statement declined it (the caller explains why in a transaction)."""
        return await self._sends.submit((message, params))

    async def _send_together(
        self, items: Sequence[tuple[NewMessage, dict[str, Any]]]
    ) -> list[SendResult | BaseException | None]:
        """Each item's :meth:`_send_one` answer: alone, or all in one pipelined transaction
        (one commit). Should that transaction fail, each item is tried alone, so the error
        is only that of the item that causes it; a database gone fails them all at once."""
        if len(items) == 1:
            try:
                return [await self._send_alone(*items[0])]
            except Exception as e:  # raised in its caller by the coalescer
                return [e]
        batch = [p | _no_note() | {"item": i} for i, (_, p) in enumerate(items)]
        try:
            sent = await self._send_batch(batch)
        except StoreUnavailable as e:
            return [e] * len(items)
        except McosError:  # one item's fault (text PostgreSQL cannot hold...): find whose
            return [(await self._send_together([item]))[0] for item in items]
        results: list[SendResult | BaseException | None] = []
        woken: list[str] = []
        for (message, _), row in zip(items, sent, strict=True):
            if row is None:
                results.append(None)
                continue
            results.append(SendResult(_sent(message, row), len(row["inboxes"]), created=True))
            woken.extend(row["inboxes"])
        self._announce(sorted(set(woken)))
        return results

    async def _send_batch(self, batch: Sequence[dict[str, Any]]) -> list[Mapping[str, Any] | None]:
        """``message_send``'s row for each of ``batch`` (None where it declined), all in one
        pipelined transaction: on a lane (:mod:`mcos.store.lanes`), else through the pool."""
        if not self._down:
            try:
                rows = await self._lanes.fetchmany(
                    "message_send", [p | {"meta": p["meta"].obj} for p in batch]
                )
            except NoLane:
                pass
            else:
                sent: list[Mapping[str, Any] | None] = [None] * len(batch)
                for row in rows:
                    sent[row["item"]] = row
                return sent
        async with self._tx() as conn, conn.cursor() as cur:
            await cur.executemany(Q["message_send"], batch, returning=True)
            found = [await cur.fetchone()]
            while cur.nextset():
                found.append(await cur.fetchone())
        return list(found)

    async def _send_alone(self, message: NewMessage, params: dict[str, Any]) -> SendResult | None:
        """One message in one statement, carrying the pending NOTIFY when one is due; None
        when the statement declined it."""
        carried = self._carry()
        note = _no_note() if carried is None else {
            "channel": CHANNEL,
            "note_prefix": f"{self._origin}:",
            "note_pending": ",".join(sorted(carried)),
        }  # fmt: skip
        try:
            row = await self._send_statement(params | note)
        except BaseException:
            self._uncarry(carried)
            raise
        if row is None:
            self._uncarry(carried)
            return None
        inboxes = list(row["inboxes"])
        if row["notified"]:
            self._waiters.wake(inboxes)
        else:
            self._uncarry(carried)
            self._announce(inboxes)
        return SendResult(_sent(message, row), len(inboxes), created=True)

    async def _send_statement(self, params: dict[str, Any]) -> Mapping[str, Any] | None:
        """``message_send``'s row (see :meth:`_hot`)."""
        rows = await self._hot("message_send", params, {"meta": params["meta"].obj})
        return rows[0] if rows else None

    async def _hot(
        self, name: str, params: dict[str, Any], unwrapped: Mapping[str, Any] | None = None
    ) -> Sequence[DictRow]:
        """Statement ``name``'s rows on a lane's own connection (:mod:`mcos.store.lanes`,
        ``unwrapped`` replacing psycopg's wrapped parameters), or through the pool when every
        lane is busy, they stand aside, or the pool is down."""
        if not self._down:
            try:
                return await self._lanes.fetch(name, params | dict(unwrapped or {}))
            except NoLane:
                pass
        async with self._conn() as conn:
            return await (await conn.execute(Q[name], params)).fetchall()

    def _carry(self) -> set[str] | None:
        """The pending wake-ups, taken for a send to carry in its own commit, when a NOTIFY is
        due (``NOTIFY_EVERY`` since the last); None when not due or no notifier runs."""
        if not self._tasks or not self._others_listen():
            return None
        now = asyncio.get_running_loop().time()
        if now - self._last_notify < NOTIFY_EVERY:
            return None
        self._last_notify = now
        taken, self._pending = self._pending, set()
        return taken

    def _uncarry(self, carried: set[str] | None) -> None:
        """Give wake-ups a send did not carry back to the notifier."""
        if carried:
            self._pending |= carried
            self._pending_event.set()

    async def _send_explained(
        self, conn: Conn, message: NewMessage, digest: str
    ) -> tuple[SendResult, list[str]]:
        """The send the one-statement path declined, step by step: say why, or repeat."""
        if message.idempotency_key is not None:
            found = await (
                await conn.execute(
                    Q["message_by_idempotency"], (message.sender, message.idempotency_key)
                )
            ).fetchone()
            if found is not None:
                return await self._repeat(conn, found, digest), []
        kind_row = await (await conn.execute(Q["recipient_kind"], (message.recipient,))).fetchone()
        if kind_row is None:
            raise InvalidRequest(f"unknown recipient {message.recipient!r}", field="recipient")
        kind = RecipientKind(kind_row["kind"])
        thread_id = None
        if message.reply_to is not None:
            parent = await (
                await conn.execute(Q["message_thread_of"], (message.reply_to,))
            ).fetchone()
            if parent is None:
                raise InvalidRequest(f"reply_to: no message {message.reply_to}", field="reply_to")
            thread_id = parent["thread_id"]
        params = _send_params(message, digest) | {
            "recipient_kind": str(kind),
            "thread_id": thread_id,
        }
        row = await (await conn.execute(Q["message_insert"], params)).fetchone()
        if row is None:  # a concurrent send with the same key won the race
            found = await (
                await conn.execute(
                    Q["message_by_idempotency"], (message.sender, message.idempotency_key)
                )
            ).fetchone()
            assert found is not None
            return await self._repeat(conn, found, digest), []
        if kind is RecipientKind.TOPIC:
            subs = await (
                await conn.execute(Q["topic_subscribers"], (message.recipient,))
            ).fetchall()
            inboxes = [r["subscriber"] for r in subs]
        else:
            inboxes = [message.recipient]
        if inboxes:
            await conn.execute(
                Q["deliveries_insert"],
                {
                    "message_id": row["id"],
                    "priority": message.priority.rank,
                    "inboxes": inboxes,
                    "expires_at": message.expires_at,
                    "ttl": message.ttl,
                },
            )
        return SendResult(_message(row), len(inboxes), created=True), inboxes

    @staticmethod
    async def _repeat(conn: Conn, found: DictRow, digest: str) -> SendResult:
        if found["content_hash"] != digest:
            raise IdempotencyConflict(
                f"idempotency key {found['idempotency_key']!r} was already used by "
                f"{found['sender']} for different content (message {found['id']})",
                message_id=found["id"],
            )
        n = await (await conn.execute(Q["message_delivery_count"], {"id": found["id"]})).fetchone()
        assert n is not None
        return SendResult(rows.message(found, _utc(found["created_at"])), n["n"], created=False)

    async def get_message(self, message_id: int) -> Message:
        """One message by id."""
        async with self._conn() as conn:
            row = await (await conn.execute(Q["message_by_id"], (message_id,))).fetchone()
        if row is None:
            raise NotFound(f"no message {message_id}", message_id=message_id)
        return rows.message(row, _utc(row["created_at"]))

    async def thread(self, thread_id: int) -> list[Message]:
        """Every message of a thread, oldest first."""
        async with self._conn() as conn:
            result = await (await conn.execute(Q["thread_messages"], (thread_id,))).fetchall()
        return [rows.message(r, _utc(r["created_at"])) for r in result]

    async def claim(
        self, inbox: str, *, limit: int = 1, visibility: timedelta | None = None
    ) -> list[Delivery]:
        """Claim up to ``limit`` deliveries with SKIP LOCKED; exhausted lapsed claims die."""
        hold = visibility or self.policy.visibility
        params = {
            "inbox": inbox,
            "limit": limit,
            "hold": hold,
            "max_attempts": self.policy.max_attempts,
        }
        result = await self._hot("claim", params)
        if result and result[0]["exhausted"]:
            await self.sweep_dead_letters()
        return [_delivery(r) for r in result if r["delivery_id"] is not None]

    async def _held(self, conn: Conn, inbox: str, delivery_id: int, receipt: str) -> DictRow | None:
        row = await (await conn.execute(Q["delivery_for_update"], (delivery_id, inbox))).fetchone()
        if row is None:
            done = await (
                await conn.execute(Q["delivery_history_receipt"], (delivery_id, inbox))
            ).fetchone()
            if done is None:
                raise NotFound(f"no delivery {delivery_id} in inbox {inbox!r}")
            if secrets.compare_digest(done["receipt"], receipt):
                return None
            raise StaleReceipt(f"delivery {delivery_id} was already acknowledged by another claim")
        if row["state"] != "claimed" or row["receipt"] is None:
            raise StaleReceipt(f"delivery {delivery_id} is not claimed (it is {row['state']})")
        if not secrets.compare_digest(row["receipt"], receipt):
            raise StaleReceipt(f"delivery {delivery_id} was claimed again since this receipt")
        return row

    @staticmethod
    async def _check_guard(conn: Conn, guard: FenceGuard | None) -> None:
        """Refuse a guarded write whose fence the agent's lease has moved past; the lease row
        stays share-locked until the caller's transaction ends."""
        if guard is None:
            return
        row = await (await conn.execute(Q["lease_guard"], (guard.agent,))).fetchone()
        current = None if row is None else _lease(row)
        if current is not None and guard.refuses(current):
            raise guard.refusal(current)

    async def ack(
        self, inbox: str, delivery_id: int, receipt: str, *, guard: FenceGuard | None = None
    ) -> None:
        """Finish a delivery; acking twice with the same receipt is harmless."""
        await self.ack_many(inbox, [(delivery_id, receipt)], guard=guard)

    async def ack_many(
        self, inbox: str, items: Sequence[tuple[int, str]], *, guard: FenceGuard | None = None
    ) -> None:
        """Ack several deliveries at once; any stale receipt refuses them all.

        The common case is one all-or-nothing statement; only a batch it declined (a repeat
        ack, a stale or unknown receipt) takes the item-by-item transaction that says which.
        """
        ordered = sorted(set(items))
        if not ordered:
            return
        batch = {
            "inbox": inbox,
            "ids": [i for i, _ in ordered],
            "receipts": [r for _, r in ordered],
        } | _fence_params(guard)
        done = await self._hot("deliveries_ack_all", batch)
        if len(done) == len({i for i, _ in ordered}):
            return
        async with self._tx() as conn:
            await self._check_guard(conn, guard)
            done = await (await conn.execute(Q["deliveries_ack_batch"], batch)).fetchall()
            acked = {r["id"] for r in done}
            # What one statement could not ack: already acked with this receipt (fine), or
            # stale / unknown (raises, rolling the whole batch back).
            for delivery_id, receipt in ordered:
                if delivery_id not in acked:
                    await self._held(conn, inbox, delivery_id, receipt)

    async def nack(
        self,
        inbox: str,
        delivery_id: int,
        receipt: str,
        *,
        error: str = "",
        delay: timedelta | None = None,
    ) -> Delivery:
        """Give a delivery back after a backoff, or dead-letter it when exhausted."""
        async with self._tx() as conn:
            row = await self._held(conn, inbox, delivery_id, receipt)
            if row is None:
                raise StaleReceipt(f"delivery {delivery_id} was already acknowledged")
            attempts = row["attempts"]
            if row["expired"] or self.policy.exhausted(attempts):
                reason = (
                    EXPIRED if row["expired"] else f"not acknowledged after {attempts} attempts"
                )
                self.dead_lettered += 1
                await conn.execute(Q["delivery_dead_letter"], (reason, delivery_id))
                await self._append_audit(
                    conn,
                    AuditEvent(
                        "system",
                        "delivery.dead_letter",
                        {"delivery": delivery_id, "inbox": inbox},
                        {"attempts": attempts, "reason": reason},
                    ),
                )
            else:
                wait = delay if delay is not None else self.policy.retry_delay(attempts)
                await conn.execute(Q["delivery_release"], (wait, error or None, delivery_id))
            result = await (
                await conn.execute(Q["delivery_with_message"], (delivery_id,))
            ).fetchone()
            assert result is not None
        delivery = _delivery(result)
        if delivery.state is DeliveryState.QUEUED and (delay is None or delay <= timedelta(0)):
            self._announce([inbox])
        return delivery

    async def defer(
        self,
        inbox: str,
        items: Sequence[tuple[int, str]],
        *,
        not_before: datetime,
        reason: str,
    ) -> list[Delivery]:
        """Hand claims back unused (see the protocol): all of ``items`` or none."""
        try:
            defer_until(await self.now(), not_before)
        except ValueError as e:
            raise InvalidRequest(str(e), field="not_before") from e
        done: list[Delivery] = []
        async with self._tx() as conn:
            for delivery_id, receipt in items:
                if await self._held(conn, inbox, delivery_id, receipt) is None:
                    raise StaleReceipt(f"delivery {delivery_id} was already acknowledged")
                await conn.execute(
                    Q["delivery_defer"],
                    {"id": delivery_id, "not_before": not_before, "reason": reason or None},
                )
                row = await (
                    await conn.execute(Q["delivery_with_message"], (delivery_id,))
                ).fetchone()
                assert row is not None
                done.append(_delivery(row))
        if done and done[0].visible_at <= await self.now():
            self._announce([inbox])
        return done

    async def sweep_dead_letters(self, limit: int = 500) -> int:
        """Dead-letter lapsed claims out of attempts and expired deliveries of every inbox."""
        async with self._tx() as conn:
            dead = await (
                await conn.execute(
                    Q["sweep_dead"], {"max_attempts": self.policy.max_attempts, "limit": limit}
                )
            ).fetchall()
            for d in dead:
                self.dead_lettered += 1
                await self._append_audit(
                    conn,
                    AuditEvent(
                        actor="system",
                        action="delivery.dead_letter",
                        targets={"delivery": d["id"], "inbox": d["inbox"]},
                        detail={"attempts": d["attempts"], "reason": d["last_error"]},
                    ),
                )
        return len(dead)

    async def unnotified_dead_letters(self, limit: int = 500) -> list[Delivery]:
        """Dead letters nobody was told of yet, oldest first."""
        async with self._conn() as conn:
            found = await (await conn.execute(Q["dead_unnotified"], (limit,))).fetchall()
        return [_delivery(r) for r in found]

    async def mark_dead_letters_notified(self, ids: Sequence[int]) -> list[int]:
        """Record that these dead letters were told; returns those this call marked."""
        marked: list[int] = []
        async with self._tx() as conn:
            for i in ids:
                if (await conn.execute(Q["dead_mark_notified"], (i,))).rowcount:
                    marked.append(i)
        return marked

    async def dead_letters(self, inbox: str | None = None, limit: int = 100) -> list[Delivery]:
        """Dead-lettered deliveries, oldest first."""
        async with self._conn() as conn:
            result = await (
                await conn.execute(Q["dead_letters"], {"inbox": inbox, "limit": limit})
            ).fetchall()
        return [_delivery(r) for r in result]

    async def requeue(self, delivery_id: int, audit: AuditEvent | None = None) -> Delivery:
        """Put a dead letter back with a fresh attempt count."""
        async with self._tx() as conn:
            changed = await conn.execute(Q["delivery_requeue"], (delivery_id,))
            if changed.rowcount != 1:
                raise NotFound(f"no dead-lettered delivery {delivery_id}")
            if audit is not None:
                await self._append_audit(conn, audit)
            row = await (await conn.execute(Q["delivery_with_message"], (delivery_id,))).fetchone()
            assert row is not None
        delivery = _delivery(row)
        self._announce([delivery.inbox])
        return delivery

    async def inbox_depths(self, inboxes: Sequence[str] | None = None) -> list[InboxDepth]:
        """Queue depth per inbox."""
        async with self._conn() as conn:
            result = await (await conn.execute(Q["inbox_depths"])).fetchall()
        found = {
            r["inbox"]: InboxDepth(r["inbox"], r["queued"], r["claimed"], r["dead"]) for r in result
        }
        if inboxes is None:
            return list(found.values())
        return [found.get(i, InboxDepth(i, 0, 0, 0)) for i in inboxes]

    # --- model use and budgets -------------------------------------------------------------
    async def reserve_budget(self, ask: BudgetAsk, limits: Limits, fleet: Limits) -> Reservation:
        """Hold a call's worst case against today's caps, or raise ``OverBudget``."""
        async with self._tx() as conn:
            locked = await (await conn.execute(Q["budget_lock"])).fetchone()
            assert locked is not None
            day = _utc(locked["now"]).date()
            mine = await (
                await conn.execute(Q["committed_agent"], {"day": day, "agent": ask.agent})
            ).fetchone()
            whole = await (await conn.execute(Q["committed_fleet"], {"day": day})).fetchone()
            committed = _committed(mine)
            granted = grant_budget(
                ask.agent, ask.worst, committed, _committed(whole), limits, fleet
            )
            row = await (
                await conn.execute(
                    Q["reservation_insert"],
                    (
                        ask.agent, day, granted.usd_micros, granted.tokens, ask.purpose,
                        ask.model, ask.worst.prompt_tokens, granted.max_output,
                    ),
                )
            ).fetchone()  # fmt: skip
            assert row is not None
        after = Committed(
            committed.usd_micros + granted.usd_micros, committed.tokens + granted.tokens
        )
        return Reservation(
            row["id"], ask.agent, day.isoformat(), granted.usd_micros, granted.tokens,
            granted.verdict, after, granted.max_output,
        )  # fmt: skip

    async def settle(self, reservation_id: int | None, call: ModelCall) -> Held | None:
        """Record a call and release its reservation."""
        u = call.usage
        held = None
        async with self._tx() as conn:
            if reservation_id is not None:
                row = await (
                    await conn.execute(Q["reservation_settle"], (reservation_id, call.agent))
                ).fetchone()
                if row is None:
                    raise Conflict(
                        f"reservation {reservation_id} is not held by {call.agent}",
                        reservation=reservation_id,
                    )
                held = _held(row)
            await conn.execute(
                Q["model_call_insert"],
                (
                    call.agent, call.provider, call.model, call.purpose, u.input, u.output,
                    u.cache_read, u.cache_write, call.cost_micros, reservation_id,
                ),
            )  # fmt: skip
        return held

    async def usage(self, since: str, agent: str | None = None) -> list[UsageRow]:
        """Model use per agent per UTC day from ``since`` on."""
        async with self._conn() as conn:
            found = await (
                await conn.execute(Q["usage_since"], {"since": since, "agent": agent})
            ).fetchall()
        return [usage_row(r) for r in found]

    async def set_agent_state(
        self,
        name: str,
        state: str,
        detail: str = "",
        until: datetime | None = None,
        info: dict[str, Any] | None = None,
    ) -> AgentState:
        """Record the state an agent's runtime reports."""
        async with self._conn() as conn:
            row = await (
                await conn.execute(
                    Q["agent_state_upsert"], (name, state, detail, until, Jsonb(info or {}))
                )
            ).fetchone()
        assert row is not None
        return _agent_state(row)

    async def agent_states(self, names: Sequence[str] | None = None) -> list[AgentState]:
        """Every agent's last reported state (of ``names`` when given)."""
        async with self._conn() as conn:
            if names is None:
                found = await (await conn.execute(Q["agent_states_all"])).fetchall()
            else:
                query, args = Q["agent_states_named"], (list(names),)
                found = await (await conn.execute(query, args)).fetchall()
        return [_agent_state(r) for r in found]

    # --- incidents ---------------------------------------------------------------------------
    async def create_incident(self, new: NewIncident) -> Incident:
        """Store a new incident with its opening events."""
        async with self._tx() as conn:
            row = await (
                await conn.execute(
                    Q["incident_insert"],
                    {
                        "severity": new.severity, "state": new.state, "summary": new.summary,
                        "evidence": new.evidence, "reporter": new.reporter,
                        "fingerprint": new.fingerprint,
                    },
                )
            ).fetchone()  # fmt: skip
            assert row is not None
            for actor, action, severity, reason in new.events:
                await conn.execute(
                    Q["incident_event_insert"],
                    {
                        "incident_id": row["id"], "actor": actor, "action": action,
                        "severity": severity, "reason": reason,
                    },
                )  # fmt: skip
        return _incident(row)

    async def incident(self, incident_id: int) -> Incident | None:
        """One incident."""
        return await self._one(Q["incident_get"], (incident_id,), _incident)

    async def open_incident(self, fingerprint: str) -> Incident | None:
        """The open incident of an observation, if any."""
        return await self._one(Q["incident_open_by_fingerprint"], (fingerprint,), _incident)

    async def incidents(self, state: str | None = None, limit: int = 100) -> list[Incident]:
        """Incidents, newest first."""
        return await self._all(Q["incidents_list"], {"state": state, "limit": limit}, _incident)

    async def incident_events(self, incident_id: int) -> list[IncidentEvent]:
        """An incident's timeline."""
        return await self._all(Q["incident_events_of"], (incident_id,), _incident_event)

    async def record_incident_event(
        self, incident_id: int, actor: str, action: str, severity: str, reason: str
    ) -> None:
        """Add to the timeline; one confirmer counts once (the incident row is locked)."""
        async with self._tx() as conn:
            await conn.execute("SELECT 1 FROM incidents WHERE id = %s FOR UPDATE", (incident_id,))
            if action == "confirm":
                found = await (
                    await conn.execute(Q["incident_vote_exists"], (incident_id, actor, severity))
                ).fetchone()
                if found is not None:
                    raise Conflict(
                        f"{actor} already confirmed incident {incident_id} at {severity} "
                        "(one confirmer counts once)",
                        incident=incident_id,
                    )
            await conn.execute(
                Q["incident_event_insert"],
                {
                    "incident_id": incident_id, "actor": actor, "action": action,
                    "severity": severity, "reason": reason,
                },
            )  # fmt: skip

    async def transition_incident(
        self,
        incident_id: int,
        expected: str,
        state: str,
        severity: str,
        event: tuple[str, str, str],
        more_reports: int = 0,
    ) -> Incident:
        """Compare-and-set an incident's state, with its event."""
        async with self._tx() as conn:
            row = await (
                await conn.execute(
                    Q["incident_transition"],
                    {
                        "state": state, "severity": severity, "more": more_reports,
                        "id": incident_id, "expected": expected,
                    },
                )
            ).fetchone()  # fmt: skip
            if row is None:
                raise Conflict(
                    f"incident {incident_id} is no longer {expected}", incident=incident_id
                )
            actor, action, reason = event
            await conn.execute(
                Q["incident_event_insert"],
                {
                    "incident_id": incident_id, "actor": actor, "action": action,
                    "severity": severity, "reason": reason,
                },
            )  # fmt: skip
        return _incident(row)

    async def reports_since(self, actor: str, seconds: float) -> int:
        """Incident reports ``actor`` made in the last ``seconds``."""
        async with self._conn() as conn:
            row = await (await conn.execute(Q["reports_since"], (actor, seconds))).fetchone()
        assert row is not None
        return int(row["n"])

    # --- approvals ---------------------------------------------------------------------------
    async def create_approval(self, new: NewApproval) -> Approval:
        """A pending request; one pending request per action and payload."""
        async with self._tx() as conn:
            open_ = await (
                await conn.execute(Q["approval_pending_for"], (new.action, new.payload_hash))
            ).fetchone()
            if open_ is not None:
                raise duplicate_request(_approval(open_))
            try:
                row = await (
                    await conn.execute(
                        Q["approval_insert"],
                        {
                            "action": new.action, "payload": Jsonb(new.payload),
                            "payload_hash": new.payload_hash, "requester": new.requester,
                            "rationale": new.rationale, "quorum": new.quorum,
                            "executor": new.executor, "constraints": new.constraints,
                            "report_every": new.report_every,
                            "expires_in": new.expires_in.total_seconds(),
                        },
                    )
                ).fetchone()  # fmt: skip
            except psycopg.errors.UniqueViolation:
                msg = f"a request for {new.action} with the same payload is already pending"
                raise Conflict(msg) from None
        assert row is not None
        return _approval(row)

    async def approval(self, approval_id: int) -> Approval | None:
        """One request."""
        return await self._one(Q["approval_get"], (approval_id,), _approval)

    async def approvals(self, state: str | None = None, limit: int = 100) -> list[Approval]:
        """Requests, newest first."""
        return await self._all(Q["approvals_list"], {"state": state, "limit": limit}, _approval)

    async def add_vote(self, approval_id: int, voter: str, vote: str, rationale: str) -> Vote:
        """Record a vote once."""
        async with self._conn() as conn:
            row = await (
                await conn.execute(Q["approval_vote_insert"], (approval_id, voter, vote, rationale))
            ).fetchone()
        if row is None:
            raise Conflict(
                f"{voter} already voted on request {approval_id} (a member votes once)",
                approval=approval_id,
            )
        return _vote(row)

    async def votes(self, approval_id: int) -> list[Vote]:
        """The votes on a request."""
        return await self._all(Q["approval_votes_of"], (approval_id,), _vote)

    async def decide_approval(self, approval_id: int, state: str, by: str, reason: str) -> Approval:
        """Close a pending request (compare-and-set)."""
        async with self._conn() as conn:
            row = await (
                await conn.execute(
                    Q["approval_decide"],
                    {"state": state, "by": by, "reason": reason, "id": approval_id},
                )
            ).fetchone()
        if row is None:
            raise Conflict(f"request {approval_id} is no longer pending", approval=approval_id)
        return _approval(row)

    async def set_directive(self, approval_id: int, directive_id: int) -> Approval:
        """Link the directive message."""
        async with self._conn() as conn:
            row = await (
                await conn.execute(
                    Q["approval_directive"], {"directive_id": directive_id, "id": approval_id}
                )
            ).fetchone()
        assert row is not None
        return _approval(row)

    async def acknowledge_directive(self, approval_id: int) -> Approval | None:
        """Mark the directive acknowledged."""
        async with self._conn() as conn:
            row = await (
                await conn.execute(Q["approval_acknowledge"], {"id": approval_id})
            ).fetchone()
        return None if row is None else _approval(row)

    async def withdraw_approval(self, approval_id: int, by: str, reason: str) -> Approval | None:
        """Veto an approved request whose directive is not yet acknowledged (compare-and-set)."""
        async with self._conn() as conn:
            row = await (
                await conn.execute(
                    Q["approval_withdraw"], {"by": by, "reason": reason, "id": approval_id}
                )
            ).fetchone()
        return None if row is None else _approval(row)

    async def approvals_due(self, limit: int = 100) -> list[Approval]:
        """Pending requests past their expiry, the longest overdue first."""
        return await self._all(Q["approvals_due"], {"limit": limit}, _approval)

    async def incidents_unconfirmed(self, older_than: float, limit: int = 100) -> list[Incident]:
        """Reports still at their gate ``older_than`` seconds after they were made, oldest first."""
        return await self._all(
            Q["incidents_unconfirmed"], {"secs": older_than, "limit": limit}, _incident
        )

    async def mark_reminded(self, approval_id: int) -> bool:
        """Claim the one reminder of a pending request."""
        async with self._conn() as conn:
            row = await (await conn.execute(Q["approval_remind"], {"id": approval_id})).fetchone()
        return row is not None

    async def _one(self, query: str, params: Any, convert: Callable[[DictRow], T]) -> T | None:
        async with self._conn() as conn:
            row = await (await conn.execute(query, params)).fetchone()
        return None if row is None else convert(row)

    async def _all(self, query: str, params: Any, convert: Callable[[DictRow], T]) -> list[T]:
        async with self._conn() as conn:
            found = await (await conn.execute(query, params)).fetchall()
        return [convert(r) for r in found]

    # --- pages -------------------------------------------------------------------------------
    async def open_page(
        self, human: str, key: str, kind: PageKind, subject: str, body: str
    ) -> Page | None:
        """A new page; None when this person was already paged about ``key``."""
        params = {"human": human, "key": key, "kind": kind.value, "subject": subject}
        return await self._one(Q["page_open"], params | {"body": body}, _page)

    async def page_sent(
        self, page_id: int, *, state: str, channel: str, ref: str = "", error: str = ""
    ) -> Page:
        """Record a delivery attempt (an acknowledged page stays acknowledged)."""
        params = {"id": page_id, "state": state, "channel": channel, "ref": ref, "error": error}
        page = await self._one(Q["page_sent"], params, _page)
        if page is None:
            raise NotFound(f"no page {page_id}", page=page_id)
        return page

    async def ack_page(self, page_id: int, by: str) -> Page | None:
        """Acknowledge once; None when already acknowledged or unknown."""
        return await self._one(Q["page_ack"], {"id": page_id, "by": by}, _page)

    async def page(self, page_id: int) -> Page | None:
        """One page."""
        return await self._one(Q["page_get"], (page_id,), _page)

    async def pages(
        self, human: str | None = None, state: str | None = None, limit: int = 100
    ) -> list[Page]:
        """Pages, newest first."""
        return await self._all(
            Q["pages_list"], {"human": human, "state": state, "limit": limit}, _page
        )

    # --- leases ------------------------------------------------------------------------------
    async def acquire_lease(self, agent: str, holder: str, host: str, ttl: timedelta) -> Lease:
        """Grant or renew with the lease row locked, so two supervisors cannot both win."""
        async with self._tx() as conn:
            await conn.execute(Q["lease_seed"], (agent,))
            row = await (await conn.execute(Q["lease_lock"], (agent,))).fetchone()
            assert row is not None
            current = _lease(row) if row["fence"] > 0 else None
            decision = grant(current, holder, _utc(row["now"]))
            if decision == Grant.REFUSE:
                assert current is not None
                raise held_error(current)
            fence = int(row["fence"]) + (1 if decision == Grant.NEW else 0)
            out = await (
                await conn.execute(
                    Q["lease_write"],
                    (holder, host, fence, ttl.total_seconds(), decision == Grant.NEW, agent),
                )
            ).fetchone()
        assert out is not None
        return _lease(out)

    async def renew_lease(self, agent: str, holder: str, fence: int, ttl: timedelta) -> Lease:
        """Extend our live lease; anything else means it is lost."""
        async with self._tx() as conn:
            return await _renew_row(conn, agent, holder, fence, ttl)

    async def release_lease(self, agent: str, holder: str, fence: int) -> bool:
        """Let the lease end now."""
        async with self._conn() as conn:
            row = await (await conn.execute(Q["lease_release"], (agent, holder, fence))).fetchone()
        return row is not None

    async def lease(self, agent: str) -> Lease | None:
        """The agent's current (or last) lease."""
        async with self._conn() as conn:
            row = await (await conn.execute(Q["lease_get"], (agent,))).fetchone()
        return None if row is None else _lease(row)

    async def leases(self) -> list[Lease]:
        """Every agent's current (or last) lease."""
        async with self._conn() as conn:
            found = await (await conn.execute(Q["leases_all"])).fetchall()
        return [_lease(r) for r in found]

    # --- tokens ------------------------------------------------------------------------------
    async def create_token(
        self,
        *,
        prefix: str,
        digest: str,
        kind: PrincipalKind,
        name: str,
        label: str = "",
        expires_at: datetime | None = None,
        audit: AuditEvent | None = None,
    ) -> TokenRecord:
        """Store a new token's digest and its audit record together."""
        async with self._tx() as conn:
            row = await (
                await conn.execute(
                    Q["token_insert"], (prefix, digest, str(kind), name, label, expires_at)
                )
            ).fetchone()
            assert row is not None
            record = _token(row)
            if audit is not None:
                event = AuditEvent(
                    audit.actor,
                    audit.action,
                    {**audit.targets, "token": record.id},
                    audit.detail,
                    audit.outcome,
                )
                await self._append_audit(conn, event)
        return record

    async def find_token(self, prefix: str) -> TokenRecord | None:
        """The token with this prefix."""
        async with self._conn() as conn:
            row = await (await conn.execute(Q["token_by_prefix"], (prefix,))).fetchone()
        return None if row is None else _token(row)

    async def get_token(self, token_id: int) -> TokenRecord:
        """One token by id."""
        async with self._conn() as conn:
            row = await (await conn.execute(Q["token_by_id"], (token_id,))).fetchone()
        if row is None:
            raise NotFound(f"no token {token_id}", token_id=token_id)
        return _token(row)

    async def list_tokens(self, name: str | None = None) -> list[TokenRecord]:
        """Every token, or one principal's."""
        async with self._conn() as conn:
            cur = (
                await conn.execute(Q["tokens_all"])
                if name is None
                else await conn.execute(Q["tokens_of"], (name,))
            )
            result = await cur.fetchall()
        return [_token(r) for r in result]

    async def revoke_token(self, token_id: int, audit: AuditEvent | None = None) -> TokenRecord:
        """Revoke a token; revoking twice keeps the first time."""
        async with self._tx() as conn:
            # Locks the active operator tokens (in id order): two revocations of the last two
            # are serialised, and the second sees that only its own token is left.
            cursor = await conn.execute(Q["operator_tokens_active"])
            active = [r["id"] for r in await cursor.fetchall()]
            if token_id in active and len(active) == 1:
                raise last_operator_refusal(token_id)
            row = await (await conn.execute(Q["token_revoke"], (token_id,))).fetchone()
            if row is None:
                raise NotFound(f"no token {token_id}", token_id=token_id)
            if audit is not None:
                await self._append_audit(conn, audit)
        return _token(row)

    # --- audit -------------------------------------------------------------------------------
    async def _append_audit(self, conn: Conn, event: AuditEvent) -> AuditRecord:
        """Append to the chain inside the caller's transaction (the head row lock orders it)."""
        key = _need_key(self._audit_key)
        head = await (await conn.execute(Q["audit_head"])).fetchone()
        assert head is not None
        seq = head["seq"] + 1
        at = _utc(head["now"])
        digest = record_hash(
            seq=seq,
            at=at,
            actor=event.actor,
            action=event.action,
            targets=event.targets,
            detail=event.detail,
            outcome=event.outcome,
            prev_hash=head["hash"],
            key=key,
        )
        row = await (
            await conn.execute(
                Q["audit_insert"],
                (
                    seq,
                    at,
                    event.actor,
                    event.action,
                    canonical(event.targets),
                    canonical(event.detail),
                    event.outcome,
                    head["hash"],
                    digest,
                ),
            )
        ).fetchone()
        assert row is not None
        await conn.execute(Q["audit_head_update"], (seq, digest))
        return rows.audit(row, at)

    async def record(self, event: AuditEvent) -> AuditRecord:
        """Append one audit record in its own transaction."""
        async with self._tx() as conn:
            return await self._append_audit(conn, event)

    async def audit(self, query: AuditQuery) -> list[AuditRecord]:
        """Audit records matching ``query``."""
        params: dict[str, Any] = {
            "after": query.after_seq,
            "actor": query.actor,
            "action": query.action,
            "since": query.since,
            "until": query.until,
            "limit": query.limit,
        }
        async with self._conn() as conn:
            result = await (await conn.execute(Q["audit_query"], params)).fetchall()
        return [rows.audit(r, _utc(r["at"])) for r in result]

    async def verify_audit(self, checkpoints: list[Checkpoint] | None = None) -> AuditVerification:
        """Walk the whole chain, check the append-only triggers, compare with ``checkpoints``."""
        key = _need_key(self._audit_key)
        async with self._conn() as conn, conn.transaction():
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            result = await (await conn.execute(Q["audit_all"])).fetchall()
            head = await (await conn.execute(Q["audit_chain_head"])).fetchone()
            triggers = await (await conn.execute(Q["audit_triggers"])).fetchall()
        assert head is not None
        state = ChainState(
            [rows.audit(r, _utc(r["at"])) for r in result],
            head["seq"],
            head["hash"],
            head["keyed_from"],
            sorted(AUDIT_TRIGGERS - {t["name"] for t in triggers}),
        )
        findings = verify(state, key, checkpoints)
        return AuditVerification(len(state.records), state.head_seq, findings, state.keyed_from)

    def use_audit_key(self, key: bytes) -> None:
        """Key the chain's HMAC from now on."""
        self._audit_key = key

    async def audit_tip(self) -> Checkpoint:
        """The newest record and where keyed hashing began, timed now."""
        async with self._conn() as conn:
            row = await (await conn.execute(Q["audit_tip"])).fetchone()
        assert row is not None
        return Checkpoint(
            row["seq"] or 0, row["hash"] or GENESIS, datetime.now(UTC), row["keyed_from"]
        )

    # --- dashboard sessions --------------------------------------------------------------------
    async def create_session(
        self, id_hash: str, token_id: int, operator: str, lifetime: timedelta
    ) -> DashboardSession:
        """Open a dashboard session (times from the database's clock)."""
        async with self._tx() as conn:
            row = await (
                await conn.execute(
                    Q["dashboard_session_insert"], (id_hash, token_id, operator, lifetime)
                )
            ).fetchone()
        assert row is not None
        return _session(row)

    async def find_session(self, id_hash: str) -> DashboardSession | None:
        """The session with this id hash, or None."""
        async with self._conn() as conn:
            row = await (await conn.execute(Q["dashboard_session_by_hash"], (id_hash,))).fetchone()
        return None if row is None else _session(row)

    async def end_session(self, id_hash: str) -> DashboardSession | None:
        """End a session from now on; ending twice keeps the first time."""
        async with self._tx() as conn:
            row = await (await conn.execute(Q["dashboard_session_end"], (id_hash,))).fetchone()
        return None if row is None else _session(row)

    # --- trace ---------------------------------------------------------------------------
    async def save_trace(self, trace: StoredTrace) -> StoredTrace:
        """Store a trace and its message links; one already stored under the id is returned."""
        async with self._tx() as conn:
            made = await (
                await conn.execute(
                    Q["trace_insert"],
                    {
                        "id": trace.id,
                        "agent": trace.agent,
                        "kind": trace.kind,
                        "outcome": trace.outcome,
                        "started_at": trace.started_at,
                        "cost_micros": trace.cost_micros,
                        "cost_source": trace.cost_source,
                        "body": Jsonb(trace.body),
                    },
                )
            ).fetchone()
            if made is not None:
                links = [(trace.id, m, "woke") for m in trace.woke]
                links += [(trace.id, m, "sent") for m in trace.sent]
                if links:
                    async with conn.cursor() as cur:
                        await cur.executemany(Q["trace_link"], links)
            row = await (await conn.execute(Q["trace_by_id"], (trace.id,))).fetchone()
        assert row is not None
        return _stored_trace(row)

    async def trace(self, trace_id: str) -> StoredTrace | None:
        """One trace by id."""
        async with self._conn() as conn:
            row = await (await conn.execute(Q["trace_by_id"], (trace_id,))).fetchone()
        return None if row is None else _stored_trace(row)

    async def traces(
        self,
        *,
        agent: str | None = None,
        thread: int | None = None,
        message: int | None = None,
        since: datetime | None = None,
        limit: int = 50,
    ) -> list[StoredTrace]:
        """Traces newest first, filtered."""
        params = {
            "agent": agent,
            "thread": thread,
            "message": message,
            "since": since,
            "limit": limit,
        }
        async with self._conn() as conn:
            found = await (await conn.execute(Q["traces_find"], params)).fetchall()
        return [_stored_trace(r) for r in found]

    async def metered_calls(self, agent: str, reservations: Sequence[int]) -> dict[int, int]:
        """Micro-dollars recorded per reservation of ``agent``."""
        async with self._conn() as conn:
            found = await (
                await conn.execute(Q["trace_metered_calls"], (agent, list(reservations)))
            ).fetchall()
        return {int(r["reservation_id"]): int(r["cost"]) for r in found}

    async def delete_traces_before(self, cutoff: datetime) -> int:
        """Delete traces of turns started before ``cutoff``."""
        async with self._tx() as conn:
            cur = await conn.execute(Q["traces_delete_before"], (cutoff,))
            return cur.rowcount

    # --- dash: message search ------------------------------------------------------------------
    async def search_messages(self, search: MessageSearch) -> list[MessageHit]:
        """Messages matching ``search``, newest first, each with the state of its copies."""
        params: dict[str, Any] = {
            "sender": search.sender,
            "recipient": search.recipient,
            "kind": None if search.kind is None else search.kind.value,
            "priority": None if search.priority is None else search.priority.rank,
            "thread": search.thread_id,
            "since": search.since,
            "until": search.until,
            "before": search.before,
            "pattern": search.like(),
            "state": None if search.state is None else search.state.value,
            "limit": search.limit,
        }
        async with self._conn() as conn:
            result = await (await conn.execute(Q["message_search"], params)).fetchall()
        return [
            MessageHit(rows.message(r, _utc(r["created_at"])), MessageState(r["delivery_state"]))
            for r in result
        ]

    # --- kbpg: knowledge chunks ----------------------------------------------------------------
    async def put_knowledge_chunks(
        self, owner: str, path: str, offset: int, chunks: Sequence[KnowledgeChunk]
    ) -> None:
        """Replace ``path``'s chunks from ``offset`` on with ``chunks`` in one transaction."""
        async with self._tx() as conn:
            # Two agents syncing one shared file wait for each other rather than collide.
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"{owner}\n{path}",)
            )
            await conn.execute(
                "DELETE FROM knowledge_chunks WHERE owner = %s AND path = %s AND seq >= %s",
                (owner, path, offset),
            )
            async with conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO knowledge_chunks (owner, path, seq, page, section, line, text) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    [
                        (owner, path, offset + i, c.page, c.section, c.line, c.text)
                        for i, c in enumerate(chunks)
                    ],
                )

    async def delete_knowledge_file(self, owner: str, path: str) -> int:
        """Forget ``path``'s chunks; how many went."""
        async with self._tx() as conn:
            cur = await conn.execute(
                "DELETE FROM knowledge_chunks WHERE owner = %s AND path = %s", (owner, path)
            )
            return cur.rowcount

    async def search_knowledge(
        self, owners: Sequence[str], query: str, k: int
    ) -> list[KnowledgeChunkHit]:
        """Any of the query's words (stemmed, English stop words dropped; never a syntax
        error) ranked by ``ts_rank`` with the section weighted above the text; ties broken
        by file and place. Like FTS5's BM25 over the same words, a chunk needs only some."""
        words = TSQUERY_WORD.findall(query)[:MAX_QUERY_WORDS]
        if not words or not owners:
            return []
        async with self._conn() as conn:
            cur = await conn.execute(
                "SELECT path, seq, page, section, line, text, ts_rank(tsv, q, 1) AS score "
                "FROM knowledge_chunks, to_tsquery('english', %s) AS q "
                "WHERE owner = ANY(%s) AND tsv @@ q "
                "ORDER BY score DESC, path, seq LIMIT %s",
                (" | ".join(f"'{w}'" for w in words), list(owners), k),
            )
            found = await cur.fetchall()
        return [
            KnowledgeChunkHit(
                r["path"],
                r["seq"],
                KnowledgeChunk(r["page"], r["section"], r["line"], r["text"]),
                float(r["score"]),
            )
            for r in found
        ]

    # --- netns ---------------------------------------------------------------------------------
    async def release_claims(self, inbox: str) -> int:
        """Claimed, unacked deliveries of ``inbox`` claimable now; how many."""
        async with self._tx() as conn:
            changed = await conn.execute(
                "UPDATE deliveries SET visible_at = clock_timestamp(),"
                " updated_at = clock_timestamp()"
                " WHERE inbox = %s AND state = 'claimed' AND visible_at > clock_timestamp()",
                (inbox,),
            )
        if changed.rowcount:
            self._announce([inbox])
        return changed.rowcount

    # --- wsync: workspace sync ---------------------------------------------------------------
    async def put_workspace_blob(self, agent: str, sha256: str, content: bytes) -> bool:
        """Keep a blob once (an upload of one already held changes nothing)."""
        async with self._tx() as conn:
            cur = await conn.execute(
                "INSERT INTO workspace_blobs (agent, sha256, size, content) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (agent, sha256) DO NOTHING",
                (agent, sha256, len(content), content),
            )
            return cur.rowcount == 1

    async def workspace_blob(self, agent: str, sha256: str) -> bytes | None:
        """One blob's bytes."""
        async with self._conn() as conn:
            cur = await conn.execute(
                "SELECT content FROM workspace_blobs WHERE agent = %s AND sha256 = %s",
                (agent, sha256),
            )
            row = await cur.fetchone()
        return None if row is None else bytes(row["content"])

    async def commit_workspace(
        self, agent: str, fence: int | None, files: Sequence[WorkspaceFile]
    ) -> WorkspaceManifest:
        """A new version, fenced against the lease row held FOR SHARE: a takeover (which
        updates that row) waits for this push, and a push after it sees the new fence."""
        async with self._tx() as conn:
            row = await (
                await conn.execute("SELECT * FROM leases WHERE agent = %s FOR SHARE", (agent,))
            ).fetchone()
            refusal = push_refusal(agent, fence, None if row is None else _lease(row))
            if refusal is not None:
                raise refusal
            await conn.execute(
                "INSERT INTO workspace_heads (agent, version, fence, bytes, updated_at)"
                " VALUES (%s, 0, NULL, 0, clock_timestamp()) ON CONFLICT (agent) DO NOTHING",
                (agent,),
            )
            head = await (
                await conn.execute(
                    "SELECT * FROM workspace_heads WHERE agent = %s FOR UPDATE", (agent,)
                )
            ).fetchone()
            assert head is not None
            current = await self._workspace_files(conn, agent)
            if head["version"] > 0 and set(current) == set(files):
                return _manifest(agent, head, current)  # a retried push: nothing new
            held = await (
                await conn.execute(
                    "SELECT sha256 FROM workspace_blobs WHERE agent = %s AND sha256 = ANY(%s)",
                    (agent, list({f.sha256 for f in files})),
                )
            ).fetchall()
            problem = missing_blob(files, {r["sha256"] for r in held})
            if problem is not None:
                raise problem
            diff = change(current, files)
            await conn.execute(
                "DELETE FROM workspace_files WHERE agent = %s AND path = ANY(%s)",
                (agent, diff.removed),
            )
            async with conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO workspace_files (agent, path, sha256, size)"
                    " VALUES (%s, %s, %s, %s) ON CONFLICT (agent, path) DO UPDATE"
                    " SET sha256 = excluded.sha256, size = excluded.size",
                    [(agent, f.path, f.sha256, f.size) for f in diff.written],
                )
            # Blobs no file names: those the change left behind, and uploads of pushes whose
            # commit never came (older than a minute, so a push under way keeps its own).
            await conn.execute(
                "DELETE FROM workspace_blobs b WHERE b.agent = %s AND (b.sha256 = ANY(%s)"
                " OR b.created_at < clock_timestamp() - interval '1 minute')"
                " AND NOT EXISTS (SELECT 1 FROM workspace_files f WHERE f.agent = b.agent"
                " AND f.sha256 = b.sha256)",
                (agent, diff.unnamed),
            )
            new = await (
                await conn.execute(
                    "UPDATE workspace_heads SET version = version + 1, fence = %s, bytes = %s,"
                    " updated_at = clock_timestamp() WHERE agent = %s RETURNING *",
                    (fence, sum(f.size for f in files), agent),
                )
            ).fetchone()
            assert new is not None
        return _manifest(agent, new, sorted(files, key=lambda f: f.path))

    async def workspace_manifest(self, agent: str) -> WorkspaceManifest:
        """The latest version, read in one snapshot."""
        async with self._tx() as conn:
            head = await (
                await conn.execute("SELECT * FROM workspace_heads WHERE agent = %s", (agent,))
            ).fetchone()
            if head is None:
                return WorkspaceManifest(agent, 0)
            return _manifest(agent, head, await self._workspace_files(conn, agent))

    @staticmethod
    async def _workspace_files(conn: Conn, agent: str) -> list[WorkspaceFile]:
        found = await (
            await conn.execute(
                "SELECT path, sha256, size FROM workspace_files WHERE agent = %s ORDER BY path",
                (agent,),
            )
        ).fetchall()
        return [WorkspaceFile(r["path"], r["sha256"], r["size"]) for r in found]

    async def put_workspace_blobs(
        self, agent: str, blobs: Sequence[tuple[str, bytes]]
    ) -> list[bool]:
        """Every blob in one statement (``unnest`` of the hashes and the bytes); one already
        held changes nothing."""
        if not blobs:
            return []
        async with self._tx() as conn:
            added = await (
                await conn.execute(
                    "INSERT INTO workspace_blobs (agent, sha256, size, content)"
                    " SELECT %s, b.sha256, length(b.content), b.content"
                    " FROM unnest(%s::text[], %s::bytea[]) AS b(sha256, content)"
                    " ON CONFLICT (agent, sha256) DO NOTHING RETURNING sha256",
                    (agent, [sha for sha, _ in blobs], [content for _, content in blobs]),
                )
            ).fetchall()
        new = {r["sha256"] for r in added}
        out = []
        for sha, _ in blobs:
            out.append(sha in new)
            new.discard(sha)  # the same blob twice: new once
        return out

    async def workspace_blobs(self, agent: str, hashes: Sequence[str], max_bytes: int) -> BlobBatch:
        """The sizes first, then the bytes of the batch chosen; a blob swept between the two
        (a commit of the live instance) is answered as unknown."""
        async with self._tx() as conn:
            held = await (
                await conn.execute(
                    "SELECT sha256, size FROM workspace_blobs WHERE agent = %s"
                    " AND sha256 = ANY(%s)",
                    (agent, list(hashes)),
                )
            ).fetchall()
            take, left, unknown = fetch_plan(hashes, {r["sha256"]: r["size"] for r in held},
                                             max_bytes)  # fmt: skip
            if not take:
                return BlobBatch({}, left, unknown)
            rows = await (
                await conn.execute(
                    "SELECT sha256, content FROM workspace_blobs WHERE agent = %s"
                    " AND sha256 = ANY(%s)",
                    (agent, take),
                )
            ).fetchall()
        contents = {r["sha256"]: bytes(r["content"]) for r in rows}
        gone = [h for h in take if h not in contents]
        if gone:
            return BlobBatch({}, [], gone)
        return BlobBatch({h: contents[h] for h in take}, left, [])

    # --- scale: batched lease renewal ---------------------------------------------------------
    async def renew_leases(
        self, holder: str, leases: Sequence[tuple[str, int]], ttl: timedelta
    ) -> list[Lease | LeaseLost]:
        """Each lease renewed as :meth:`renew_lease` would, in one transaction; rows locked in
        agent order (two supervisors renewing overlapping batches cannot deadlock)."""
        done: dict[str, Lease | LeaseLost] = {}
        async with self._tx() as conn:
            for agent, fence in sorted(leases):
                try:
                    done[agent] = await _renew_row(conn, agent, holder, fence, ttl)
                except LeaseLost as e:
                    done[agent] = e
        return [done[agent] for agent, _ in leases]


def _manifest(agent: str, head: DictRow, files: Sequence[WorkspaceFile]) -> WorkspaceManifest:
    return WorkspaceManifest(
        agent, head["version"], tuple(files), head["fence"], _utc(head["updated_at"])
    )


async def _renew_row(conn: Conn, agent: str, holder: str, fence: int, ttl: timedelta) -> Lease:
    """Extend one live lease of ``holder`` inside the caller's transaction; ``LeaseLost``
    otherwise (the single and the batched renewal share this, so their fencing is one)."""
    row = await (await conn.execute(Q["lease_lock"], (agent,))).fetchone()
    if row is None or not ours(_lease(row), holder, fence, _utc(row["now"])):
        raise lost_error(agent, None if row is None else _lease(row), holder, fence)
    out = await (
        await conn.execute(
            Q["lease_write"], (holder, row["host"], fence, ttl.total_seconds(), False, agent)
        )
    ).fetchone()
    assert out is not None
    return _lease(out)


__all__ = ["PostgresStore"]


AUDIT_TRIGGERS = frozenset({"audit_no_update", "audit_no_truncate"})
TSQUERY_WORD = re.compile(r"[^\W_]+")
"""A word of a knowledge query (letters and digits: nothing ``to_tsquery`` reads as syntax)."""
MAX_QUERY_WORDS = 64
"""The triggers that make the audit table append-only (verification checks they are enabled)."""


def _need_key(key: bytes | None) -> bytes:
    if key is None:
        msg = (
            "this store has no audit key, so it cannot write or verify the keyed audit chain: "
            "build it with audit_key=mcos.domain.audit.audit_key(token key)"
        )
        raise StoreError(msg)
    return key


def last_operator_refusal(token_id: int) -> LastOperatorToken:
    """The 409 for revoking the only active operator token (humans would be locked out)."""
    return LastOperatorToken(
        f"token {token_id} is the last active operator token: revoking it would lock every human "
        "out; create another operator token first (mcos token create --operator NAME)",
        token_id=token_id,
    )


def _stored_trace(row: DictRow) -> StoredTrace:
    body = row["body"]
    if not isinstance(body, dict):  # too deep to decode (see decode_stored); never posted so
        body = {}
    return StoredTrace(
        id=row["id"],
        agent=row["agent"],
        kind=row["kind"],
        outcome=row["outcome"],
        started_at=_utc(row["started_at"]),
        cost_micros=int(row["cost_micros"]),
        cost_source=row["cost_source"],
        body=body,
        woke=tuple(body.get("woke_messages", ())),
        sent=tuple(body.get("sent_messages", ())),
        received_at=_utc(row["received_at"]),
    )
