"""The wire format of the ``/v1`` API, shared by the server and the typed client.

One set of pydantic models describes every request and response, so the OpenAPI document, the
server's validation and the client's parsing cannot drift apart.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from mcos.domain import bounded
from mcos.domain.agent_state import AgentStatus
from mcos.domain.audit import AuditRecord, FindingKind
from mcos.domain.heartbeat import CacheTTL, valid_cron
from mcos.domain.leases import Lease
from mcos.domain.messages import (
    Delivery,
    DeliveryState,
    Message,
    MessageKind,
    Priority,
    RecipientKind,
)
from mcos.domain.paging import Page
from mcos.domain.tokens import PrincipalKind, TokenRecord

NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,62}$"
MAX_ID = 2**63 - 1
"""The largest id, sequence number or fence either store can hold (a signed 64-bit integer)."""

FreeJson = Annotated[
    dict[str, Any],
    AfterValidator(bounded.check),
    Field(
        description=f"Any JSON object of at most {bounded.LIMITS.depth} levels, "
        f"{bounded.LIMITS.keys} keys in all and {bounded.LIMITS.size} bytes."
    ),
]
"""A free-form JSON object from a request, held to :data:`mcos.domain.bounded.LIMITS`."""


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ErrorBody(_Out):
    """The one shape of every error response."""

    code: str = Field(description="Machine-readable error code, e.g. `forbidden`.")
    message: str = Field(description="What went wrong and what to do, for a person.")
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorResponse(_Out):
    """Envelope of an error response."""

    error: ErrorBody


class SendRequest(_In):
    """A message to send; the sender is the authenticated caller."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"to": "gene", "subject": "Daily numbers", "body": "Revenue by 10:00, please."}
            ]
        },
    )

    to: str = Field(pattern=NAME_PATTERN, description="An agent, a topic or a human.")
    kind: MessageKind = MessageKind.REQUEST
    priority: Priority = Priority.NORMAL
    subject: str = Field(default="", max_length=500)
    body: str = Field(default="", max_length=200_000)
    reply_to: int | None = Field(default=None, ge=1, le=MAX_ID)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)
    meta: Annotated[dict[str, str], AfterValidator(bounded.check)] = Field(
        default_factory=dict, max_length=50
    )
    sender: str | None = Field(
        default=None,
        description="Refused unless it is the caller: the sender is stamped from the token.",
    )
    expires_at: AwareDatetime | None = Field(
        default=None,
        description="Optional: an undelivered copy is dead-lettered as `expired` after this.",
    )
    ttl_seconds: float | None = Field(
        default=None,
        gt=0,
        le=30 * 86_400,
        description="Optional, instead of `expires_at`: seconds from when it is stored.",
    )

    @model_validator(mode="after")
    def _one_expiry(self) -> SendRequest:
        if self.expires_at is not None and self.ttl_seconds is not None:
            msg = "give expires_at or ttl_seconds, not both"
            raise ValueError(msg)
        return self


class SendBatchRequest(_In):
    """Several messages sent in one transaction: all stored, in order, or none."""

    messages: list[SendRequest] = Field(min_length=1, max_length=100)


class MessageOut(_Out):
    """A stored message."""

    id: int
    sender: str
    to: str
    recipient_kind: RecipientKind
    kind: MessageKind
    priority: Priority
    subject: str
    body: str
    thread_id: int
    reply_to: int | None
    idempotency_key: str | None
    created_at: datetime
    meta: dict[str, str]

    @classmethod
    def of(cls, m: Message) -> MessageOut:
        """The wire form of a message."""
        return cls(
            id=m.id,
            sender=m.sender,
            to=m.recipient,
            recipient_kind=m.recipient_kind,
            kind=m.kind,
            priority=m.priority,
            subject=m.subject,
            body=m.body,
            thread_id=m.thread_id,
            reply_to=m.reply_to,
            idempotency_key=m.idempotency_key,
            created_at=m.created_at,
            meta=m.meta,
        )


