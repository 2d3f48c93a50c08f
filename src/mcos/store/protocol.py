"""The one interface Mission Control uses to reach its database.

Two implementations pass one shared test suite: :mod:`mcos.store.sqlite` (the embedded
default) and :mod:`mcos.store.postgres` (production). Every mutating call that changes control
state takes an optional :class:`~mcos.domain.audit.AuditEvent` and writes it in the same
transaction, so a change and its audit record are stored together or not at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any, Protocol, runtime_checkable

from mcos.domain.approvals import Approval, Vote
from mcos.domain.audit import AuditEvent, AuditRecord, Checkpoint, Finding
from mcos.domain.budget import Committed, Limits, Usage, Verdict, WorstCase
from mcos.domain.incidents import Incident, IncidentEvent
from mcos.domain.leases import FenceGuard, Lease
from mcos.domain.message_search import MessageHit, MessageSearch
from mcos.domain.messages import Delivery, Message, NewMessage, RecipientKind, SendResult
from mcos.domain.paging import Page, PageKind
from mcos.domain.sessions import DashboardSession
from mcos.domain.tokens import PrincipalKind, TokenRecord
from mcos.domain.workspace_sync import BlobBatch, WorkspaceFile, WorkspaceManifest
from mcos.exceptions import LeaseLost


@dataclass(frozen=True)
class AgentEntry:
    """An agent as the directory knows it (from the fleet file, plus what the server saw)."""

    name: str
    role: str
    host: str
    reports_to: str | None = None
    last_seen_at: datetime | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Directory:
    """Everything a message may be addressed to, as declared by the fleet file."""

    agents: Sequence[AgentEntry]
    humans: Sequence[str]
    topics: dict[str, Sequence[str]]
    """Topic name → subscriber names (agents or humans)."""

    @cached_property
    def agent_names(self) -> frozenset[str]:
        """The agents' names, built once (Mission Control asks on every send)."""
        return frozenset(a.name for a in self.agents)


@dataclass(frozen=True)
class KnowledgeChunk:
    """A chunk of an agent's document as the agent synced it: where it is and its text."""

    page: int | None
    section: str
    line: int | None
    text: str


@dataclass(frozen=True)
class KnowledgeChunkHit:
    """A chunk found by full-text search: its file, its place in the file, its rank score."""

    path: str
    seq: int
    chunk: KnowledgeChunk
    score: float


@dataclass(frozen=True)
class InboxDepth:
    """How many deliveries an inbox holds in each live state."""

    inbox: str
    queued: int
    claimed: int
    dead: int


@dataclass(frozen=True)
class BudgetAsk:
    """A model call's worst case, to reserve before the call; its output is clamped to what the
    caps have left (never below the worst case's floor)."""

    agent: str
    worst: WorstCase
    purpose: str = ""
    model: str = ""
    """The model Mission Control priced the call for."""


@dataclass(frozen=True)
class Reservation:
    """A granted reservation and where it leaves the agent's day."""

    id: int
    agent: str
    day: str
    usd_micros: int
    tokens: int
    verdict: Verdict
    committed: Committed
    """The agent's day including this reservation."""
    max_output: int = 0
    """The output tokens the call may ask for (at most what it asked)."""


@dataclass(frozen=True)
class Held:
    """A reservation as it was held, returned when its call is settled: what it allowed."""

    id: int
    model: str
    prompt_tokens: int
    max_output: int
    usd_micros: int


@dataclass(frozen=True)
class ModelCall:
    """One model call's usage and cost, as the runtime reports it."""

    agent: str
    provider: str
    model: str
    usage: Usage
    cost_micros: int
    purpose: str = ""


@dataclass(frozen=True)
class UsageRow:
    """One agent's model use on one day."""

    day: str
    agent: str
    calls: int
    usage: Usage
    cost_micros: int
    held_micros: int
    """Reservations not yet settled."""


@dataclass(frozen=True)
class AgentState:
    """What an agent's runtime last reported about itself."""

    name: str
    state: str
    detail: str
    until: datetime | None
    info: dict[str, Any]
    updated_at: datetime


