"""The embedded store: SQLite in WAL mode, zero set-up.

One connection lives on one dedicated thread, so every statement is serialised without lock
contention and the event loop never blocks on disk. Mission Control's clock is this process's
clock (there is no other server to disagree with). Wake-ups reach waiters of this process
directly; consumers of another process sharing the file notice sends on their next poll.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

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
from mcos.domain.budget import Committed, Limits
from mcos.domain.budget import grant as grant_budget
from mcos.domain.incidents import Incident, IncidentEvent, IncidentState
from mcos.domain.leases import FenceGuard, Grant, Lease, grant, held_error, lost_error, ours
from mcos.domain.message_search import MessageHit, MessageSearch, MessageState
from mcos.domain.messages import (
    EXPIRED,
    Delivery,
    DeliveryPolicy,
    Message,
    NewMessage,
    RecipientKind,
    SendResult,
    check_expiries,
    dead_reason,
    defer_until,
    expired,
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
    in_batch,
)
from mcos.ops.filemodes import private_database
from mcos.store import rows
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
Q = queries("sqlite")
_SYNCHRONOUS = {"off", "normal", "full", "extra"}


def _us(dt: datetime) -> int:
    """A datetime as integer microseconds since the epoch."""
    return int(dt.timestamp() * 1_000_000) if dt.tzinfo else _naive(dt)


def _naive(dt: datetime) -> int:
    msg = f"naive datetime {dt!r}: mcos stores only timezone-aware times"
    raise ValueError(msg)


def _dt(us: int) -> datetime:
    """Integer microseconds since the epoch as an aware UTC datetime."""
    return datetime.fromtimestamp(us // 1_000_000, UTC) + timedelta(microseconds=us % 1_000_000)


def _opt_dt(us: int | None) -> datetime | None:
    return None if us is None else _dt(us)


_simulated: Callable[[], datetime] | None = None


def _now_us() -> int:
    if _simulated is not None:
        return _us(_simulated())
    return time.time_ns() // 1000


@contextmanager
def simulated_clock(now: Callable[[], datetime]) -> Iterator[None]:
    """Run every embedded store of this process on ``now`` instead of the machine's clock.

    For simulations of long stretches (an outage of hours, a budget day) in virtual time: the
    server's clock must then be the runtime's, or a not-before hours ahead would be real hours.
    """
    global _simulated  # noqa: PLW0603 (one process-wide clock, as the real one is)
    before, _simulated = _simulated, now
    try:
        yield
    finally:
        _simulated = before


def _committed(row: Any) -> Committed:
    return Committed(int(row["usd"]), int(row["tokens"]))


def _held(row: Any) -> Held:
    return Held(
        int(row["id"]), row["model"], int(row["prompt_tokens"]), int(row["max_output"]),
        int(row["usd_micros"]),
    )  # fmt: skip


def _incident(r: sqlite3.Row) -> Incident:
    return Incident(
        id=r["id"], severity=r["severity"], reported_as=r["reported_as"],
        state=IncidentState(r["state"]), summary=r["summary"], evidence=r["evidence"],
        reporter=r["reporter"], fingerprint=r["fingerprint"], reports=r["reports"],
        created_at=_dt(r["created_at"]), updated_at=_dt(r["updated_at"]),
    )  # fmt: skip


def _incident_event(r: sqlite3.Row) -> IncidentEvent:
    return IncidentEvent(
        r["incident_id"], _dt(r["at"]), r["actor"], r["action"], r["severity"], r["reason"]
    )


def _approval(r: sqlite3.Row) -> Approval:
    return Approval(
        id=r["id"], action=r["action"], payload=rows.json_column(r["payload"]),
        requester=r["requester"], rationale=r["rationale"], quorum=r["quorum"],
        state=ApprovalState(r["state"]), executor=r["executor"], constraints=r["constraints"],
        report_every=r["report_every"],
        created_at=_dt(r["created_at"]), expires_at=_dt(r["expires_at"]),
        decided_at=_opt_dt(r["decided_at"]), decided_by=r["decided_by"], reason=r["reason"],
        directive_id=r["directive_id"], acknowledged_at=_opt_dt(r["acknowledged_at"]),
    )  # fmt: skip


def _page(r: sqlite3.Row) -> Page:
    return Page(
        r["id"], r["human"], r["key"], PageKind(r["kind"]), r["subject"], r["body"], r["state"],
        r["channel"], r["ref"], r["attempts"], r["error"], _dt(r["created_at"]),
        None if r["sent_at"] is None else _dt(r["sent_at"]),
        None if r["acked_at"] is None else _dt(r["acked_at"]), r["acked_by"],
    )  # fmt: skip


def _vote(r: sqlite3.Row) -> Vote:
    return Vote(r["approval_id"], r["voter"], r["vote"], r["rationale"], _dt(r["at"]))


def _lease(r: sqlite3.Row) -> Lease:
    return Lease(
        agent=r["agent"],
        holder=r["holder"],
        host=r["host"],
        fence=int(r["fence"]),
        expires_at=_dt(r["expires_at"]),
        acquired_at=_dt(r["acquired_at"]),
        renewed_at=_dt(r["renewed_at"]),
    )


def _agent_state(r: sqlite3.Row) -> AgentState:
    return AgentState(
        name=r["name"],
        state=r["state"],
        detail=r["detail"],
        until=_opt_dt(r["until"]),
        info=rows.json_column(r["info"]),
        updated_at=_dt(r["updated_at"]),
    )


def _delivery_from_row(row: sqlite3.Row) -> Delivery:
    msg = rows.message(row, _dt(row["created_at"]))
    visible = _dt(row["d_visible_at"])
    deadline = visible if row["state"] == "claimed" else None
    return rows.delivery(row, msg, visible, deadline, _opt_dt(row["d_expires_at"]))


def _check_guard(conn: sqlite3.Connection, guard: FenceGuard | None) -> None:
    """Refuse a guarded write whose fence the agent's lease has moved past (inside the write's
    own transaction: SQLite serialises writers, so no takeover falls between)."""
    if guard is None:
        return
    row = conn.execute(Q["lease_get"], (guard.agent,)).fetchone()
    current = None if row is None else _lease(row)
    if current is not None and guard.refuses(current):
        raise guard.refusal(current)


class SqliteStore:
    """Mission Control's store on one SQLite file."""

    dialect = "sqlite"

    def __init__(
        self,
        path: str | Path,
        policy: DeliveryPolicy | None = None,
        *,
        synchronous: str = "full",
        audit_key: bytes | None = None,
    ) -> None:
        self._audit_key = audit_key
        if synchronous not in _SYNCHRONOUS:
            msg = f"synchronous must be one of {sorted(_SYNCHRONOUS)}, not {synchronous!r}"
            raise ValueError(msg)
        self.path = Path(path)
        self.policy = policy or DeliveryPolicy()
        self._synchronous = synchronous
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mcos-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._waiters = Waiters()
        self.dead_lettered = 0
        """Deliveries this process dead-lettered (a cheap hint that someone must be told)."""

    # --- plumbing ----------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if str(self.path) != ":memory:":
            private_database(self.path)  # 0600, and its folder 0700 when created here
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA busy_timeout = 10000")
        return conn

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` with the connection on the store's thread."""

        def call() -> T:
            if self._conn is None:
                self._conn = self._connect()
            try:
                return fn(self._conn)
            except sqlite3.OperationalError as exc:
                raise StoreError(f"SQLite {self.path}: {exc}") from exc

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    @staticmethod
    @contextmanager
    def _tx(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        """A write transaction, taken up front so no two writers deadlock upgrading locks."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # --- lifecycle -----------------------------------------------------------------------------
    async def open(self) -> None:
        """Connect; refuses a schema older than this code expects."""
        version = await self.schema_version()
        wanted = latest(self.dialect)
        if version < wanted:
            msg = (
                f"the database {self.path} is at schema version {version}, this mcos needs "
                f"{wanted}: run `mcos db upgrade`"
            )
            raise SchemaOutOfDate(msg, version=version, wanted=wanted)
        if version > wanted:
            msg = (
                f"the database {self.path} is at schema version {version}, newer than this "
                f"mcos ({wanted}): upgrade mcos"
            )
            raise SchemaOutOfDate(msg, version=version, wanted=wanted)

    async def close(self) -> None:
        """Close the connection and wake every waiter."""
        self._waiters.wake_all()

        def shut(conn: sqlite3.Connection) -> None:
            conn.close()
            self._conn = None

        if self._conn is not None:
            await self._run(shut)
        self._executor.shutdown(wait=True)

    async def upgrade(self, target: int | None = None) -> list[int]:
        """Apply pending migrations, each in its own transaction."""

        def apply(conn: sqlite3.Connection) -> list[int]:
            conn.execute(Q["schema_migrations_create"])
            current = conn.execute(Q["schema_version"]).fetchone()["version"]
            applied: list[int] = []
            for m in migrations(self.dialect):
                if m.version <= current or (target is not None and m.version > target):
                    continue
                # executescript commits on its own, so the version row goes in the same script.
                # Safe to format: an int and a file name matched by [a-z0-9_]+.
                record = (
                    f"INSERT INTO schema_migrations VALUES ({m.version}, '{m.name}', {_now_us()});"  # noqa: S608
                )
                script = f"BEGIN IMMEDIATE;\n{m.sql}\n{record}\nCOMMIT;"
                conn.executescript(script)
                applied.append(m.version)
            return applied

        return await self._run(apply)

    async def schema_version(self) -> int:
        """The version the database is at (0 for an empty one)."""

        def read(conn: sqlite3.Connection) -> int:
            conn.execute(Q["schema_migrations_create"])
            return int(conn.execute(Q["schema_version"]).fetchone()["version"])

        return await self._run(read)

    async def now(self) -> datetime:
        """This process's clock: with SQLite, Mission Control is the only clock."""
        return _dt(_now_us())

    # --- directory -----------------------------------------------------------------------------
    async def sync_directory(self, directory: Directory, audit: AuditEvent | None = None) -> None:
        """Make recipients and subscriptions match the fleet file; removed names go inactive."""

        def sync(conn: sqlite3.Connection) -> None:
            now = _now_us()
            with self._tx(conn):
                conn.execute(Q["recipients_deactivate_all"])
                for a in directory.agents:
                    conn.execute(
                        Q["recipient_upsert"],
                        (a.name, "agent", a.role, a.host, a.reports_to, json.dumps(a.info), now),
                    )
                for h in directory.humans:
                    conn.execute(Q["recipient_upsert"], (h, "human", "", "", None, "{}", now))
                for t in directory.topics:
                    conn.execute(Q["recipient_upsert"], (t, "topic", "", "", None, "{}", now))
                conn.execute(Q["subscriptions_clear"])
                for topic, subscribers in directory.topics.items():
                    for s in subscribers:
                        conn.execute(Q["subscription_insert"], (topic, s))
                if audit is not None:
                    self._append_audit(conn, audit, now)

        await self._run(sync)

    async def list_agents(self, names: Sequence[str] | None = None) -> list[AgentEntry]:
        """Every active agent (of ``names`` when given), by name."""
        found = (
            (Q["agents_list"], ())
            if names is None
            else (Q["agents_named"], (json.dumps(list(names)),))
        )

        def read(conn: sqlite3.Connection) -> list[AgentEntry]:
            return [
                AgentEntry(
                    name=r["name"],
                    role=r["role"],
                    host=r["host"],
                    reports_to=r["reports_to"],
                    last_seen_at=_opt_dt(r["last_seen_at"]),
                    info=rows.json_column(r["info"]),
                )
                for r in conn.execute(*found)
            ]

        return await self._run(read)

    async def recipient_kind(self, name: str) -> RecipientKind | None:
        """What ``name`` is, or None."""

        def read(conn: sqlite3.Connection) -> RecipientKind | None:
            row = conn.execute(Q["recipient_kind"], (name,)).fetchone()
            return None if row is None else RecipientKind(row["kind"])

        return await self._run(read)

    async def subscriptions(self, name: str) -> list[str]:
        """Topics ``name`` subscribes to."""
        return await self._run(
            lambda conn: [r["topic"] for r in conn.execute(Q["subscriptions_of"], (name,))]
        )

    async def touch_agent(self, name: str) -> None:
        """Record that ``name`` was seen now."""
        await self._run(lambda conn: conn.execute(Q["agent_touch"], (_now_us(), name)))

    # --- messages ------------------------------------------------------------------------------
    async def send(self, message: NewMessage, *, guard: FenceGuard | None = None) -> SendResult:
        """Store a message and its deliveries, then wake the recipients' waiters."""
        return (await self.send_many([message], guard=guard))[0]

    async def send_many(
        self, messages: Sequence[NewMessage], *, guard: FenceGuard | None = None
    ) -> list[SendResult]:
        """Store several messages atomically, in order; see the protocol."""
        digests = [m.content_hash() for m in messages]
        if any(m.expires_at is not None for m in messages):
            check_expiries(messages, await self.now())

        def write(conn: sqlite3.Connection) -> tuple[list[SendResult], set[str]]:
            now = _now_us()
            results: list[SendResult] = []
            woken: set[str] = set()
            with self._tx(conn):
                _check_guard(conn, guard)
                for i, (message, digest) in enumerate(zip(messages, digests, strict=True)):
                    try:
                        result, inboxes = self._send_one(conn, message, digest, now)
                    except McosError as e:
                        if len(messages) == 1:
                            raise
                        raise in_batch(e, i) from e
                    results.append(result)
                    woken.update(inboxes)
            return results, woken

        results, woken = await self._run(write)
        self._waiters.wake(sorted(woken))
        return results

    def _send_one(
        self, conn: sqlite3.Connection, message: NewMessage, digest: str, now: int
    ) -> tuple[SendResult, list[str]]:
        if message.idempotency_key is not None:
            found = conn.execute(
                Q["message_by_idempotency"], (message.sender, message.idempotency_key)
            ).fetchone()
            if found is not None:
                return self._repeat(conn, found, digest), []
        kind_row = conn.execute(Q["recipient_kind"], (message.recipient,)).fetchone()
        if kind_row is None:
            raise InvalidRequest(f"unknown recipient {message.recipient!r}", field="recipient")
        kind = RecipientKind(kind_row["kind"])
        thread_id: int | None = None
        if message.reply_to is not None:
            parent = conn.execute(Q["message_thread_of"], (message.reply_to,)).fetchone()
            if parent is None:
                raise InvalidRequest(f"reply_to: no message {message.reply_to}", field="reply_to")
            thread_id = parent["thread_id"]
        row = conn.execute(
            Q["message_insert"],
            (
                message.sender,
                message.recipient,
                kind,
                message.kind,
                message.priority.rank,
                message.subject,
                message.body,
                thread_id,
                message.reply_to,
                message.idempotency_key,
                digest,
                json.dumps(message.meta),
                now,
            ),
        ).fetchone()
        if thread_id is None:
            row = conn.execute(Q["message_set_own_thread"], (row["id"],)).fetchone()
        inboxes = (
            [r["subscriber"] for r in conn.execute(Q["topic_subscribers"], (message.recipient,))]
            if kind is RecipientKind.TOPIC
            else [message.recipient]
        )
        expires = None if message.expires_at is None else _us(message.expires_at)
        if message.ttl is not None:
            expires = now + int(message.ttl.total_seconds() * 1_000_000)
        for inbox in inboxes:
            conn.execute(
                Q["delivery_insert"],
                (row["id"], inbox, message.priority.rank, now, now, now, expires),
            )
        stored = rows.message(row, _dt(row["created_at"]))
        return SendResult(stored, len(inboxes), created=True), inboxes

    @staticmethod
    def _repeat(conn: sqlite3.Connection, found: sqlite3.Row, digest: str) -> SendResult:
        if found["content_hash"] != digest:
            raise IdempotencyConflict(
                f"idempotency key {found['idempotency_key']!r} was already used by "
                f"{found['sender']} for different content (message {found['id']})",
                message_id=found["id"],
            )
        n = conn.execute(Q["message_delivery_count"], (found["id"], found["id"])).fetchone()["n"]
        return SendResult(rows.message(found, _dt(found["created_at"])), n, created=False)

    async def get_message(self, message_id: int) -> Message:
        """One message by id."""

        def read(conn: sqlite3.Connection) -> Message:
            row = conn.execute(Q["message_by_id"], (message_id,)).fetchone()
            if row is None:
                raise NotFound(f"no message {message_id}", message_id=message_id)
            return rows.message(row, _dt(row["created_at"]))

        return await self._run(read)

    async def thread(self, thread_id: int) -> list[Message]:
        """Every message of a thread, oldest first."""

        def read(conn: sqlite3.Connection) -> list[Message]:
            return [
                rows.message(r, _dt(r["created_at"]))
                for r in conn.execute(Q["thread_messages"], (thread_id,))
            ]

        return await self._run(read)

    async def claim(
        self, inbox: str, *, limit: int = 1, visibility: timedelta | None = None
    ) -> list[Delivery]:
        """Claim up to ``limit`` deliveries; lapsed claims out of attempts are dead-lettered."""
        hold = int((visibility or self.policy.visibility).total_seconds() * 1_000_000)

        def take(conn: sqlite3.Connection) -> list[Delivery]:
            now = _now_us()
            claimed: list[int] = []
            receipts: dict[int, str] = {}
            with self._tx(conn):
                while len(claimed) < limit:
                    wanted = limit - len(claimed)
                    candidates = conn.execute(
                        Q["claim_candidates"], (inbox, now, wanted)
                    ).fetchall()
                    if not candidates:
                        break
                    for c in candidates:
                        if expired(_opt_dt(c["expires_at"]), _dt(now)):
                            self._dead_letter(conn, c["id"], inbox, c["attempts"], now, EXPIRED)
                            continue
                        if c["state"] == "claimed" and self.policy.exhausted(c["attempts"]):
                            self._dead_letter(conn, c["id"], inbox, c["attempts"], now)
                            continue
                        receipt = secrets.token_urlsafe(16)
                        conn.execute(Q["delivery_claim"], (now + hold, receipt, now, c["id"]))
                        claimed.append(c["id"])
                        receipts[c["id"]] = receipt
                return [
                    _delivery_from_row(conn.execute(Q["delivery_with_message"], (i,)).fetchone())
                    for i in claimed
                ]

        return await self._run(take)

    def _dead_letter(
        self,
        conn: sqlite3.Connection,
        delivery_id: int,
        inbox: str,
        attempts: int,
        now: int,
        reason: str | None = None,
    ) -> None:
        reason = reason or f"not acknowledged after {attempts} attempts"
        self.dead_lettered += 1
        conn.execute(Q["delivery_dead_letter"], (reason, now, delivery_id))
        self._append_audit(
            conn,
            AuditEvent(
                actor="system",
                action="delivery.dead_letter",
                targets={"delivery": delivery_id, "inbox": inbox},
                detail={"attempts": attempts, "reason": reason},
            ),
            now,
        )

    def _held(
        self, conn: sqlite3.Connection, inbox: str, delivery_id: int, receipt: str
    ) -> sqlite3.Row | None:
        """The delivery row if ``receipt`` holds it; None if that claim was already acked."""
        row: sqlite3.Row | None = conn.execute(
            Q["delivery_for_update"], (delivery_id, inbox)
        ).fetchone()
        if row is None:
            done = conn.execute(Q["delivery_history_receipt"], (delivery_id, inbox)).fetchone()
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

    async def ack(
        self, inbox: str, delivery_id: int, receipt: str, *, guard: FenceGuard | None = None
    ) -> None:
        """Finish a delivery: it moves to the history table. Acking twice is harmless."""
        await self.ack_many(inbox, [(delivery_id, receipt)], guard=guard)

    async def ack_many(
        self, inbox: str, items: Sequence[tuple[int, str]], *, guard: FenceGuard | None = None
    ) -> None:
        """Ack several deliveries in one transaction; any stale receipt refuses them all."""

        def write(conn: sqlite3.Connection) -> None:
            now = _now_us()
            with self._tx(conn):
                _check_guard(conn, guard)
                for delivery_id, receipt in items:
                    row = self._held(conn, inbox, delivery_id, receipt)
                    if row is None:
                        continue
                    conn.execute(Q["delivery_delete"], (delivery_id,))
                    conn.execute(
                        Q["delivery_history_insert"],
                        (
                            delivery_id,
                            row["message_id"],
                            inbox,
                            row["attempts"],
                            receipt,
                            row["created_at"],
                            now,
                        ),
                    )

        await self._run(write)

    async def nack(
        self,
        inbox: str,
        delivery_id: int,
        receipt: str,
        *,
        error: str = "",
        delay: timedelta | None = None,
    ) -> Delivery:
        """Give a delivery back for a retry after a backoff, or dead-letter it when exhausted."""

        def write(conn: sqlite3.Connection) -> Delivery:
            now = _now_us()
            with self._tx(conn):
                row = self._held(conn, inbox, delivery_id, receipt)
                if row is None:
                    raise StaleReceipt(f"delivery {delivery_id} was already acknowledged")
                attempts = row["attempts"]
                if expired(_opt_dt(row["expires_at"]), _dt(now)):
                    self._dead_letter(conn, delivery_id, inbox, attempts, now, EXPIRED)
                elif self.policy.exhausted(attempts):
                    self._dead_letter(conn, delivery_id, inbox, attempts, now)
                else:
                    wait = delay if delay is not None else self.policy.retry_delay(attempts)
                    visible = now + int(wait.total_seconds() * 1_000_000)
                    conn.execute(Q["delivery_release"], (visible, error or None, now, delivery_id))
                return _delivery_from_row(
                    conn.execute(Q["delivery_with_message"], (delivery_id,)).fetchone()
                )

        result = await self._run(write)
        if result.state == "queued" and result.visible_at <= await self.now():
            self._waiters.wake([inbox])
        return result

    async def defer(
        self,
        inbox: str,
        items: Sequence[tuple[int, str]],
        *,
        not_before: datetime,
        reason: str,
    ) -> list[Delivery]:
        """Hand claims back unused (see the protocol): all of ``items`` or none."""

        def write(conn: sqlite3.Connection) -> list[Delivery]:
            now = _now_us()
            try:
                visible = _us(defer_until(_dt(now), not_before))
            except ValueError as e:
                raise InvalidRequest(str(e), field="not_before") from e
            done: list[Delivery] = []
            with self._tx(conn):
                for delivery_id, receipt in items:
                    if self._held(conn, inbox, delivery_id, receipt) is None:
                        raise StaleReceipt(f"delivery {delivery_id} was already acknowledged")
                    conn.execute(Q["delivery_defer"], (visible, reason or None, now, delivery_id))
                    done.append(
                        _delivery_from_row(
                            conn.execute(Q["delivery_with_message"], (delivery_id,)).fetchone()
                        )
                    )
            return done

        result = await self._run(write)
        if result and result[0].visible_at <= await self.now():
            self._waiters.wake([inbox])
        return result

    async def sweep_dead_letters(self, limit: int = 500) -> int:
        """Dead-letter lapsed claims out of attempts and expired deliveries of every inbox."""

        def write(conn: sqlite3.Connection) -> int:
            now = _now_us()
            with self._tx(conn):
                found = conn.execute(
                    Q["sweep_candidates"],
                    {"now": now, "max_attempts": self.policy.max_attempts, "limit": limit},
                ).fetchall()
                for c in found:
                    reason = dead_reason(c["attempts"], _opt_dt(c["expires_at"]), _dt(now))
                    self._dead_letter(conn, c["id"], c["inbox"], c["attempts"], now, reason)
            return len(found)

        return await self._run(write)

    async def unnotified_dead_letters(self, limit: int = 500) -> list[Delivery]:
        """Dead letters nobody was told of yet, oldest first."""

        def read(conn: sqlite3.Connection) -> list[Delivery]:
            return [_delivery_from_row(r) for r in conn.execute(Q["dead_unnotified"], (limit,))]

        return await self._run(read)

    async def mark_dead_letters_notified(self, ids: Sequence[int]) -> list[int]:
        """Record that these dead letters were told; returns those this call marked."""

        def write(conn: sqlite3.Connection) -> list[int]:
            now = _now_us()
            with self._tx(conn):
                return [i for i in ids if conn.execute(Q["dead_mark_notified"], (now, i)).rowcount]

        return await self._run(write)

    async def wait(self, inbox: str, timeout: float) -> bool:
        """Wait for a send to ``inbox`` in this process."""
        return await self._waiters.wait(inbox, timeout)

    def armed(self, inbox: str) -> AbstractContextManager[asyncio.Future[None]]:
        """A future resolved by the next send to ``inbox`` in this process."""
        return self._waiters.armed(inbox)

    async def dead_letters(self, inbox: str | None = None, limit: int = 100) -> list[Delivery]:
        """Dead-lettered deliveries, oldest first."""

        def read(conn: sqlite3.Connection) -> list[Delivery]:
            return [
                _delivery_from_row(r)
                for r in conn.execute(Q["dead_letters"], (inbox, inbox, limit))
            ]

        return await self._run(read)

    async def requeue(self, delivery_id: int, audit: AuditEvent | None = None) -> Delivery:
        """Put a dead-lettered delivery back with a fresh attempt count."""

        def write(conn: sqlite3.Connection) -> Delivery:
            now = _now_us()
            with self._tx(conn):
                changed = conn.execute(Q["delivery_requeue"], (now, now, delivery_id)).rowcount
                if changed != 1:
                    raise NotFound(f"no dead-lettered delivery {delivery_id}")
                if audit is not None:
                    self._append_audit(conn, audit, now)
                return _delivery_from_row(
                    conn.execute(Q["delivery_with_message"], (delivery_id,)).fetchone()
                )

        result = await self._run(write)
        self._waiters.wake([result.inbox])
        return result

    async def inbox_depths(self, inboxes: Sequence[str] | None = None) -> list[InboxDepth]:
        """Queue depth per inbox."""

        def read(conn: sqlite3.Connection) -> list[InboxDepth]:
            found = {
                r["inbox"]: InboxDepth(r["inbox"], r["queued"], r["claimed"], r["dead"])
                for r in conn.execute(Q["inbox_depths"])
            }
            if inboxes is None:
                return list(found.values())
            return [found.get(i, InboxDepth(i, 0, 0, 0)) for i in inboxes]

        return await self._run(read)

    # --- model use and budgets -----------------------------------------------------------
    async def reserve_budget(self, ask: BudgetAsk, limits: Limits, fleet: Limits) -> Reservation:
        """Hold a call's worst case against today's caps, or raise ``OverBudget``."""

        def reserve(conn: sqlite3.Connection) -> Reservation:
            now = _now_us()
            day = _dt(now).date().isoformat()
            with self._tx(conn):
                mine = conn.execute(Q["committed_agent"], {"day": day, "agent": ask.agent})
                committed = _committed(mine.fetchone())
                all_ = conn.execute(Q["committed_fleet"], {"day": day}).fetchone()
                granted = grant_budget(
                    ask.agent, ask.worst, committed, _committed(all_), limits, fleet
                )
                row = conn.execute(
                    Q["reservation_insert"],
                    (
                        ask.agent, day, granted.usd_micros, granted.tokens, ask.purpose, now,
                        ask.model, ask.worst.prompt_tokens, granted.max_output,
                    ),
                ).fetchone()  # fmt: skip
            after = Committed(
                committed.usd_micros + granted.usd_micros, committed.tokens + granted.tokens
            )
            return Reservation(
                row["id"], ask.agent, day, granted.usd_micros, granted.tokens, granted.verdict,
                after, granted.max_output,
            )  # fmt: skip

        return await self._run(reserve)

    async def settle(self, reservation_id: int | None, call: ModelCall) -> Held | None:
        """Record a call and release its reservation."""

        def write(conn: sqlite3.Connection) -> Held | None:
            now = _now_us()
            day = _dt(now).date().isoformat()
            held = None
            with self._tx(conn):
                if reservation_id is not None:
                    row = conn.execute(
                        Q["reservation_settle"], (now, reservation_id, call.agent)
                    ).fetchone()
                    if row is None:
                        raise Conflict(
                            f"reservation {reservation_id} is not held by {call.agent}",
                            reservation=reservation_id,
                        )
                    held = _held(row)
                u = call.usage
                conn.execute(
                    Q["model_call_insert"],
                    (
                        call.agent, now, day, call.provider, call.model, call.purpose,
                        u.input, u.output, u.cache_read, u.cache_write, call.cost_micros,
                        reservation_id,
                    ),
                )  # fmt: skip
            return held

        return await self._run(write)

    async def usage(self, since: str, agent: str | None = None) -> list[UsageRow]:
        """Model use per agent per UTC day from ``since`` on."""

        def read(conn: sqlite3.Connection) -> list[UsageRow]:
            found = conn.execute(Q["usage_since"], {"since": since, "agent": agent}).fetchall()
            return [usage_row(r) for r in found]

        return await self._run(read)

    async def set_agent_state(
        self,
        name: str,
        state: str,
        detail: str = "",
        until: datetime | None = None,
        info: dict[str, Any] | None = None,
    ) -> AgentState:
        """Record the state an agent's runtime reports."""

        def write(conn: sqlite3.Connection) -> AgentState:
            with self._tx(conn):
                row = conn.execute(
                    Q["agent_state_upsert"],
                    (
                        name, state, detail, None if until is None else _us(until),
                        json.dumps(info or {}), _now_us(),
                    ),
                ).fetchone()  # fmt: skip
            return _agent_state(row)

        return await self._run(write)

    async def agent_states(self, names: Sequence[str] | None = None) -> list[AgentState]:
        """Every agent's last reported state (of ``names`` when given)."""
        found = (
            (Q["agent_states_all"], ())
            if names is None
            else (Q["agent_states_named"], (json.dumps(list(names)),))
        )
        return await self._run(lambda conn: [_agent_state(r) for r in conn.execute(*found)])

    # --- incidents -----------------------------------------------------------------------------
    async def create_incident(self, new: NewIncident) -> Incident:
        """Store a new incident with its opening events."""

        def write(conn: sqlite3.Connection) -> Incident:
            with self._tx(conn):
                now = _now_us()
                row = conn.execute(
                    Q["incident_insert"],
                    {
                        "severity": new.severity, "state": new.state, "summary": new.summary,
                        "evidence": new.evidence, "reporter": new.reporter,
                        "fingerprint": new.fingerprint, "now": now,
                    },
                ).fetchone()  # fmt: skip
                for actor, action, severity, reason in new.events:
                    conn.execute(
                        Q["incident_event_insert"],
                        {
                            "incident_id": row["id"], "now": now, "actor": actor,
                            "action": action, "severity": severity, "reason": reason,
                        },
                    )  # fmt: skip
            return _incident(row)

        return await self._run(write)

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
        """Add to the timeline; one confirmer counts once."""

        def write(conn: sqlite3.Connection) -> None:
            with self._tx(conn):
                if (
                    action == "confirm"
                    and conn.execute(
                        Q["incident_vote_exists"], (incident_id, actor, severity)
                    ).fetchone()
                ):
                    raise Conflict(
                        f"{actor} already confirmed incident {incident_id} at {severity} "
                        "(one confirmer counts once)",
                        incident=incident_id,
                    )
                conn.execute(
                    Q["incident_event_insert"],
                    {
                        "incident_id": incident_id, "now": _now_us(), "actor": actor,
                        "action": action, "severity": severity, "reason": reason,
                    },
                )  # fmt: skip

        await self._run(write)

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

        def write(conn: sqlite3.Connection) -> Incident:
            with self._tx(conn):
                now = _now_us()
                row = conn.execute(
                    Q["incident_transition"],
                    {
                        "state": state, "severity": severity, "more": more_reports,
                        "now": now, "id": incident_id, "expected": expected,
                    },
                ).fetchone()  # fmt: skip
                if row is None:
                    raise Conflict(
                        f"incident {incident_id} is no longer {expected}", incident=incident_id
                    )
                actor, action, reason = event
                conn.execute(
                    Q["incident_event_insert"],
                    {
                        "incident_id": incident_id, "now": now, "actor": actor,
                        "action": action, "severity": severity, "reason": reason,
                    },
                )  # fmt: skip
            return _incident(row)

        return await self._run(write)

    async def reports_since(self, actor: str, seconds: float) -> int:
        """Incident reports ``actor`` made in the last ``seconds``."""

        def read(conn: sqlite3.Connection) -> int:
            since = _now_us() - int(seconds * 1_000_000)
            return int(conn.execute(Q["reports_since"], (actor, since)).fetchone()["n"])

        return await self._run(read)

    # --- approvals -----------------------------------------------------------------------------
    async def create_approval(self, new: NewApproval) -> Approval:
        """A pending request; one pending request per action and payload."""

        def write(conn: sqlite3.Connection) -> Approval:
            with self._tx(conn):
                open_ = conn.execute(
                    Q["approval_pending_for"], (new.action, new.payload_hash)
                ).fetchone()
                if open_ is not None:
                    raise duplicate_request(_approval(open_))
                now = _now_us()
                row = conn.execute(
                    Q["approval_insert"],
                    {
                        "action": new.action, "payload": json.dumps(new.payload, sort_keys=True),
                        "payload_hash": new.payload_hash, "requester": new.requester,
                        "rationale": new.rationale, "quorum": new.quorum,
                        "executor": new.executor, "constraints": new.constraints,
                        "report_every": new.report_every, "now": now,
                        "expires_at": now + int(new.expires_in.total_seconds() * 1_000_000),
                    },
                ).fetchone()  # fmt: skip
            return _approval(row)

        return await self._run(write)

    async def approval(self, approval_id: int) -> Approval | None:
        """One request."""
        return await self._one(Q["approval_get"], (approval_id,), _approval)

    async def approvals(self, state: str | None = None, limit: int = 100) -> list[Approval]:
        """Requests, newest first."""
        return await self._all(Q["approvals_list"], {"state": state, "limit": limit}, _approval)

    async def add_vote(self, approval_id: int, voter: str, vote: str, rationale: str) -> Vote:
        """Record a vote once."""

        def write(conn: sqlite3.Connection) -> Vote:
            with self._tx(conn):
                row = conn.execute(
                    Q["approval_vote_insert"], (approval_id, voter, vote, rationale, _now_us())
                ).fetchone()
            if row is None:
                raise Conflict(
                    f"{voter} already voted on request {approval_id} (a member votes once)",
                    approval=approval_id,
                )
            return _vote(row)

        return await self._run(write)

    async def votes(self, approval_id: int) -> list[Vote]:
        """The votes on a request."""
        return await self._all(Q["approval_votes_of"], (approval_id,), _vote)

    async def decide_approval(self, approval_id: int, state: str, by: str, reason: str) -> Approval:
        """Close a pending request (compare-and-set)."""

        def write(conn: sqlite3.Connection) -> Approval:
            with self._tx(conn):
                row = conn.execute(
                    Q["approval_decide"],
                    {"state": state, "now": _now_us(), "by": by, "reason": reason,
                     "id": approval_id},
                ).fetchone()  # fmt: skip
            if row is None:
                raise Conflict(f"request {approval_id} is no longer pending", approval=approval_id)
            return _approval(row)

        return await self._run(write)

    async def set_directive(self, approval_id: int, directive_id: int) -> Approval:
        """Link the directive message."""

        def write(conn: sqlite3.Connection) -> Approval:
            with self._tx(conn):
                row = conn.execute(
                    Q["approval_directive"], {"directive_id": directive_id, "id": approval_id}
                ).fetchone()
            return _approval(row)

        return await self._run(write)

    async def acknowledge_directive(self, approval_id: int) -> Approval | None:
        """Mark the directive acknowledged."""

        def write(conn: sqlite3.Connection) -> Approval | None:
            with self._tx(conn):
                row = conn.execute(
                    Q["approval_acknowledge"], {"now": _now_us(), "id": approval_id}
                ).fetchone()
            return None if row is None else _approval(row)

        return await self._run(write)

    async def withdraw_approval(self, approval_id: int, by: str, reason: str) -> Approval | None:
        """Veto an approved request whose directive is not yet acknowledged (compare-and-set)."""

        def write(conn: sqlite3.Connection) -> Approval | None:
            with self._tx(conn):
                row = conn.execute(
                    Q["approval_withdraw"],
                    {"now": _now_us(), "by": by, "reason": reason, "id": approval_id},
                ).fetchone()
            return None if row is None else _approval(row)

        return await self._run(write)

    async def approvals_due(self, limit: int = 100) -> list[Approval]:
        """Pending requests past their expiry, the longest overdue first."""
        return await self._all(Q["approvals_due"], {"now": _now_us(), "limit": limit}, _approval)

    async def incidents_unconfirmed(self, older_than: float, limit: int = 100) -> list[Incident]:
        """Reports still at their gate ``older_than`` seconds after they were made, oldest first."""
        before = _now_us() - int(older_than * 1_000_000)
        return await self._all(
            Q["incidents_unconfirmed"], {"before": before, "limit": limit}, _incident
        )

    async def mark_reminded(self, approval_id: int) -> bool:
        """Claim the one reminder of a pending request."""

        def write(conn: sqlite3.Connection) -> bool:
            with self._tx(conn):
                row = conn.execute(
                    Q["approval_remind"], {"now": _now_us(), "id": approval_id}
                ).fetchone()
            return row is not None

        return await self._run(write)

    async def _one(self, query: str, params: Any, convert: Callable[[Any], T]) -> T | None:
        def read(conn: sqlite3.Connection) -> T | None:
            row = conn.execute(query, params).fetchone()
            return None if row is None else convert(row)

        return await self._run(read)

    async def _all(self, query: str, params: Any, convert: Callable[[Any], T]) -> list[T]:
        def read(conn: sqlite3.Connection) -> list[T]:
            return [convert(r) for r in conn.execute(query, params).fetchall()]

        return await self._run(read)

    # --- pages -------------------------------------------------------------------------------
    async def open_page(
        self, human: str, key: str, kind: PageKind, subject: str, body: str
    ) -> Page | None:
        """A new page; None when this person was already paged about ``key``."""
        params = {"human": human, "key": key, "kind": kind.value, "subject": subject}
        return await self._write_one(
            Q["page_open"], params | {"body": body, "now": _now_us()}, _page
        )

    async def page_sent(
        self, page_id: int, *, state: str, channel: str, ref: str = "", error: str = ""
    ) -> Page:
        """Record a delivery attempt (an acknowledged page stays acknowledged)."""
        params = {"id": page_id, "state": state, "channel": channel, "ref": ref, "error": error}
        page = await self._write_one(Q["page_sent"], params | {"now": _now_us()}, _page)
        if page is None:
            raise NotFound(f"no page {page_id}", page=page_id)
        return page

    async def ack_page(self, page_id: int, by: str) -> Page | None:
        """Acknowledge once; None when already acknowledged or unknown."""
        return await self._write_one(
            Q["page_ack"], {"id": page_id, "by": by, "now": _now_us()}, _page
        )

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

    async def _write_one(self, query: str, params: Any, convert: Callable[[Any], T]) -> T | None:
        def write(conn: sqlite3.Connection) -> T | None:
            with self._tx(conn):
                row = conn.execute(query, params).fetchone()
            return None if row is None else convert(row)

        return await self._run(write)

    # --- leases --------------------------------------------------------------------------------
    async def acquire_lease(self, agent: str, holder: str, host: str, ttl: timedelta) -> Lease:
        """Grant or renew under one write lock, so two supervisors cannot both win."""

        def write(conn: sqlite3.Connection) -> Lease:
            with self._tx(conn):
                now = _now_us()
                conn.execute(Q["lease_seed"], (agent, now, now))
                row = conn.execute(Q["lease_lock"], (agent,)).fetchone()
                current = _lease(row) if row["fence"] > 0 else None
                decision = grant(current, holder, _dt(now))
                if decision == Grant.REFUSE:
                    assert current is not None
                    raise held_error(current)
                fence = row["fence"] + (1 if decision == Grant.NEW else 0)
                out = conn.execute(
                    Q["lease_write"],
                    {
                        "holder": holder, "host": host, "fence": fence, "agent": agent,
                        "expires_at": now + int(ttl.total_seconds() * 1_000_000),
                        "new": decision == Grant.NEW, "now": now,
                    },
                ).fetchone()  # fmt: skip
            return _lease(out)

        return await self._run(write)

    async def renew_lease(self, agent: str, holder: str, fence: int, ttl: timedelta) -> Lease:
        """Extend our live lease; anything else means it is lost."""

        def write(conn: sqlite3.Connection) -> Lease:
            with self._tx(conn):
                return _renew_row(conn, agent, holder, fence, ttl)

        return await self._run(write)

    async def release_lease(self, agent: str, holder: str, fence: int) -> bool:
        """Let the lease end now."""

        def write(conn: sqlite3.Connection) -> bool:
            with self._tx(conn):
                row = conn.execute(
                    Q["lease_release"],
                    {"agent": agent, "holder": holder, "fence": fence, "now": _now_us()},
                ).fetchone()
            return row is not None

        return await self._run(write)

    async def lease(self, agent: str) -> Lease | None:
        """The agent's current (or last) lease."""

        def read(conn: sqlite3.Connection) -> Lease | None:
            row = conn.execute(Q["lease_get"], (agent,)).fetchone()
            return None if row is None else _lease(row)

        return await self._run(read)

    async def leases(self) -> list[Lease]:
        """Every agent's current (or last) lease."""

        def read(conn: sqlite3.Connection) -> list[Lease]:
            return [_lease(r) for r in conn.execute(Q["leases_all"]).fetchall()]

        return await self._run(read)

    # --- tokens --------------------------------------------------------------------------------
    @staticmethod
    def _token(row: sqlite3.Row) -> TokenRecord:
        return rows.token(
            row, _dt(row["created_at"]), _opt_dt(row["expires_at"]), _opt_dt(row["revoked_at"])
        )

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
        """Store a new token's digest (and its audit record) in one transaction."""

        def write(conn: sqlite3.Connection) -> TokenRecord:
            now = _now_us()
            expires = None if expires_at is None else _us(expires_at)
            with self._tx(conn):
                row = conn.execute(
                    Q["token_insert"], (prefix, digest, kind, name, label, now, expires)
                ).fetchone()
                record = self._token(row)
                if audit is not None:
                    targets = {**audit.targets, "token": record.id}
                    self._append_audit(conn, _with_targets(audit, targets), now)
                return record

        return await self._run(write)

    async def find_token(self, prefix: str) -> TokenRecord | None:
        """The token with this prefix, or None."""

        def read(conn: sqlite3.Connection) -> TokenRecord | None:
            row = conn.execute(Q["token_by_prefix"], (prefix,)).fetchone()
            return None if row is None else self._token(row)

        return await self._run(read)

    async def get_token(self, token_id: int) -> TokenRecord:
        """One token by id."""

        def read(conn: sqlite3.Connection) -> TokenRecord:
            row = conn.execute(Q["token_by_id"], (token_id,)).fetchone()
            if row is None:
                raise NotFound(f"no token {token_id}", token_id=token_id)
            return self._token(row)

        return await self._run(read)

    async def list_tokens(self, name: str | None = None) -> list[TokenRecord]:
        """Every token, or one principal's."""

        def read(conn: sqlite3.Connection) -> list[TokenRecord]:
            cursor = (
                conn.execute(Q["tokens_all"])
                if name is None
                else conn.execute(Q["tokens_of"], (name,))
            )
            return [self._token(r) for r in cursor]

        return await self._run(read)

    async def revoke_token(self, token_id: int, audit: AuditEvent | None = None) -> TokenRecord:
        """Revoke a token from now on; revoking twice keeps the first time."""

        def write(conn: sqlite3.Connection) -> TokenRecord:
            now = _now_us()
            with self._tx(conn):
                # The write lock is held (BEGIN IMMEDIATE): no other revocation can interleave.
                active = [r["id"] for r in conn.execute(Q["operator_tokens_active"], (now,))]
                if token_id in active and len(active) == 1:
                    raise last_operator_refusal(token_id)
                row = conn.execute(Q["token_revoke"], (now, token_id)).fetchone()
                if row is None:
                    raise NotFound(f"no token {token_id}", token_id=token_id)
                if audit is not None:
                    self._append_audit(conn, audit, now)
                return self._token(row)

        return await self._run(write)

    # --- audit ---------------------------------------------------------------------------------
    def _append_audit(self, conn: sqlite3.Connection, event: AuditEvent, now: int) -> AuditRecord:
        """Append ``event`` to the chain inside the caller's transaction."""
        key = _need_key(self._audit_key)
        head = conn.execute(Q["audit_head"]).fetchone()
        seq = head["seq"] + 1
        at = _dt(now)
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
        row = conn.execute(
            Q["audit_insert"],
            (
                seq,
                now,
                event.actor,
                event.action,
                canonical(event.targets),
                canonical(event.detail),
                event.outcome,
                head["hash"],
                digest,
            ),
        ).fetchone()
        conn.execute(Q["audit_head_update"], (seq, digest))
        return rows.audit(row, at)

    async def record(self, event: AuditEvent) -> AuditRecord:
        """Append one audit record in its own transaction."""

        def write(conn: sqlite3.Connection) -> AuditRecord:
            with self._tx(conn):
                return self._append_audit(conn, event, _now_us())

        return await self._run(write)

    async def audit(self, query: AuditQuery) -> list[AuditRecord]:
        """Audit records matching ``query``, in chain order."""
        since = None if query.since is None else _us(query.since)
        until = None if query.until is None else _us(query.until)

        def read(conn: sqlite3.Connection) -> list[AuditRecord]:
            params: tuple[Any, ...] = (
                query.after_seq,
                query.actor,
                query.actor,
                query.action,
                query.action,
                since,
                since,
                until,
                until,
                query.limit,
            )
            return [rows.audit(r, _dt(r["at"])) for r in conn.execute(Q["audit_query"], params)]

        return await self._run(read)

    async def verify_audit(self, checkpoints: list[Checkpoint] | None = None) -> AuditVerification:
        """Walk the whole chain, check the append-only triggers, compare with ``checkpoints``."""
        key = _need_key(self._audit_key)

        def read(conn: sqlite3.Connection) -> ChainState:
            conn.execute("BEGIN")  # one snapshot of rows, head and triggers
            try:
                records = [rows.audit(r, _dt(r["at"])) for r in conn.execute(Q["audit_all"])]
                head = conn.execute(Q["audit_chain_head"]).fetchone()
                triggers = {r["name"] for r in conn.execute(Q["audit_triggers"])}
            finally:
                conn.execute("COMMIT")
            return ChainState(
                records,
                head["seq"],
                head["hash"],
                head["keyed_from"],
                sorted(AUDIT_TRIGGERS - triggers),
            )

        state = await self._run(read)
        findings = verify(state, key, checkpoints)
        return AuditVerification(len(state.records), state.head_seq, findings, state.keyed_from)

    def use_audit_key(self, key: bytes) -> None:
        """Key the chain's HMAC from now on."""
        self._audit_key = key

    async def audit_tip(self) -> Checkpoint:
        """The newest record and where keyed hashing began, timed now."""

        def read(conn: sqlite3.Connection) -> Checkpoint:
            row = conn.execute(Q["audit_tip"]).fetchone()
            return Checkpoint(
                row["seq"] or 0, row["hash"] or GENESIS, datetime.now(UTC), row["keyed_from"]
            )

        return await self._run(read)

    # --- dashboard sessions --------------------------------------------------------------------
    @staticmethod
    def _session(row: sqlite3.Row) -> DashboardSession:
        return DashboardSession(
            id=row["id"],
            id_hash=row["id_hash"],
            token_id=row["token_id"],
            operator=row["operator"],
            created_at=_dt(row["created_at"]),
            expires_at=_dt(row["expires_at"]),
            ended_at=_opt_dt(row["ended_at"]),
        )

    async def create_session(
        self, id_hash: str, token_id: int, operator: str, lifetime: timedelta
    ) -> DashboardSession:
        """Open a dashboard session."""

        def write(conn: sqlite3.Connection) -> DashboardSession:
            now = _now_us()
            expires = now + int(lifetime.total_seconds() * 1_000_000)
            with self._tx(conn):
                row = conn.execute(
                    Q["dashboard_session_insert"], (id_hash, token_id, operator, now, expires)
                ).fetchone()
                return self._session(row)

        return await self._run(write)

    async def find_session(self, id_hash: str) -> DashboardSession | None:
        """The session with this id hash, or None."""

        def read(conn: sqlite3.Connection) -> DashboardSession | None:
            row = conn.execute(Q["dashboard_session_by_hash"], (id_hash,)).fetchone()
            return None if row is None else self._session(row)

        return await self._run(read)

    async def end_session(self, id_hash: str) -> DashboardSession | None:
        """End a session from now on; ending twice keeps the first time."""

        def write(conn: sqlite3.Connection) -> DashboardSession | None:
            with self._tx(conn):
                row = conn.execute(Q["dashboard_session_end"], (_now_us(), id_hash)).fetchone()
                return None if row is None else self._session(row)

        return await self._run(write)

    # --- trace ---------------------------------------------------------------------------
    async def save_trace(self, trace: StoredTrace) -> StoredTrace:
        """Store a trace and its message links; one already stored under the id is returned."""

        def write(conn: sqlite3.Connection) -> StoredTrace:
            with self._tx(conn):
                made = conn.execute(
                    Q["trace_insert"],
                    {
                        "id": trace.id,
                        "agent": trace.agent,
                        "kind": trace.kind,
                        "outcome": trace.outcome,
                        "started_at": _us(trace.started_at),
                        "received_at": _now_us(),
                        "cost_micros": trace.cost_micros,
                        "cost_source": trace.cost_source,
                        "body": json.dumps(trace.body),
                    },
                ).fetchone()
                if made is not None:
                    links = [(trace.id, m, "woke") for m in trace.woke]
                    links += [(trace.id, m, "sent") for m in trace.sent]
                    conn.executemany(Q["trace_link"], links)
                row = conn.execute(Q["trace_by_id"], (trace.id,)).fetchone()
            return _stored_trace(row)

        return await self._run(write)

    async def trace(self, trace_id: str) -> StoredTrace | None:
        """One trace by id."""

        def read(conn: sqlite3.Connection) -> StoredTrace | None:
            row = conn.execute(Q["trace_by_id"], (trace_id,)).fetchone()
            return None if row is None else _stored_trace(row)

        return await self._run(read)

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
            "since": None if since is None else _us(since),
            "limit": limit,
        }

        def read(conn: sqlite3.Connection) -> list[StoredTrace]:
            return [_stored_trace(r) for r in conn.execute(Q["traces_find"], params)]

        return await self._run(read)

    async def metered_calls(self, agent: str, reservations: Sequence[int]) -> dict[int, int]:
        """Micro-dollars recorded per reservation of ``agent``."""
        wanted = json.dumps(list(reservations))

        def read(conn: sqlite3.Connection) -> dict[int, int]:
            found = conn.execute(Q["trace_metered_calls"], (agent, wanted)).fetchall()
            return {int(r["reservation_id"]): int(r["cost"]) for r in found}

        return await self._run(read)

    async def delete_traces_before(self, cutoff: datetime) -> int:
        """Delete traces of turns started before ``cutoff``."""

        def write(conn: sqlite3.Connection) -> int:
            with self._tx(conn):
                return conn.execute(Q["traces_delete_before"], (_us(cutoff),)).rowcount

        return await self._run(write)

    # --- dash: message search ------------------------------------------------------------------
    async def search_messages(self, search: MessageSearch) -> list[MessageHit]:
        """Messages matching ``search``, newest first, each with the state of its copies."""
        params = {
            "sender": search.sender,
            "recipient": search.recipient,
            "kind": None if search.kind is None else search.kind.value,
            "priority": None if search.priority is None else search.priority.rank,
            "thread": search.thread_id,
            "since": None if search.since is None else _us(search.since),
            "until": None if search.until is None else _us(search.until),
            "before": search.before,
            "pattern": search.like(),
            "state": None if search.state is None else search.state.value,
            "limit": search.limit,
        }

        def read(conn: sqlite3.Connection) -> list[MessageHit]:
            return [
                MessageHit(rows.message(r, _dt(r["created_at"])), MessageState(r["delivery_state"]))
                for r in conn.execute(Q["message_search"], params)
            ]

        return await self._run(read)

    # --- kbpg: knowledge chunks ----------------------------------------------------------------
    async def put_knowledge_chunks(
        self, owner: str, path: str, offset: int, chunks: Sequence[KnowledgeChunk]
    ) -> None:
        """Refused: on SQLite fleets each agent searches its own index."""
        raise Conflict(_NO_KNOWLEDGE)

    async def delete_knowledge_file(self, owner: str, path: str) -> int:
        """Refused: on SQLite fleets each agent searches its own index."""
        raise Conflict(_NO_KNOWLEDGE)

    async def search_knowledge(
        self, owners: Sequence[str], query: str, k: int
    ) -> list[KnowledgeChunkHit]:
        """Refused: on SQLite fleets each agent searches its own index."""
        raise Conflict(_NO_KNOWLEDGE)

    # --- netns ---------------------------------------------------------------------------------
    async def release_claims(self, inbox: str) -> int:
        """Claimed, unacked deliveries of ``inbox`` claimable now; how many."""

        def write(conn: sqlite3.Connection) -> int:
            now = _now_us()
            with self._tx(conn):
                changed: int = conn.execute(
                    "UPDATE deliveries SET visible_at = ?, updated_at = ?"
                    " WHERE inbox = ? AND state = 'claimed' AND visible_at > ?",
                    (now, now, inbox, now),
                ).rowcount
                return changed

        changed = await self._run(write)
        if changed:
            self._waiters.wake([inbox])
        return changed

    # --- wsync: workspace sync ---------------------------------------------------------------
    async def put_workspace_blob(self, agent: str, sha256: str, content: bytes) -> bool:
        """Keep a blob once (an upload of one already held changes nothing)."""

        def write(conn: sqlite3.Connection) -> bool:
            with self._tx(conn):
                added: int = conn.execute(
                    "INSERT INTO workspace_blobs (agent, sha256, size, content, created_at)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (agent, sha256) DO NOTHING",
                    (agent, sha256, len(content), content, _now_us()),
                ).rowcount
            return added == 1

        return await self._run(write)

    async def workspace_blob(self, agent: str, sha256: str) -> bytes | None:
        """One blob's bytes."""
        return await self._one(
            "SELECT content FROM workspace_blobs WHERE agent = ? AND sha256 = ?",
            (agent, sha256),
            lambda r: bytes(r["content"]),
        )

    async def commit_workspace(
        self, agent: str, fence: int | None, files: Sequence[WorkspaceFile]
    ) -> WorkspaceManifest:
        """A new version under the write lock (BEGIN IMMEDIATE): no takeover interleaves."""

        def write(conn: sqlite3.Connection) -> WorkspaceManifest:
            with self._tx(conn):
                row = conn.execute("SELECT * FROM leases WHERE agent = ?", (agent,)).fetchone()
                refusal = push_refusal(agent, fence, None if row is None else _lease(row))
                if refusal is not None:
                    raise refusal
                head = conn.execute(
                    "SELECT * FROM workspace_heads WHERE agent = ?", (agent,)
                ).fetchone()
                current = _workspace_files(conn, agent)
                if head is not None and head["version"] > 0 and set(current) == set(files):
                    return _workspace_manifest(agent, head, current)  # a retried push
                held = {
                    r["sha256"]
                    for r in conn.execute(
                        "SELECT sha256 FROM workspace_blobs WHERE agent = ?", (agent,)
                    )
                }
                problem = missing_blob(files, held)
                if problem is not None:
                    raise problem
                diff = change(current, files)
                conn.executemany(
                    "DELETE FROM workspace_files WHERE agent = ? AND path = ?",
                    [(agent, path) for path in diff.removed],
                )
                conn.executemany(
                    "INSERT INTO workspace_files (agent, path, sha256, size) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (agent, path) DO UPDATE"
                    " SET sha256 = excluded.sha256, size = excluded.size",
                    [(agent, f.path, f.sha256, f.size) for f in diff.written],
                )
                # Blobs no file names: those the change left behind, and uploads of pushes
                # whose commit never came (older than a minute: a push under way keeps its own).
                conn.execute(
                    "DELETE FROM workspace_blobs WHERE agent = ? AND created_at < ?"
                    " AND sha256 NOT IN (SELECT sha256 FROM workspace_files WHERE agent = ?)",
                    (agent, _now_us() - 60_000_000, agent),
                )
                conn.executemany(
                    "DELETE FROM workspace_blobs WHERE agent = ? AND sha256 = ?",
                    [(agent, sha) for sha in diff.unnamed],
                )
                new = conn.execute(
                    "INSERT INTO workspace_heads (agent, version, fence, bytes, updated_at)"
                    " VALUES (?, 1, ?, ?, ?) ON CONFLICT (agent) DO UPDATE SET"
                    " version = version + 1, fence = excluded.fence, bytes = excluded.bytes,"
                    " updated_at = excluded.updated_at RETURNING *",
                    (agent, fence, sum(f.size for f in files), _now_us()),
                ).fetchone()
            return _workspace_manifest(agent, new, sorted(files, key=lambda f: f.path))

        return await self._run(write)

    async def workspace_manifest(self, agent: str) -> WorkspaceManifest:
        """The latest version, read in one snapshot."""

        def read(conn: sqlite3.Connection) -> WorkspaceManifest:
            conn.execute("BEGIN")
            try:
                head = conn.execute(
                    "SELECT * FROM workspace_heads WHERE agent = ?", (agent,)
                ).fetchone()
                files = _workspace_files(conn, agent)
            finally:
                conn.execute("COMMIT")
            return WorkspaceManifest(agent, 0) if head is None else (
                _workspace_manifest(agent, head, files))  # fmt: skip

        return await self._run(read)

    async def put_workspace_blobs(
        self, agent: str, blobs: Sequence[tuple[str, bytes]]
    ) -> list[bool]:
        """Every blob in one transaction; one already held changes nothing."""

        def write(conn: sqlite3.Connection) -> list[bool]:
            now = _now_us()
            with self._tx(conn):
                return [
                    conn.execute(
                        "INSERT INTO workspace_blobs (agent, sha256, size, content, created_at)"
                        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (agent, sha256) DO NOTHING",
                        (agent, sha, len(content), content, now),
                    ).rowcount
                    == 1
                    for sha, content in blobs
                ]

        return await self._run(write)

    async def workspace_blobs(self, agent: str, hashes: Sequence[str], max_bytes: int) -> BlobBatch:
        """The sizes first, then the bytes of the batch chosen, in one read snapshot."""

        def read(conn: sqlite3.Connection) -> BlobBatch:
            conn.execute("BEGIN")
            try:
                sizes = {
                    r["sha256"]: r["size"]
                    for r in conn.execute(
                        "SELECT sha256, size FROM workspace_blobs WHERE agent = ?"
                        " AND sha256 IN (SELECT value FROM json_each(?))",
                        (agent, json.dumps(list(hashes))),
                    )
                }
                take, left, unknown = fetch_plan(hashes, sizes, max_bytes)
                contents = {
                    r["sha256"]: bytes(r["content"])
                    for r in conn.execute(
                        "SELECT sha256, content FROM workspace_blobs WHERE agent = ?"
                        " AND sha256 IN (SELECT value FROM json_each(?))",
                        (agent, json.dumps(take)),
                    )
                }
            finally:
                conn.execute("COMMIT")
            return BlobBatch({h: contents[h] for h in take}, left, unknown)

        return await self._run(read)

    # --- scale: batched lease renewal -----------------------------------------------------------
    async def renew_leases(
        self, holder: str, leases: Sequence[tuple[str, int]], ttl: timedelta
    ) -> list[Lease | LeaseLost]:
        """Each lease renewed as :meth:`renew_lease` would, in one transaction."""

        def write(conn: sqlite3.Connection) -> list[Lease | LeaseLost]:
            out: list[Lease | LeaseLost] = []
            with self._tx(conn):
                for agent, fence in leases:
                    try:
                        out.append(_renew_row(conn, agent, holder, fence, ttl))
                    except LeaseLost as e:
                        out.append(e)
            return out

        return await self._run(write)


def _workspace_files(conn: sqlite3.Connection, agent: str) -> list[WorkspaceFile]:
    found = conn.execute(
        "SELECT path, sha256, size FROM workspace_files WHERE agent = ? ORDER BY path", (agent,)
    )
    return [WorkspaceFile(r["path"], r["sha256"], r["size"]) for r in found]


def _workspace_manifest(
    agent: str, head: sqlite3.Row, files: Sequence[WorkspaceFile]
) -> WorkspaceManifest:
    return WorkspaceManifest(
        agent, head["version"], tuple(files), head["fence"], _dt(head["updated_at"])
    )


def _renew_row(
    conn: sqlite3.Connection, agent: str, holder: str, fence: int, ttl: timedelta
) -> Lease:
    """Extend one live lease of ``holder`` inside the caller's transaction; ``LeaseLost``
    otherwise (the single and the batched renewal share this, so their fencing is one)."""
    now = _now_us()
    row = conn.execute(Q["lease_lock"], (agent,)).fetchone()
    if row is None or not ours(_lease(row), holder, fence, _dt(now)):
        raise lost_error(agent, None if row is None else _lease(row), holder, fence)
    out = conn.execute(
        Q["lease_write"],
        {
            "holder": holder, "host": row["host"], "fence": fence, "agent": agent,
            "expires_at": now + int(ttl.total_seconds() * 1_000_000),
            "new": False, "now": now,
        },
    ).fetchone()  # fmt: skip
    return _lease(out)


AUDIT_TRIGGERS = frozenset({"audit_no_update", "audit_no_delete"})
"""The triggers that make the audit table append-only (verification checks they are there)."""


def _need_key(key: bytes | None) -> bytes:
    if key is None:
        msg = (
            "this store has no audit key, so it cannot write or verify the keyed audit chain: "
            "build it with audit_key=mcos.domain.audit.audit_key(token key)"
        )
        raise StoreError(msg)
    return key


def _with_targets(event: AuditEvent, targets: dict[str, Any]) -> AuditEvent:
    return AuditEvent(event.actor, event.action, targets, event.detail, event.outcome)


def last_operator_refusal(token_id: int) -> LastOperatorToken:
    """The 409 for revoking the only active operator token (humans would be locked out)."""
    return LastOperatorToken(
        f"token {token_id} is the last active operator token: revoking it would lock every human "
        "out; create another operator token first (mcos token create --operator NAME)",
        token_id=token_id,
    )


def _stored_trace(row: sqlite3.Row) -> StoredTrace:
    body = json.loads(row["body"])
    return StoredTrace(
        id=row["id"],
        agent=row["agent"],
        kind=row["kind"],
        outcome=row["outcome"],
        started_at=_dt(row["started_at"]),
        cost_micros=row["cost_micros"],
        cost_source=row["cost_source"],
        body=body,
        woke=tuple(body.get("woke_messages", ())),
        sent=tuple(body.get("sent_messages", ())),
        received_at=_dt(row["received_at"]),
    )


_NO_KNOWLEDGE = (
    "this Mission Control's store is SQLite, which keeps no knowledge chunks: each agent "
    "searches its own index (knowledge search in the store needs a PostgreSQL store)"
)