class SendResponse(_Out):
    """What a send stored."""

    message: MessageOut
    deliveries: int
    created: bool = Field(description="False when this was a repeat of an idempotency key.")


class SendBatchResponse(_Out):
    """What a batch send stored, one result per message in the request's order."""

    results: list[SendResponse]


class DeliveryOut(_Out):
    """One delivery of a message to one inbox, with the receipt needed to ack it."""

    id: int
    inbox: str
    state: DeliveryState
    attempts: int
    deadline: datetime | None
    receipt: str | None
    last_error: str | None
    message: MessageOut
    deferrals: int = Field(
        default=0, description="Claims handed back because the recipient could not act."
    )
    visible_at: datetime | None = Field(
        default=None, description="When a queued delivery may next be claimed (not-before)."
    )
    expires_at: datetime | None = Field(default=None, description="The sender's expiry, if any.")

    @classmethod
    def of(cls, d: Delivery) -> DeliveryOut:
        """The wire form of a delivery."""
        return cls(
            id=d.id,
            inbox=d.inbox,
            state=d.state,
            attempts=d.attempts,
            deadline=d.deadline,
            receipt=d.receipt,
            last_error=d.last_error,
            message=MessageOut.of(d.message),
            deferrals=d.deferrals,
            visible_at=d.visible_at,
            expires_at=d.expires_at,
        )


class InboxResponse(_Out):
    """Deliveries claimed from an inbox (empty when the wait ended with nothing)."""

    inbox: str
    deliveries: list[DeliveryOut]


class AckRequest(_In):
    """The receipt of the claim being finished."""

    receipt: str = Field(min_length=1, max_length=100)


class AckItem(_In):
    """One delivery to ack in a batch."""

    id: int = Field(ge=1, le=MAX_ID)
    receipt: str = Field(min_length=1, max_length=100)


class AckBatchRequest(_In):
    """Several deliveries of one inbox to ack together."""

    items: list[AckItem] = Field(min_length=1, max_length=500)


class AckBatchResponse(_Out):
    """Result of a batch ack."""

    acked: int


class NackRequest(_In):
    """Give a claim back; retried after ``delay_seconds`` or the policy's backoff."""

    receipt: str = Field(min_length=1, max_length=100)
    error: str = Field(default="", max_length=2000)
    delay_seconds: float | None = Field(default=None, ge=0, le=86_400)


class DeferRequest(_In):
    """Hand a claim back because the recipient could not act: no attempt is used, and the
    delivery is claimable again from ``not_before`` (or ``delay_seconds`` from now)."""

    receipt: str = Field(min_length=1, max_length=100)
    reason: str = Field(min_length=1, max_length=2000, description="Why it could not act.")
    not_before: AwareDatetime | None = Field(
        default=None, description="On Mission Control's clock; at most 7 days ahead."
    )
    delay_seconds: float | None = Field(default=None, ge=0, le=7 * 86_400)

    @model_validator(mode="after")
    def _one_time(self) -> DeferRequest:
        if self.not_before is not None and self.delay_seconds is not None:
            msg = "give not_before or delay_seconds, not both"
            raise ValueError(msg)
        return self


class DeferBatchRequest(_In):
    """Several claims of one inbox handed back together (all or none)."""

    items: list[AckItem] = Field(min_length=1, max_length=500)
    reason: str = Field(min_length=1, max_length=2000, description="Why it could not act.")
    not_before: AwareDatetime | None = Field(
        default=None, description="On Mission Control's clock; at most 7 days ahead."
    )
    delay_seconds: float | None = Field(default=None, ge=0, le=7 * 86_400)

    @model_validator(mode="after")
    def _one_time(self) -> DeferBatchRequest:
        if self.not_before is not None and self.delay_seconds is not None:
            msg = "give not_before or delay_seconds, not both"
            raise ValueError(msg)
        return self


class DeferBatchResponse(_Out):
    """Result of a batch deferral."""

    deferred: int
    visible_at: datetime | None = Field(description="When they may be claimed again.")