@dataclass(frozen=True)
class NewIncident:
    """A first report of an observation."""

    severity: str
    state: str
    summary: str
    evidence: str
    reporter: str
    fingerprint: str
    events: tuple[tuple[str, str, str, str], ...]
    """(actor, action, severity, reason) to record with it."""


@dataclass(frozen=True)
class NewApproval:
    """A request for a governed action."""

    action: str
    payload: dict[str, Any]
    payload_hash: str
    requester: str
    rationale: str
    quorum: str
    executor: str | None
    constraints: str
    expires_in: timedelta
    report_every: str | None = None


@dataclass(frozen=True)
class AuditQuery:
    """Filters for reading the audit log; all optional, combined with AND."""

    actor: str | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    after_seq: int = 0
    limit: int = 100


@dataclass(frozen=True)
class AuditVerification:
    """The outcome of walking the audit chain (and comparing it with the checkpoints given)."""

    records: int
    head_seq: int
    findings: list[Finding]
    keyed_from: int = 1
    """The first record hashed with the audit key; those before it carry plain SHA-256."""

    @property
    def intact(self) -> bool:
        """True when nothing was found: no record edited, deleted, reordered or cut off."""
        return not self.findings

    @property
    def breaks(self) -> list[tuple[int, str]]:
        """Each finding as (seq, message), 0 where it concerns no one record."""
        return [(f.seq or 0, f.message) for f in self.findings]


@dataclass(frozen=True)
class StoredTrace:
    """A turn trace as stored: the columns it is found by and the whole posted document."""

    id: str
    agent: str
    kind: str
    outcome: str
    started_at: datetime
    cost_micros: int
    cost_source: str
    body: dict[str, Any]
    """The trace as posted (``TraceIn``) plus what Mission Control added (metered cost)."""
    woke: tuple[int, ...] = ()
    sent: tuple[int, ...] = ()
    received_at: datetime | None = None
    """When Mission Control stored it (set by the store)."""