class AgentOut(_Out):
    """An agent as Mission Control sees it."""

    name: str
    role: str
    host: str
    reports_to: str | None
    last_seen_at: datetime | None
    queued: int
    claimed: int
    dead: int
    state: AgentStatus | None = Field(default=None, description="As its runtime last reported.")
    state_detail: str = ""
    state_until: datetime | None = None
    state_at: datetime | None = None
    state_info: dict[str, Any] = Field(default_factory=dict)
    spent_today_usd: float = 0.0
    budget_usd: float | None = None


class TimeResponse(_Out):
    """Mission Control's authoritative clock."""

    now: datetime
    unix: float


class TokenCreateRequest(_In):
    """A new token for an agent or an operator."""

    kind: PrincipalKind
    name: str = Field(pattern=NAME_PATTERN)
    label: str = Field(default="", max_length=200)
    expires_in_seconds: int | None = Field(default=None, ge=60, le=10 * 366 * 86_400)


class TokenOut(_Out):
    """A stored token (never its secret)."""

    id: int
    prefix: str
    kind: PrincipalKind
    name: str
    label: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, t: TokenRecord) -> TokenOut:
        """The wire form of a token record."""
        return cls(
            id=t.id,
            prefix=t.prefix,
            kind=t.kind,
            name=t.name,
            label=t.label,
            created_at=t.created_at,
            expires_at=t.expires_at,
            revoked_at=t.revoked_at,
        )


class TokenCreated(_Out):
    """A new token: ``token`` is shown this once and never again."""

    token: str
    record: TokenOut


class LeaseAcquire(_In):
    """A supervisor asks to run an agent."""

    holder: str = Field(min_length=1, max_length=200, description="The supervisor's identity.")
    host: str = Field(default="", max_length=100)
    ttl_seconds: float = Field(default=15, ge=1, le=600)


class LeaseRenew(_In):
    """A supervisor keeps running an agent."""

    holder: str = Field(min_length=1, max_length=200)
    fence: int = Field(ge=1, le=MAX_ID)
    ttl_seconds: float = Field(default=15, ge=1, le=600)


class LeaseRelease(_In):
    """A supervisor stopped an agent."""

    holder: str = Field(min_length=1, max_length=200)
    fence: int = Field(ge=1, le=MAX_ID)


class LeaseOut(_Out):
    """An agent's lease; ``live`` judged on Mission Control's clock."""

    agent: str
    holder: str
    host: str
    fence: int
    expires_at: datetime
    acquired_at: datetime
    renewed_at: datetime
    live: bool | None = None

    @classmethod
    def of(cls, lease: Lease, now: datetime | None = None) -> LeaseOut:
        """The wire form of a lease."""
        return cls(
            agent=lease.agent,
            holder=lease.holder,
            host=lease.host,
            fence=lease.fence,
            expires_at=lease.expires_at,
            acquired_at=lease.acquired_at,
            renewed_at=lease.renewed_at,
            live=None if now is None else lease.live(now),
        )


class IncidentReport(_In):
    """An agent's (or a human's) report of an observation."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "severity": "P2",
                    "summary": "Checkout errors above 5% for 10 minutes",
                    "evidence": "Stripe dashboard: 41 of 700 payments failed since 09:10.",
                }
            ]
        },
    )

    severity: Literal["P3", "P2", "P1", "P0"]
    summary: str = Field(min_length=1, max_length=300)
    evidence: str = Field(default="", max_length=8000)
    observation: str = Field(
        default="",
        max_length=300,
        description="What was observed, to group related reports (default: the summary).",
    )


class IncidentDecision(_In):
    """A confirmation vote (optionally at another severity), or a resolution/dismissal."""

    severity: Literal["P2", "P1", "P0"] | None = None
    reason: str = Field(min_length=1, max_length=2000)
    actor: str | None = Field(
        default=None, description="Refused unless it is the caller: decisions are the token's."
    )


class IncidentEventOut(_Out):
    """One step of an incident's timeline."""

    at: datetime
    actor: str
    action: str
    severity: str
    reason: str


class IncidentOut(_Out):
    """An incident at its gate, with its timeline."""

    id: int
    severity: str
    reported_as: str
    state: str
    summary: str
    evidence: str
    reporter: str
    reports: int
    created_at: datetime
    updated_at: datetime
    gate: str | None = None
    timeline: list[IncidentEventOut] = Field(default_factory=list)
    grouped: bool = False
    gate_met: bool = False
    notified: list[str] = Field(default_factory=list)


class ApprovalRequest(_In):
    """A request for a governed action."""

    action: str = Field(pattern=r"^[a-z][a-z0-9_.:-]*$", max_length=100)
    payload: FreeJson = Field(default_factory=dict)
    rationale: str = Field(min_length=1, max_length=4000)
    executor: str | None = Field(default=None, description="The agent a directive goes to.")
    constraints: str = Field(default="", max_length=4000)
    report_every: str | None = Field(
        default=None,
        description="Cron schedule of the reports the executor promises (e.g. weekly: "
        "'0 9 * * 1'); its runtime schedules them when it acknowledges the directive.",
    )
    tainted: bool = Field(
        default=False,
        description="Raised from a turn holding untrusted content: marked so for the "
        "committee, and the requester's own seat never counts towards its quorum.",
    )

    @field_validator("report_every")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        if v is not None and not valid_cron(v):
            msg = f"{v!r} is not a cron expression (minute hour day month weekday)"
            raise ValueError(msg)
        return v


class AuthorizeRequest(_In):
    """Ask before acting: may the caller do this governed action now?"""

    action: str = Field(pattern=r"^[a-z][a-z0-9_.:-]*$", max_length=100)
    payload: FreeJson = Field(default_factory=dict)
    approval_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    tainted: bool = Field(
        default=False,
        description="The caller's turn holds untrusted content: only an approved request for "
        "exactly this action and payload allows it, even where the caller may act alone.",
    )


class AuthorizeOut(_Out):
    """Allowed, and on what grounds (``alone`` or ``approval N``)."""

    action: str
    allowed: bool
    by: str


class VoteRequest(_In):
    """A committee member's vote."""

    vote: Literal["approve", "deny"]
    rationale: str = Field(min_length=1, max_length=4000)


class VetoRequest(_In):
    """A human's veto."""

    reason: str = Field(min_length=1, max_length=4000)


class VoteOut(_Out):
    """One vote."""

    voter: str
    vote: str
    rationale: str
    at: datetime


class ApprovalOut(_Out):
    """A request, its committee, its votes and its outcome."""

    id: int
    action: str
    payload: dict[str, Any]
    requester: str
    rationale: str
    quorum: str
    state: str
    executor: str | None
    constraints: str
    report_every: str | None = None
    created_at: datetime
    expires_at: datetime
    decided_at: datetime | None
    decided_by: str
    reason: str
    directive_id: int | None
    acknowledged_at: datetime | None
    votes: list[VoteOut] = Field(default_factory=list)
    notified: list[str] = Field(default_factory=list)


class RuntimeEvent(_In):
    """Something an agent's runtime did or refused, for the audit log (``runtime.*``)."""

    action: str = Field(pattern=r"^runtime\.[a-z_]+(\.[a-z_]+)*$", max_length=100)
    targets: Annotated[dict[str, str], AfterValidator(bounded.check)] = Field(
        default_factory=dict, max_length=20
    )
    detail: FreeJson = Field(default_factory=dict, max_length=20)
    outcome: Literal["ok", "refused", "failed"] = "ok"


class AuditOut(_Out):
    """One audit record."""

    seq: int
    at: datetime
    actor: str
    action: str
    targets: dict[str, Any]
    detail: dict[str, Any]
    outcome: str
    prev_hash: str
    hash: str

    @classmethod
    def of(cls, r: AuditRecord) -> AuditOut:
        """The wire form of an audit record."""
        return cls(
            seq=r.seq,
            at=r.at,
            actor=r.actor,
            action=r.action,
            targets=r.targets,
            detail=r.detail,
            outcome=r.outcome,
            prev_hash=r.prev_hash,
            hash=r.hash,
        )