@runtime_checkable
class Store(Protocol):
    """Mission Control's storage: directory, messages, tokens and the audit log."""

    dialect: str
    """``sqlite`` or ``postgres``."""

    # --- lifecycle -------------------------------------------------------------------------
    async def open(self) -> None:
        """Connect; refuses to serve a schema older than this code (run ``mcos db upgrade``)."""

    async def close(self) -> None:
        """Release connections and wake any waiter."""

    async def upgrade(self, target: int | None = None) -> list[int]:
        """Apply pending migrations up to ``target`` (default: latest); returns versions applied."""

    async def schema_version(self) -> int:
        """The version the database is at (0 for an empty one)."""

    async def now(self) -> datetime:
        """The authoritative clock: the database server's time, timezone-aware UTC."""

    # --- directory -------------------------------------------------------------------------
    async def sync_directory(self, directory: Directory, audit: AuditEvent | None = None) -> None:
        """Make agents, humans and topic subscriptions match the fleet file."""

    async def list_agents(self, names: Sequence[str] | None = None) -> list[AgentEntry]:
        """Every agent in the directory (of ``names`` when given), by name."""

    async def recipient_kind(self, name: str) -> RecipientKind | None:
        """What ``name`` is (agent, topic or human), or None when nothing has that name."""

    async def subscriptions(self, name: str) -> list[str]:
        """The topics ``name`` is subscribed to."""

    async def touch_agent(self, name: str) -> None:
        """Record that ``name`` was seen now (by the server's clock)."""

    # --- messages --------------------------------------------------------------------------
    async def send(self, message: NewMessage, *, guard: FenceGuard | None = None) -> SendResult:
        """Store a message and one delivery per recipient inbox.

        A repeat of ``(sender, idempotency_key)`` with the same content returns the original
        (``created=False``); with different content it raises ``IdempotencyConflict``. With a
        ``guard``, a sender whose lease moved past its fence is refused (``Fenced``) by the
        same statement or transaction that would store it.
        """

    async def send_many(
        self, messages: Sequence[NewMessage], *, guard: FenceGuard | None = None
    ) -> list[SendResult]:
        """Store several messages in one transaction, in order: all of them or none.

        Each behaves as :meth:`send`; an error names the offending item (``messages[3]: …``)
        and leaves nothing of the batch stored.
        """

    async def get_message(self, message_id: int) -> Message:
        """One message by id (``NotFound`` otherwise)."""

    async def thread(self, thread_id: int) -> list[Message]:
        """Every message of a thread, oldest first."""

    async def claim(
        self, inbox: str, *, limit: int = 1, visibility: timedelta | None = None
    ) -> list[Delivery]:
        """Claim up to ``limit`` deliveries of ``inbox``: urgent first, then oldest first.

        A claimed delivery is hidden from other claimants until its deadline; a lapsed claim is
        offered again, or dead-lettered once it has used every attempt.
        """

    async def ack(
        self, inbox: str, delivery_id: int, receipt: str, *, guard: FenceGuard | None = None
    ) -> None:
        """Finish a delivery; ``StaleReceipt`` if the claim lapsed or another claim holds it;
        ``Fenced`` if ``guard``'s fence is stale (as :meth:`send`)."""

    async def ack_many(
        self, inbox: str, items: Sequence[tuple[int, str]], *, guard: FenceGuard | None = None
    ) -> None:
        """Ack several ``(delivery_id, receipt)`` pairs in one transaction (all or none)."""

    async def nack(
        self,
        inbox: str,
        delivery_id: int,
        receipt: str,
        *,
        error: str = "",
        delay: timedelta | None = None,
    ) -> Delivery:
        """Give a delivery back: it is retried after a backoff, or dead-lettered when exhausted."""

    async def defer(
        self,
        inbox: str,
        items: Sequence[tuple[int, str]],
        *,
        not_before: datetime,
        reason: str,
    ) -> list[Delivery]:
        """Hand claims back because the recipient could not act: each ``(delivery_id,
        receipt)`` is queued again, claimable from ``not_before`` (never before now), and the
        claim's attempt is given back, so no number of deferrals dead-letters a delivery.

        Receipts are checked as for :meth:`nack`; all items or none. ``InvalidRequest`` when
        ``not_before`` is further ahead than :data:`~mcos.domain.messages.MAX_DEFERRAL`.
        """

    async def sweep_dead_letters(self, limit: int = 500) -> int:
        """Dead-letter, in every inbox, lapsed claims out of attempts and deliveries past the
        sender's expiry (queued, or a lapsed claim); how many went dead."""

    async def unnotified_dead_letters(self, limit: int = 500) -> list[Delivery]:
        """Dead letters whose recipient's manager and humans were not told yet, oldest first."""

    async def mark_dead_letters_notified(self, ids: Sequence[int]) -> list[int]:
        """Record these dead letters as told; the ids this call marked (others already were)."""

    dead_lettered: int
    """How many deliveries this store object dead-lettered (a hint to notify without a query)."""

    async def wait(self, inbox: str, timeout: float) -> bool:
        """Block until something may be claimable in ``inbox`` or ``timeout`` seconds pass.

        Returns True when woken by a send; a wake-up is a hint, the caller claims to find out.
        """

    def armed(self, inbox: str) -> AbstractContextManager[asyncio.Future[None]]:
        """A future resolved by the next wake-up of ``inbox``; arm it *before* claiming, so a
        send between an empty claim and the wait still wakes the long-poll."""

    async def dead_letters(self, inbox: str | None = None, limit: int = 100) -> list[Delivery]:
        """Dead-lettered deliveries, oldest first."""

    async def requeue(self, delivery_id: int, audit: AuditEvent | None = None) -> Delivery:
        """Put a dead-lettered delivery back in its inbox with a fresh attempt count (the
        sender's expiry no longer applies; dead-lettered again, it is notified again)."""

    async def inbox_depths(self, inboxes: Sequence[str] | None = None) -> list[InboxDepth]:
        """Queue depth per inbox (every inbox with deliveries when ``inboxes`` is None)."""

    # --- model use and budgets -------------------------------------------------------------
    async def reserve_budget(self, ask: BudgetAsk, limits: Limits, fleet: Limits) -> Reservation:
        """Hold a call's worst case against today's caps, its output clamped to what they have
        left (:func:`mcos.domain.budget.grant`), or raise ``OverBudget``.

        Today's committed spend is settled calls plus held reservations (an unsettled one
        counts in full: the call may have happened); the check and the insert are one
        transaction, so concurrent calls can never overrun.
        """

    async def settle(self, reservation_id: int | None, call: ModelCall) -> Held | None:
        """Record a call and release its reservation (``Conflict`` if not held by its agent);
        the reservation as it was held (None without one)."""

    async def usage(self, since: str, agent: str | None = None) -> list[UsageRow]:
        """Model use per agent per UTC day from ``since`` (``YYYY-MM-DD``) on."""

    async def set_agent_state(
        self,
        name: str,
        state: str,
        detail: str = "",
        until: datetime | None = None,
        info: dict[str, Any] | None = None,
    ) -> AgentState:
        """Record the state an agent's runtime reports (running, cooling_down, …)."""

    async def agent_states(self, names: Sequence[str] | None = None) -> list[AgentState]:
        """Every agent's last reported state (of ``names`` when given)."""

    # --- incidents -------------------------------------------------------------------------
    async def create_incident(self, new: NewIncident) -> Incident:
        """Store a new incident with its opening events (reported, and confirmed for a P3)."""

    async def incident(self, incident_id: int) -> Incident | None:
        """One incident."""

    async def open_incident(self, fingerprint: str) -> Incident | None:
        """The open incident of an observation, if any (reports of it are grouped there)."""

    async def incidents(self, state: str | None = None, limit: int = 100) -> list[Incident]:
        """Incidents, newest first."""

    async def incident_events(self, incident_id: int) -> list[IncidentEvent]:
        """An incident's timeline, oldest first."""

    async def record_incident_event(
        self, incident_id: int, actor: str, action: str, severity: str, reason: str
    ) -> None:
        """Add to the timeline; a second ``confirm`` by one actor at one severity is a
        ``Conflict`` (one confirmer counts once)."""

    async def transition_incident(
        self,
        incident_id: int,
        expected: str,
        state: str,
        severity: str,
        event: tuple[str, str, str],
        more_reports: int = 0,
    ) -> Incident:
        """Move an incident from ``expected`` to ``state`` with its event (actor, action,
        reason); ``Conflict`` if another transition got there first."""

    async def reports_since(self, actor: str, seconds: float) -> int:
        """Incident reports ``actor`` made in the last ``seconds`` (for the rate limit)."""

    # --- approvals -------------------------------------------------------------------------
    async def create_approval(self, new: NewApproval) -> Approval:
        """A pending request; ``Conflict`` naming the open one if the same action and payload
        are already pending."""

    async def approval(self, approval_id: int) -> Approval | None:
        """One request."""

    async def approvals(self, state: str | None = None, limit: int = 100) -> list[Approval]:
        """Requests, newest first."""

    async def add_vote(self, approval_id: int, voter: str, vote: str, rationale: str) -> Vote:
        """Record a vote; ``Conflict`` if this voter already voted."""

    async def votes(self, approval_id: int) -> list[Vote]:
        """The votes on a request, in order."""

    async def decide_approval(self, approval_id: int, state: str, by: str, reason: str) -> Approval:
        """Close a pending request; ``Conflict`` if it was no longer pending."""

    async def set_directive(self, approval_id: int, directive_id: int) -> Approval:
        """Link the directive message an approved request issued."""

    async def acknowledge_directive(self, approval_id: int) -> Approval | None:
        """Mark the directive acknowledged (None if it already was, or the request is no
        longer approved: a veto won)."""

    async def withdraw_approval(self, approval_id: int, by: str, reason: str) -> Approval | None:
        """Veto an approved request whose directive is not yet acknowledged; None if it is no
        longer approved-and-unacknowledged (compare-and-set against an acknowledgement)."""

    async def approvals_due(self, limit: int = 100) -> list[Approval]:
        """Pending requests past their expiry, the longest overdue first."""

    async def incidents_unconfirmed(self, older_than: float, limit: int = 100) -> list[Incident]:
        """Reports still ``reported`` ``older_than`` seconds after they were made, oldest first."""

    async def mark_reminded(self, approval_id: int) -> bool:
        """Claim the one reminder of a pending request (False if already sent)."""

    # --- pages -----------------------------------------------------------------------------
    async def open_page(
        self, human: str, key: str, kind: PageKind, subject: str, body: str
    ) -> Page | None:
        """A new page; None when this person was already paged about ``key``."""
        ...

    async def page_sent(
        self, page_id: int, *, state: str, channel: str, ref: str = "", error: str = ""
    ) -> Page:
        """Record a delivery attempt (an acknowledged page stays acknowledged)."""
        ...

    async def ack_page(self, page_id: int, by: str) -> Page | None:
        """Acknowledge once; None when already acknowledged or unknown."""
        ...

    async def page(self, page_id: int) -> Page | None:
        """One page."""
        ...

    async def pages(
        self, human: str | None = None, state: str | None = None, limit: int = 100
    ) -> list[Page]:
        """Pages, newest first."""
        ...

    # --- leases ----------------------------------------------------------------------------
    async def acquire_lease(self, agent: str, holder: str, host: str, ttl: timedelta) -> Lease:
        """Grant (a new fencing token) or renew ``holder``'s lease; ``LeaseHeld`` while another's
        lease binds."""

    async def renew_lease(self, agent: str, holder: str, fence: int, ttl: timedelta) -> Lease:
        """Extend a live lease held by ``holder`` with ``fence``; ``LeaseLost`` otherwise."""

    async def release_lease(self, agent: str, holder: str, fence: int) -> bool:
        """End a lease early (the agent stopped); False when it was no longer ours."""

    async def lease(self, agent: str) -> Lease | None:
        """The agent's current (or last) lease."""

    async def leases(self) -> list[Lease]:
        """Every agent's current (or last) lease."""

    # --- tokens ----------------------------------------------------------------------------
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
        """Store a new token's digest."""

    async def find_token(self, prefix: str) -> TokenRecord | None:
        """The token with this prefix (one index probe), revoked or not."""

    async def get_token(self, token_id: int) -> TokenRecord:
        """One token by id (``NotFound`` otherwise)."""

    async def list_tokens(self, name: str | None = None) -> list[TokenRecord]:
        """Every token, or those of one principal."""

    async def revoke_token(self, token_id: int, audit: AuditEvent | None = None) -> TokenRecord:
        """Mark a token revoked from now on (idempotent); ``LastOperatorToken`` (409) if it is
        the last active operator token, checked in the same transaction."""

    # --- audit -----------------------------------------------------------------------------
    async def record(self, event: AuditEvent) -> AuditRecord:
        """Append one audit record on its own (for refusals and reads that must be logged)."""

    async def audit(self, query: AuditQuery) -> list[AuditRecord]:
        """Audit records matching ``query``, in chain order."""

    async def verify_audit(self, checkpoints: list[Checkpoint] | None = None) -> AuditVerification:
        """Walk the whole chain and report every finding, comparing it with ``checkpoints``
        (signed heads kept outside the store) when given."""

    def use_audit_key(self, key: bytes) -> None:
        """Key the chain's HMAC (see :func:`mcos.domain.audit.audit_key`); needed to write."""

    async def audit_tip(self) -> Checkpoint:
        """The newest record's seq and hash (0 and the genesis hash when there is none), and
        where keyed hashing began, timed now: what a checkpoint records."""

    # --- dashboard sessions ----------------------------------------------------------------
    async def create_session(
        self, id_hash: str, token_id: int, operator: str, lifetime: timedelta
    ) -> DashboardSession:
        """Open a dashboard session (the id itself is never stored, only its hash)."""

    async def find_session(self, id_hash: str) -> DashboardSession | None:
        """The session with this id hash, ended or not."""

    async def end_session(self, id_hash: str) -> DashboardSession | None:
        """Mark a session ended from now on (idempotent); None when there is no such session."""

    # --- trace ---------------------------------------------------------------------------
    async def save_trace(self, trace: StoredTrace) -> StoredTrace:
        """Store a trace and its links to messages; a trace with the same id already stored is
        returned as it is (a re-post changes nothing)."""

    async def trace(self, trace_id: str) -> StoredTrace | None:
        """One trace by id."""

    async def traces(
        self,
        *,
        agent: str | None = None,
        thread: int | None = None,
        message: int | None = None,
        since: datetime | None = None,
        limit: int = 50,
    ) -> list[StoredTrace]:
        """Traces newest first: of one agent, touching a thread or one message (woke by it or
        sent it), started at or after ``since``."""

    async def metered_calls(self, agent: str, reservations: Sequence[int]) -> dict[int, int]:
        """The micro-dollars Mission Control recorded for ``agent``'s calls held under each of
        ``reservations`` (absent: no call recorded under it)."""

    async def delete_traces_before(self, cutoff: datetime) -> int:
        """Delete traces of turns started before ``cutoff``; how many."""

    # --- dash: message search ----------------------------------------------------------------
    async def search_messages(self, search: MessageSearch) -> list[MessageHit]:
        """Messages matching ``search``, newest first, each with the state of its copies."""

    # --- kbpg: knowledge chunks ----------------------------------------------------------------
    async def put_knowledge_chunks(
        self, owner: str, path: str, offset: int, chunks: Sequence[KnowledgeChunk]
    ) -> None:
        """Replace ``path``'s chunks from place ``offset`` on (0: the whole file) with ``chunks``
        (a long file is sent in batches). Raises :class:`~mcos.exceptions.Conflict` on a store
        that keeps no knowledge (SQLite: agents search their own index there)."""

    async def delete_knowledge_file(self, owner: str, path: str) -> int:
        """Forget ``path``'s chunks; how many went."""

    async def search_knowledge(
        self, owners: Sequence[str], query: str, k: int
    ) -> list[KnowledgeChunkHit]:
        """The best ``k`` chunks of ``owners`` for free-text ``query``, best first."""

    # --- netns ---------------------------------------------------------------------------------
    async def release_claims(self, inbox: str) -> int:
        """Make every claimed, unacked delivery of ``inbox`` claimable now (as if its
        visibility had lapsed; attempts unchanged, the old receipts stale at the next claim);
        how many. For a new instance of an agent: the claims of the one it replaces (which
        may have lost its network while holding them) would otherwise wait out their
        visibility."""

    # --- wsync: workspace sync ---------------------------------------------------------------
    async def put_workspace_blob(self, agent: str, sha256: str, content: bytes) -> bool:
        """Keep ``content`` (whose hash the caller checked) among ``agent``'s blobs; whether
        it was new."""

    async def workspace_blob(self, agent: str, sha256: str) -> bytes | None:
        """One of ``agent``'s blobs, or None."""

    async def commit_workspace(
        self, agent: str, fence: int | None, files: Sequence[WorkspaceFile]
    ) -> WorkspaceManifest:
        """Make ``files`` the agent's latest manifest (a new version, unless it is the same as
        the latest: a retried push changes nothing) and sweep blobs no longer named — in one
        transaction that holds the agent's lease row, so a push whose ``fence`` is older than
        the current lease (or missing once one was issued) is refused with
        :class:`~mcos.exceptions.Fenced` and never overwrites. A file naming a blob the agent
        does not hold is refused with :class:`~mcos.exceptions.InvalidRequest`."""

    async def workspace_manifest(self, agent: str) -> WorkspaceManifest:
        """The agent's latest manifest (version 0, no files, when nothing was pushed)."""

    async def put_workspace_blobs(
        self, agent: str, blobs: Sequence[tuple[str, bytes]]
    ) -> list[bool]:
        """Keep each ``(sha256, content)`` (hashes checked by the caller) among ``agent``'s
        blobs in one transaction; whether each was new, in order."""

    async def workspace_blobs(self, agent: str, hashes: Sequence[str], max_bytes: int) -> BlobBatch:
        """The bytes of the first of ``hashes`` that fit ``max_bytes`` together (at least the
        first, whatever its size), the rest as ``left``; only their sizes are read until the
        batch is chosen. Hashes ``agent`` holds no blob for come back as ``unknown`` (and no
        bytes with them)."""

    # --- scale: batched lease renewal ---------------------------------------------------------
    async def renew_leases(
        self, holder: str, leases: Sequence[tuple[str, int]], ttl: timedelta
    ) -> list[Lease | LeaseLost]:
        """Renew each ``(agent, fence)`` of ``holder`` exactly as :meth:`renew_lease` would, in
        one transaction (a supervisor renews all of its host's leases in one request): the
        results in the order given, a lease no longer ours answered by its ``LeaseLost`` (not
        raised: the others are renewed all the same). Agents must not repeat."""