class AuditFinding(_Out):
    """One thing audit verification found wrong."""

    kind: FindingKind
    """What was found (see docs/api.md, "Audit log")."""
    seq: int | None
    """The record concerned, when there is one."""
    message: str


class AuditCheckpointInfo(_Out):
    """The signed checkpoint file the store was compared with."""

    path: str | None
    """Where it is (``STATE/audit.checkpoint``); None when the server has no state directory."""
    lines: int
    """Lines whose signature verified."""
    first_seq: int | None
    """The head when the file was begun: records up to it are covered only by the chain."""
    first_at: datetime | None
    latest_seq: int | None
    latest_hash: str | None
    latest_at: datetime | None


class AuditVerifyResult(_Out):
    """Outcome of walking the audit chain and comparing it with the checkpoint file."""

    intact: bool
    """True when there are no findings."""
    records: int
    head_seq: int
    keyed_from: int
    """The first record hashed with HMAC-SHA256 under the server's audit key."""
    legacy_records: int
    """Records before ``keyed_from`` (written by an older mcos), verified as plain SHA-256."""
    findings: list[AuditFinding]
    checkpoint: AuditCheckpointInfo


class HealthResponse(_Out):
    """Liveness of the server and its store."""

    status: Literal["ok", "degraded"]
    store: str
    schema_version: int


class ReservationRequest(_In):
    """A model call about to be made (direct mode): Mission Control prices its worst case with
    its own price of the agent's configured model; no dollar figure is taken from the agent."""

    model: str = Field(min_length=1, max_length=200)
    """The agent's configured model id (any other is refused)."""
    prompt_tokens: int = Field(ge=0, le=100_000_000)
    """A bound on the prompt's tokens that is never low (its UTF-8 bytes), or the exact count."""
    max_output: int = Field(ge=1, le=1_000_000)
    """The output the call asks for; the answer may grant less (what the budget pays for)."""
    cache_ttl: CacheTTL = CacheTTL.NONE
    """The cache breakpoints the request carries (what its prompt can be billed as)."""
    purpose: str = Field(default="", max_length=100)
    batch: bool = False
    """The call goes through the provider's batch API: reserved at the batch rates."""


class ReservationOut(_Out):
    """A granted reservation; ``warning`` once the day passes 80% of a cap."""

    id: int
    day: str
    verdict: str
    warning: bool
    max_output: int
    """The output the call may ask for: at most what was asked, less when only that fits."""
    reserved_usd: float
    """The call's worst case with ``max_output``, held until the call is reported."""
    committed_usd: float
    committed_tokens: int
    budget_usd: float | None
    budget_tokens: int | None


class CallReport(_In):
    """One model call's tokens as the runtime saw them (direct mode), settling its reservation.
    Mission Control prices them itself; no cost is taken from the agent."""

    reservation_id: int = Field(ge=1, le=MAX_ID)
    provider: str = Field(max_length=50)
    model: str = Field(min_length=1, max_length=200)
    purpose: str = Field(default="", max_length=100)
    input_tokens: int = Field(ge=0, le=100_000_000)
    output_tokens: int = Field(ge=0, le=100_000_000)
    cache_read_tokens: int = Field(default=0, ge=0, le=100_000_000)
    cache_write_tokens: int = Field(default=0, ge=0, le=100_000_000)
    cache_write_1h_tokens: int = Field(default=0, ge=0, le=100_000_000)
    """The part of ``cache_write_tokens`` written to the 1-hour cache (priced higher)."""
    batch: bool = False
    """The call went through the provider's batch API: priced at the batch rates."""

    @model_validator(mode="after")
    def _one_hour_within_writes(self) -> CallReport:
        if self.cache_write_1h_tokens > self.cache_write_tokens:
            msg = "cache_write_1h_tokens is part of cache_write_tokens: it cannot be larger"
            raise ValueError(msg)
        return self


class UsageOut(_Out):
    """One agent's model use on one UTC day."""

    day: str
    agent: str
    calls: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_usd: float
    held_usd: float


class StateReport(_In):
    """What an agent's runtime reports about itself."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"state": "idle", "detail": "beat done"}]}
    )

    state: AgentStatus
    detail: str = Field(default="", max_length=2000)
    until: datetime | None = None
    info: FreeJson = Field(default_factory=dict)


# --- channels ----------------------------------------------------------------------------------
CHANNEL_KEY_PATTERN = r"^channel:(telegram|discord|email):[0-9a-f]{16}$"


class ChannelLeaseAcquire(LeaseAcquire):
    """A channel's receiver asks to be the one poller of its account."""

    key: str = Field(pattern=CHANNEL_KEY_PATTERN, description="kind and credential hash")


class ChannelLeaseRenew(LeaseRenew):
    """The channel's receiver keeps polling."""

    key: str = Field(pattern=CHANNEL_KEY_PATTERN)


class ChannelLeaseRelease(LeaseRelease):
    """The channel's receiver stopped."""

    key: str = Field(pattern=CHANNEL_KEY_PATTERN)


class ChannelInboundIn(_In):
    """One item a channel received, handed to Mission Control for the bound agent."""

    sender: str = Field(max_length=300)
    sender_id: str = Field(default="", max_length=300)
    text: str = Field(max_length=100_000)
    at: datetime
    ref: str = Field(min_length=1, max_length=200, description="unique within the channel")
    reply_to: str = Field(default="", max_length=300)
    subject: str = Field(default="", max_length=500)
    urgent: bool = False
    labels: list[str] = Field(default_factory=list, max_length=20)
    action: str = Field(default="", max_length=64)


class ChannelInboundOut(_Out):
    """Where the item went: the bound agent's message (``created`` false on a repeat)."""

    message_id: int
    created: bool
    paged: int = 0


class PageOut(_Out):
    """A page to a human: what about, on which channel, and whether they acknowledged it."""

    id: int
    human: str
    key: str
    kind: str
    subject: str
    state: str
    channel: str
    attempts: int
    error: str
    created_at: datetime
    sent_at: datetime | None
    acked_at: datetime | None
    acked_by: str

    @classmethod
    def of(cls, page: Page) -> PageOut:
        """From the domain object."""
        return cls(
            id=page.id, human=page.human, key=page.key, kind=page.kind.value,
            subject=page.subject, state=page.state, channel=page.channel,
            attempts=page.attempts, error=page.error, created_at=page.created_at,
            sent_at=page.sent_at, acked_at=page.acked_at, acked_by=page.acked_by,
        )  # fmt: skip


# --- scale: batched lease renewal -----------------------------------------------------------------
class LeaseRenewItem(_In):
    """One lease of a batch renewal: the agent and the fence its supervisor holds."""

    agent: str = Field(min_length=1, max_length=100)
    fence: int = Field(ge=1, le=MAX_ID)


class LeaseRenewBatch(_In):
    """A supervisor keeps running all of its host's agents: one request for every lease."""

    holder: str = Field(min_length=1, max_length=200)
    ttl_seconds: float = Field(default=15, ge=1, le=600)
    leases: list[LeaseRenewItem] = Field(min_length=1, max_length=2000)

    @model_validator(mode="after")
    def _each_agent_once(self) -> LeaseRenewBatch:
        seen: set[str] = set()
        for i, item in enumerate(self.leases):
            if item.agent in seen:
                msg = f"leases[{i}]: agent {item.agent!r} is listed twice; name each agent once"
                raise ValueError(msg)
            seen.add(item.agent)
        return self


class LeaseRenewResult(_Out):
    """One lease's outcome: the renewed lease, or the error a single renewal would have
    answered (``lease_lost``: stop that agent now; ``not_found``; ``forbidden``)."""

    agent: str
    lease: LeaseOut | None = None
    error: ErrorBody | None = None


class LeaseRenewBatchOut(_Out):
    """Every lease's outcome, in the order asked."""

    results: list[LeaseRenewResult]
