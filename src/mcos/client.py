"""Typed HTTP client for Mission Control's ``/v1`` API, sync and async.

Each endpoint is described once, as a :class:`Call` (method, path, parameters, body and how to
parse the answer); :class:`Client` and :class:`AsyncClient` only differ in how they perform it.
Errors come back as the same :mod:`mcos.exceptions` classes the server raised.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Self, TypeVar

import httpx
from pydantic import TypeAdapter

from mcos import exceptions as exc
from mcos.api_knowledge import ChunkIn, ChunksPut, ChunksPutOut, FileDeleted, KnowledgeSearchOut
from mcos.api_models import (
    AckBatchResponse,
    AgentOut,
    ApprovalOut,
    ApprovalRequest,
    AuditOut,
    AuditVerifyResult,
    AuthorizeOut,
    CallReport,
    ChannelInboundIn,
    ChannelInboundOut,
    ChannelLeaseAcquire,
    ChannelLeaseRelease,
    ChannelLeaseRenew,
    DeferBatchResponse,
    DeliveryOut,
    HealthResponse,
    InboxResponse,
    IncidentOut,
    IncidentReport,
    LeaseAcquire,
    LeaseOut,
    LeaseRelease,
    LeaseRenew,
    LeaseRenewBatch,
    LeaseRenewBatchOut,
    LeaseRenewItem,
    MessageOut,
    PageOut,
    ReservationOut,
    ReservationRequest,
    RuntimeEvent,
    SendBatchRequest,
    SendBatchResponse,
    SendRequest,
    SendResponse,
    StateReport,
    TimeResponse,
    TokenCreated,
    TokenOut,
    UsageOut,
)
from mcos.api_operate import MessageSearchOut, RestartRequestOut, RestartRequestsOut
from mcos.api_workspace import (
    BlobOut,
    BlobsOut,
    BlobUpload,
    FetchOut,
    FileIn,
    ManifestIn,
    ManifestOut,
)
from mcos.domain.agent_state import AgentStatus
from mcos.domain.heartbeat import CacheTTL
from mcos.domain.leases import FENCE_HEADER
from mcos.domain.messages import MessageKind, Priority
from mcos.domain.tokens import PrincipalKind, redact
from mcos.tls import verified_context

T = TypeVar("T")

_ERRORS: dict[str, type[exc.McosError]] = {
    cls.code: cls
    for cls in (
        exc.AuthError,
        exc.Forbidden,
        exc.NotFound,
        exc.Conflict,
        exc.IdempotencyConflict,
        exc.StaleReceipt,
        exc.InvalidRequest,
        exc.OverBudget,
        exc.LeaseHeld,
        exc.LeaseLost,
        exc.Fenced,
        exc.LastOperatorToken,
        exc.TooManyReports,
        exc.TooManyMessages,
        exc.StoreUnavailable,
        exc.SchemaOutOfDate,
    )
}


class ApiError(exc.McosError):
    """An error answer whose code this client does not know."""


class ServerUnreachable(exc.McosError):
    """Mission Control did not answer at all."""

    code = "unreachable"
    status = 0


def _error(response: httpx.Response) -> exc.McosError:
    """The exception an error response stands for."""
    try:
        body = response.json()["error"]
        code, message, details = body["code"], body["message"], body.get("details", {})
    except (ValueError, KeyError, TypeError):
        code, message, details = "error", response.text[:500] or response.reason_phrase, {}
    cls = _ERRORS.get(code, ApiError)
    error = cls.__new__(cls)
    exc.McosError.__init__(error, f"{response.status_code} {code}: {message}", **details)
    error.code = code
    error.status = response.status_code
    return error


@dataclass(frozen=True)
class Call(Generic[T]):
    """One API request and how to read its answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: dict[str, Any] = field(default_factory=dict)
    json: Any = None
    timeout: float | None = None


def _model(adapter: TypeAdapter[T]) -> Callable[[httpx.Response], T]:
    return lambda r: adapter.validate_json(r.content)


def _none(_: httpx.Response) -> None:
    return None


def _text(r: httpx.Response) -> str:
    return r.text


def _clean(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


_SEND = TypeAdapter(SendResponse)
_CHUNKS_PUT = TypeAdapter(ChunksPutOut)
_FILE_DELETED = TypeAdapter(FileDeleted)
_KNOWLEDGE_SEARCH = TypeAdapter(KnowledgeSearchOut)
_SEND_BATCH = TypeAdapter(SendBatchResponse)
_INBOX = TypeAdapter(InboxResponse)
_DELIVERY = TypeAdapter(DeliveryOut)
_DELIVERIES = TypeAdapter(list[DeliveryOut])
_MESSAGE = TypeAdapter(MessageOut)
_MESSAGES = TypeAdapter(list[MessageOut])
_AGENTS = TypeAdapter(list[AgentOut])
_AGENT = TypeAdapter(AgentOut)
_TIME = TypeAdapter(TimeResponse)
_HEALTH = TypeAdapter(HealthResponse)
_TOKEN_CREATED = TypeAdapter(TokenCreated)
_TOKEN = TypeAdapter(TokenOut)
_TOKENS = TypeAdapter(list[TokenOut])
_AUDIT = TypeAdapter(list[AuditOut])
_AUDIT_ONE = TypeAdapter(AuditOut)
_LEASE = TypeAdapter(LeaseOut)
_INBOUND = TypeAdapter(ChannelInboundOut)
_PAGE = TypeAdapter(PageOut)
_PAGES = TypeAdapter(list[PageOut])
_INCIDENT = TypeAdapter(IncidentOut)
_INCIDENTS = TypeAdapter(list[IncidentOut])
_APPROVAL = TypeAdapter(ApprovalOut)
_AUTHORIZE = TypeAdapter(AuthorizeOut)
_APPROVALS = TypeAdapter(list[ApprovalOut])
_INBOUND = TypeAdapter(ChannelInboundOut)
_LEASES = TypeAdapter(list[LeaseOut])
_VERIFY = TypeAdapter(AuditVerifyResult)
_ACKED = TypeAdapter(AckBatchResponse)
_DEFERRED = TypeAdapter(DeferBatchResponse)
_RESERVATION = TypeAdapter(ReservationOut)
_USAGE = TypeAdapter(list[UsageOut])


class Calls:
    """Every endpoint of ``/v1`` as a :class:`Call`; shared by both clients."""

    # --- kbpg: knowledge chunks ---
    @staticmethod
    def put_knowledge_chunks(
        path: str, chunks: list[ChunkIn], offset: int = 0
    ) -> Call[ChunksPutOut]:
        """Replace a knowledge file's chunks from ``offset`` on (PostgreSQL fleets)."""
        body = ChunksPut(path=path, offset=offset, chunks=chunks)
        return Call("PUT", "/v1/knowledge/chunks", _model(_CHUNKS_PUT), json=body.model_dump())

    @staticmethod
    def delete_knowledge_file(path: str) -> Call[FileDeleted]:
        return Call("DELETE", "/v1/knowledge/chunks", _model(_FILE_DELETED), params={"path": path})

    @staticmethod
    def search_knowledge(query: str, k: int = 5) -> Call[KnowledgeSearchOut]:
        return Call(
            "GET", "/v1/knowledge/search", _model(_KNOWLEDGE_SEARCH), params={"q": query, "k": k}
        )

    @staticmethod
    def send(
        to: str,
        body: str = "",
        *,
        subject: str = "",
        kind: MessageKind = MessageKind.REQUEST,
        priority: Priority = Priority.NORMAL,
        reply_to: int | None = None,
        idempotency_key: str | None = None,
        meta: dict[str, str] | None = None,
        expires_at: datetime | None = None,
        ttl_seconds: float | None = None,
    ) -> Call[SendResponse]:
        request = SendRequest(
            to=to,
            body=body,
            subject=subject,
            kind=kind,
            priority=priority,
            reply_to=reply_to,
            idempotency_key=idempotency_key,
            meta=meta or {},
            expires_at=expires_at,
            ttl_seconds=ttl_seconds,
        )
        return Call("POST", "/v1/messages", _model(_SEND), json=request.model_dump(mode="json"))

    @staticmethod
    def send_batch(messages: Sequence[SendRequest]) -> Call[SendBatchResponse]:
        """Up to 100 messages in one transaction: all stored, in order, or none."""
        request = SendBatchRequest(messages=list(messages))
        return Call(
            "POST", "/v1/messages/batch", _model(_SEND_BATCH), json=request.model_dump(mode="json")
        )

    @staticmethod
    def inbox(
        *,
        wait: float = 0,
        limit: int = 10,
        visibility: float = 30,
        inbox: str | None = None,
        gather: float = 0,
    ) -> Call[InboxResponse]:
        params = _clean(
            {
                "wait": wait,
                "limit": limit,
                "visibility": visibility,
                "inbox": inbox,
                "gather": gather or None,
            }
        )
        return Call("GET", "/v1/inbox", _model(_INBOX), params=params, timeout=wait + 10)

    @staticmethod
    def ack(delivery_id: int, receipt: str, *, inbox: str | None = None) -> Call[None]:
        return Call(
            "POST",
            f"/v1/deliveries/{delivery_id}/ack",
            _none,
            params=_clean({"inbox": inbox}),
            json={"receipt": receipt},
        )

    @staticmethod
    def ack_many(items: list[tuple[int, str]], *, inbox: str | None = None) -> Call[int]:
        body = {"items": [{"id": i, "receipt": r} for i, r in items]}
        return Call(
            "POST",
            "/v1/inbox/ack",
            lambda r: _ACKED.validate_json(r.content).acked,
            params=_clean({"inbox": inbox}),
            json=body,
        )

    @staticmethod
    def defer(
        delivery_id: int,
        receipt: str,
        *,
        reason: str,
        not_before: datetime | None = None,
        delay_seconds: float | None = None,
        inbox: str | None = None,
    ) -> Call[DeliveryOut]:
        """Hand a claim back unused (the recipient could not act); claimable from
        ``not_before`` (Mission Control's clock) or ``delay_seconds`` from now."""
        body = _clean(
            {
                "receipt": receipt,
                "reason": reason,
                "not_before": None if not_before is None else not_before.isoformat(),
                "delay_seconds": delay_seconds,
            }
        )
        return Call(
            "POST",
            f"/v1/deliveries/{delivery_id}/defer",
            _model(_DELIVERY),
            params=_clean({"inbox": inbox}),
            json=body,
        )

    @staticmethod
    def defer_many(
        items: list[tuple[int, str]],
        *,
        reason: str,
        not_before: datetime | None = None,
        delay_seconds: float | None = None,
        inbox: str | None = None,
    ) -> Call[DeferBatchResponse]:
        """Hand several claims of one inbox back unused, together (all or none)."""
        body = _clean(
            {
                "items": [{"id": i, "receipt": r} for i, r in items],
                "reason": reason,
                "not_before": None if not_before is None else not_before.isoformat(),
                "delay_seconds": delay_seconds,
            }
        )
        return Call(
            "POST",
            "/v1/inbox/defer",
            _model(_DEFERRED),
            params=_clean({"inbox": inbox}),
            json=body,
        )

    @staticmethod
    def nack(
        delivery_id: int,
        receipt: str,
        *,
        error: str = "",
        delay_seconds: float | None = None,
        inbox: str | None = None,
    ) -> Call[DeliveryOut]:
        body = {"receipt": receipt, "error": error, "delay_seconds": delay_seconds}
        return Call(
            "POST",
            f"/v1/deliveries/{delivery_id}/nack",
            _model(_DELIVERY),
            params=_clean({"inbox": inbox}),
            json=body,
        )

    @staticmethod
    def message(message_id: int) -> Call[MessageOut]:
        return Call("GET", f"/v1/messages/{message_id}", _model(_MESSAGE))

    @staticmethod
    def thread(thread_id: int) -> Call[list[MessageOut]]:
        return Call("GET", f"/v1/threads/{thread_id}", _model(_MESSAGES))

    @staticmethod
    def dead_letters(*, inbox: str | None = None, limit: int = 100) -> Call[list[DeliveryOut]]:
        params = _clean({"inbox": inbox, "limit": limit})
        return Call("GET", "/v1/dead-letters", _model(_DELIVERIES), params=params)

    @staticmethod
    def requeue(delivery_id: int) -> Call[DeliveryOut]:
        return Call("POST", f"/v1/dead-letters/{delivery_id}/requeue", _model(_DELIVERY))

    @staticmethod
    def agents() -> Call[list[AgentOut]]:
        return Call("GET", "/v1/agents", _model(_AGENTS))

    @staticmethod
    def agent(name: str) -> Call[AgentOut]:
        return Call("GET", f"/v1/agents/{name}", _model(_AGENT))

    @staticmethod
    def report_state(
        name: str,
        state: AgentStatus,
        detail: str = "",
        *,
        until: datetime | None = None,
        info: dict[str, Any] | None = None,
    ) -> Call[AgentOut]:
        """An agent's runtime reports its state."""
        body = StateReport(state=state, detail=detail, until=until, info=info or {})
        return Call(
            "PUT", f"/v1/agents/{name}/state", _model(_AGENT), json=body.model_dump(mode="json")
        )

    @staticmethod
    def reserve(
        model: str,
        prompt_tokens: int,
        max_output: int,
        *,
        cache_ttl: CacheTTL = CacheTTL.NONE,
        purpose: str = "",
        batch: bool = False,
    ) -> Call[ReservationOut]:
        """Reserve a model call's worst case, priced by Mission Control (direct mode): the answer's
        ``max_output`` is what the call may ask for (``OverBudget`` when not even a floor fits)."""
        body = ReservationRequest(
            model=model,
            prompt_tokens=prompt_tokens,
            max_output=max_output,
            cache_ttl=cache_ttl,
            purpose=purpose,
            batch=batch,
        )
        return Call(
            "POST",
            "/v1/usage/reservations",
            _model(_RESERVATION),
            json=body.model_dump(mode="json"),
        )

    @staticmethod
    def report_call(report: CallReport) -> Call[None]:
        """Record a model call's tokens and settle its reservation (Mission Control prices them)."""
        return Call("POST", "/v1/usage/calls", _none, json=report.model_dump())

    @staticmethod
    def usage(*, since: str | None = None, agent: str | None = None) -> Call[list[UsageOut]]:
        """Model use per agent per UTC day."""
        return Call(
            "GET", "/v1/usage", _model(_USAGE), params=_clean({"since": since, "agent": agent})
        )

    @staticmethod
    def record_event(event: RuntimeEvent) -> Call[AuditOut]:
        """An agent's runtime appends a ``runtime.*`` record to the audit log."""
        return Call("POST", "/v1/audit/events", _model(_AUDIT_ONE), json=event.model_dump())

    @staticmethod
    def acquire_lease(agent: str, holder: str, host: str, ttl: float) -> Call[LeaseOut]:
        """Take the right to run ``agent`` (``LeaseHeld`` names who has it)."""
        body = LeaseAcquire(holder=holder, host=host, ttl_seconds=ttl).model_dump()
        return Call("POST", f"/v1/leases/{agent}/acquire", _model(_LEASE), json=body)

    @staticmethod
    def renew_lease(agent: str, holder: str, fence: int, ttl: float) -> Call[LeaseOut]:
        """Keep it (``LeaseLost``: stop the agent now)."""
        body = LeaseRenew(holder=holder, fence=fence, ttl_seconds=ttl).model_dump()
        return Call("POST", f"/v1/leases/{agent}/renew", _model(_LEASE), json=body)

    @staticmethod
    def release_lease(agent: str, holder: str, fence: int) -> Call[None]:
        """Give it up after stopping the agent."""
        body = LeaseRelease(holder=holder, fence=fence).model_dump()
        return Call("POST", f"/v1/leases/{agent}/release", _none, json=body)

    @staticmethod
    def leases() -> Call[list[LeaseOut]]:
        """Every agent's lease."""
        return Call("GET", "/v1/leases", _model(_LEASES))

    # --- channels -----------------------------------------------------------------------------
    @staticmethod
    def acquire_channel_lease(
        channel: str, key: str, holder: str, host: str, ttl: float
    ) -> Call[LeaseOut]:
        """Become the one receiver of a channel account (``LeaseHeld`` names who is)."""
        body = ChannelLeaseAcquire(key=key, holder=holder, host=host, ttl_seconds=ttl)
        return Call(
            "POST", f"/v1/channels/{channel}/lease/acquire", _model(_LEASE),
            json=body.model_dump(),
        )  # fmt: skip

    @staticmethod
    def renew_channel_lease(
        channel: str, key: str, holder: str, fence: int, ttl: float
    ) -> Call[LeaseOut]:
        """Keep receiving (``LeaseLost``: stop now)."""
        body = ChannelLeaseRenew(key=key, holder=holder, fence=fence, ttl_seconds=ttl)
        return Call(
            "POST", f"/v1/channels/{channel}/lease/renew", _model(_LEASE), json=body.model_dump()
        )

    @staticmethod
    def release_channel_lease(channel: str, key: str, holder: str, fence: int) -> Call[None]:
        """Stop receiving."""
        body = ChannelLeaseRelease(key=key, holder=holder, fence=fence)
        return Call("POST", f"/v1/channels/{channel}/lease/release", _none, json=body.model_dump())

    @staticmethod
    def channel_inbound(channel: str, item: ChannelInboundIn) -> Call[ChannelInboundOut]:
        """Hand one received item to Mission Control for the channel's agent."""
        return Call(
            "POST", f"/v1/channels/{channel}/inbound", _model(_INBOUND),
            json=item.model_dump(mode="json"),
        )  # fmt: skip

    @staticmethod
    def pages(human: str | None = None, state: str | None = None) -> Call[list[PageOut]]:
        """Pages to humans, newest first."""
        params = {k: v for k, v in (("human", human), ("state", state)) if v is not None}
        return Call("GET", "/v1/pages", _model(_PAGES), params=params)

    @staticmethod
    def ack_page(page_id: int) -> Call[PageOut]:
        """Acknowledge a page as the person paged."""
        return Call("POST", f"/v1/pages/{page_id}/ack", _model(_PAGE))

    # --- governance ---------------------------------------------------------------------------
    @staticmethod
    def report_incident(
        severity: str, summary: str, evidence: str = "", observation: str = ""
    ) -> Call[IncidentOut]:
        """Report an observation (a hypothesis above P3 until its gate confirms it)."""
        body = IncidentReport.model_validate(
            {"severity": severity, "summary": summary, "evidence": evidence,
             "observation": observation}
        )  # fmt: skip
        return Call("POST", "/v1/incidents", _model(_INCIDENT), json=body.model_dump())

    @staticmethod
    def incidents(*, state: str | None = None, limit: int = 100) -> Call[list[IncidentOut]]:
        """Incidents the caller may see."""
        params = _clean({"state": state, "limit": limit})
        return Call("GET", "/v1/incidents", _model(_INCIDENTS), params=params)

    @staticmethod
    def incident(incident_id: int) -> Call[IncidentOut]:
        """One incident with its timeline."""
        return Call("GET", f"/v1/incidents/{incident_id}", _model(_INCIDENT))

    @staticmethod
    def decide_incident(
        incident_id: int, decision: str, reason: str, severity: str | None = None
    ) -> Call[IncidentOut]:
        """``confirm`` (a vote, optionally at ``severity``), ``resolve`` or ``dismiss``."""
        body = {"reason": reason, "severity": severity}
        return Call("POST", f"/v1/incidents/{incident_id}/{decision}", _model(_INCIDENT), json=body)

    @staticmethod
    def request_approval(
        action: str,
        payload: dict[str, Any],
        rationale: str,
        *,
        executor: str | None = None,
        constraints: str = "",
        report_every: str | None = None,
        tainted: bool = False,
    ) -> Call[ApprovalOut]:
        """Ask the committee for a governed action (``tainted``: from a turn holding untrusted
        content)."""
        body = ApprovalRequest(
            action=action, payload=payload, rationale=rationale, executor=executor,
            constraints=constraints,
            report_every=report_every,
            tainted=tainted,
        )  # fmt: skip
        return Call("POST", "/v1/approvals", _model(_APPROVAL), json=body.model_dump())

    @staticmethod
    def approvals(*, state: str | None = None, limit: int = 100) -> Call[list[ApprovalOut]]:
        """Requests, newest first."""
        params = _clean({"state": state, "limit": limit})
        return Call("GET", "/v1/approvals", _model(_APPROVALS), params=params)

    @staticmethod
    def approval(approval_id: int) -> Call[ApprovalOut]:
        """One request with its votes."""
        return Call("GET", f"/v1/approvals/{approval_id}", _model(_APPROVAL))

    @staticmethod
    def vote(approval_id: int, vote: str, rationale: str) -> Call[ApprovalOut]:
        """Vote ``approve`` or ``deny``, with a rationale."""
        body = {"vote": vote, "rationale": rationale}
        return Call("POST", f"/v1/approvals/{approval_id}/votes", _model(_APPROVAL), json=body)

    @staticmethod
    def authorize(
        action: str,
        payload: dict[str, Any] | None = None,
        approval_id: int | None = None,
        *,
        tainted: bool = False,
    ) -> Call[AuthorizeOut]:
        """May I do this governed action now? (``Forbidden`` with the rule if not.) ``tainted``:
        my turn holds untrusted content, so only an approved request for this payload will do."""
        body = {"action": action, "payload": payload or {}, "approval_id": approval_id}
        if tainted:
            body["tainted"] = True
        return Call("POST", "/v1/approvals/authorize", _model(_AUTHORIZE), json=body)

    @staticmethod
    def veto(approval_id: int, reason: str) -> Call[ApprovalOut]:
        """A human stops a request."""
        return Call(
            "POST", f"/v1/approvals/{approval_id}/veto", _model(_APPROVAL), json={"reason": reason}
        )

    @staticmethod
    def acknowledge_directive(approval_id: int) -> Call[ApprovalOut]:
        """The executing agent acknowledges its directive."""
        return Call("POST", f"/v1/approvals/{approval_id}/acknowledge", _model(_APPROVAL))

    @staticmethod
    def time() -> Call[TimeResponse]:
        return Call("GET", "/v1/time", _model(_TIME))

    @staticmethod
    def health() -> Call[HealthResponse]:
        return Call("GET", "/healthz", _model(_HEALTH))

    @staticmethod
    def metrics() -> Call[str]:
        return Call("GET", "/metrics", _text)

    @staticmethod
    def create_token(
        kind: PrincipalKind, name: str, *, label: str = "", expires_in_seconds: int | None = None
    ) -> Call[TokenCreated]:
        body = {
            "kind": str(kind),
            "name": name,
            "label": label,
            "expires_in_seconds": expires_in_seconds,
        }
        return Call("POST", "/v1/tokens", _model(_TOKEN_CREATED), json=body)

    @staticmethod
    def tokens(name: str | None = None) -> Call[list[TokenOut]]:
        return Call("GET", "/v1/tokens", _model(_TOKENS), params=_clean({"name": name}))

    @staticmethod
    def revoke_token(token_id: int, *, approval: int | None = None) -> Call[TokenOut]:
        """Revoke a token (an agent needs an approved ``revoke_token`` request)."""
        return Call(
            "POST",
            f"/v1/tokens/{token_id}/revoke",
            _model(_TOKEN),
            params=_clean({"approval": approval}),
        )

    @staticmethod
    def rotate_token(token_id: int) -> Call[TokenCreated]:
        return Call("POST", f"/v1/tokens/{token_id}/rotate", _model(_TOKEN_CREATED))

    @staticmethod
    def audit(
        *,
        actor: str | None = None,
        action: str | None = None,
        since: str | None = None,
        until: str | None = None,
        after: int = 0,
        limit: int = 100,
    ) -> Call[list[AuditOut]]:
        params = _clean(
            {
                "actor": actor,
                "action": action,
                "since": since,
                "until": until,
                "after": after,
                "limit": limit,
            }
        )
        return Call("GET", "/v1/audit", _model(_AUDIT), params=params)

    @staticmethod
    def audit_csv(*, after: int = 0, limit: int = 10_000) -> Call[str]:
        params = {"after": after, "limit": limit, "format": "csv"}
        return Call("GET", "/v1/audit", _text, params=params)

    @staticmethod
    def audit_verify() -> Call[AuditVerifyResult]:
        return Call("GET", "/v1/audit/verify", _model(_VERIFY))

    # --- dash: search messages, pause, resume, restart ----------------------------------------
    @staticmethod
    def search_messages(
        *,
        q: str | None = None,
        sender: str | None = None,
        to: str | None = None,
        kind: str | None = None,
        priority: str | None = None,
        state: str | None = None,
        since: str | None = None,
        until: str | None = None,
        thread: int | None = None,
        before: int | None = None,
        limit: int = 50,
    ) -> Call[MessageSearchOut]:
        """Messages matching every filter given, newest first (``next_before`` pages on)."""
        params = _clean(
            {"q": q, "from": sender, "to": to, "kind": kind, "priority": priority,
             "state": state, "since": since, "until": until, "thread": thread,
             "before": before, "limit": limit}
        )  # fmt: skip
        return Call("GET", "/v1/messages", _model(TypeAdapter(MessageSearchOut)), params=params)

    @staticmethod
    def pause_agent(name: str, reason: str = "") -> Call[AgentOut]:
        return Call("POST", f"/v1/agents/{name}/pause", _model(_AGENT), json={"reason": reason})

    @staticmethod
    def resume_agent(name: str, reason: str = "") -> Call[AgentOut]:
        return Call("POST", f"/v1/agents/{name}/resume", _model(_AGENT), json={"reason": reason})

    @staticmethod
    def restart_agent(name: str, reason: str = "") -> Call[RestartRequestOut]:
        return Call(
            "POST",
            f"/v1/agents/{name}/restart",
            _model(TypeAdapter(RestartRequestOut)),
            json={"reason": reason},
        )

    @staticmethod
    def restart_requests(after: int | None = None) -> Call[RestartRequestsOut]:
        """Restart requests after a cursor (none and the current cursor when omitted)."""
        return Call(
            "GET",
            "/v1/restart-requests",
            _model(TypeAdapter(RestartRequestsOut)),
            params=_clean({"after": after}),
        )

    @staticmethod
    def restart_done(request_id: int, agent: str, pid: int | None) -> Call[None]:
        return Call(
            "POST",
            f"/v1/restart-requests/{request_id}/done",
            _none,
            json={"agent": agent, "pid": pid},
        )

    # --- wsync: workspace sync ---------------------------------------------------------------
    @staticmethod
    def put_workspace_blob(sha256: str, content: bytes) -> Call[BlobOut]:
        """Upload a workspace file's bytes under their sha256."""
        body = {"content": base64.b64encode(content).decode()}
        return Call("PUT", f"/v1/workspace/blobs/{sha256}", _model(_BLOB), json=body)

    @staticmethod
    def workspace_blob(sha256: str) -> Call[BlobOut]:
        """Download one of the agent's workspace blobs (``content`` is the bytes)."""
        return Call("GET", f"/v1/workspace/blobs/{sha256}", _model(_BLOB))

    @staticmethod
    def commit_workspace(files: Sequence[FileIn]) -> Call[ManifestOut]:
        """Make ``files`` the agent's latest workspace version (fenced by the client's fence)."""
        body = ManifestIn(files=list(files)).model_dump()
        return Call("PUT", "/v1/workspace", _model(_MANIFEST), json=body)

    @staticmethod
    def workspace(agent: str | None = None) -> Call[ManifestOut]:
        """The latest workspace version (an operator names the agent)."""
        return Call("GET", "/v1/workspace", _model(_MANIFEST), params=_clean({"agent": agent}))

    @staticmethod
    def put_workspace_blobs(blobs: Sequence[BlobUpload]) -> Call[BlobsOut]:
        """Upload many workspace files' bytes in one request (≤ 1,000, ≤ 4 MiB of files, a
        larger file alone): all kept, or none when one is refused."""
        body = {"blobs": [b.model_dump(exclude_none=True) for b in blobs]}
        return Call("POST", "/v1/workspace/blobs", _model(_BLOBS), json=body, timeout=BATCH_TIMEOUT)

    @staticmethod
    def fetch_workspace_blobs(hashes: Sequence[str]) -> Call[FetchOut]:
        """Download many of the agent's blobs in one request: those that fit one batch, and
        ``left``, the hashes to ask for next."""
        body = {"sha256": list(hashes)}
        return Call(
            "POST", "/v1/workspace/blobs/fetch", _model(_FETCH), json=body, timeout=BATCH_TIMEOUT
        )

    # --- scale: batched lease renewal ---------------------------------------------------------
    @staticmethod
    def renew_leases(
        holder: str, leases: list[tuple[str, int]], ttl: float
    ) -> Call[LeaseRenewBatchOut]:
        """Keep every ``(agent, fence)`` in one request: one result per lease, in order (a
        ``lease_lost`` result: stop that agent now)."""
        body = LeaseRenewBatch(
            holder=holder,
            ttl_seconds=ttl,
            leases=[LeaseRenewItem(agent=a, fence=f) for a, f in leases],
        ).model_dump()
        return Call(
            "POST", "/v1/leases/renew-batch", _model(TypeAdapter(LeaseRenewBatchOut)), json=body
        )


_BLOB = TypeAdapter(BlobOut)
_MANIFEST = TypeAdapter(ManifestOut)
_BLOBS = TypeAdapter(BlobsOut)
_FETCH = TypeAdapter(FetchOut)
BATCH_TIMEOUT = 120.0
"""Seconds a batched workspace upload or fetch may take (4 MiB of files, 5.3 MiB on the wire:
about 45 s over a 1 Mbit/s uplink)."""


def _headers(token: str | None, fence: int | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if fence is not None:
        headers[FENCE_HEADER] = str(fence)
    return headers


def _answer(call: Call[T], response: httpx.Response) -> T:
    if response.is_error:
        raise _error(response)
    return call.parse(response)


def _unreachable(base_url: str, error: httpx.TransportError) -> ServerUnreachable:
    reason = redact(str(error)) or type(error).__name__
    return ServerUnreachable(
        f"Mission Control at {base_url} did not answer ({reason}); is `mcos server` running?"
    )


_SAFE_TO_REPEAT = frozenset({"GET", "HEAD", "OPTIONS"})


class Endpoints:
    """The Mission Control replicas a client may use, and which one it uses now.

    One transport error moves the client to the next URL (sticky: later calls stay there). The
    failed call is repeated on the next URL only when that cannot do it twice: the connection
    was never made (the request did not leave) or the call is a read. A write whose answer was
    lost is raised as :class:`ServerUnreachable`, as with one URL; its caller retries it (sends
    carry idempotency keys, acks are idempotent)."""

    def __init__(self, urls: str | Sequence[str]) -> None:
        listed = [urls] if isinstance(urls, str) else list(urls)
        cleaned = [u.strip().rstrip("/") for u in listed]
        if not cleaned or not all(cleaned):
            msg = f"no Mission Control URL in {listed!r}"
            raise ValueError(msg)
        self.urls: tuple[str, ...] = tuple(cleaned)
        self._current = 0

    @property
    def current(self) -> str:
        """The URL calls go to now."""
        return self.urls[self._current]

    def attempts(self) -> list[str]:
        """Every URL once, the current one first."""
        n = len(self.urls)
        return [self.urls[(self._current + i) % n] for i in range(n)]

    def failed(self, url: str) -> None:
        """``url`` did not answer: move past it (unless another call already did)."""
        if self.current == url:
            self._current = (self._current + 1) % len(self.urls)

    @staticmethod
    def may_repeat(call: Call[Any], error: httpx.TransportError) -> bool:
        """Whether ``call`` may be tried on the next URL after ``error``."""
        return call.method in _SAFE_TO_REPEAT or isinstance(
            error, httpx.ConnectError | httpx.ConnectTimeout
        )

    def unreachable(self, tried: list[str], error: httpx.TransportError) -> ServerUnreachable:
        """The error naming every URL tried."""
        return _unreachable(" and ".join(tried), error)


class Client:
    """Blocking client; ``Client(url, token).send("ops", "disk is full")``.

    ``base_url`` may list several replicas of Mission Control (see :class:`Endpoints`)."""

    calls = Calls

    def __init__(
        self,
        base_url: str | Sequence[str],
        token: str | None = None,
        *,
        timeout: float = 10,
        fence: int | None = None,
    ) -> None:
        self.endpoints = Endpoints(base_url)
        self._http = httpx.Client(
            headers=_headers(token, fence), timeout=timeout, verify=verified_context()
        )

    @property
    def base_url(self) -> str:
        """The Mission Control URL calls go to now."""
        return self.endpoints.current

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def do(self, call: Call[T]) -> T:
        """Perform one call, on the next replica when the current one does not answer."""
        tried: list[str] = []
        for url in self.endpoints.attempts():
            tried.append(url)
            try:
                response = self._http.request(
                    call.method,
                    url + call.path,
                    params=call.params,
                    json=call.json,
                    timeout=call.timeout or httpx.USE_CLIENT_DEFAULT,
                )
            except httpx.TransportError as error:
                self.endpoints.failed(url)
                if len(tried) == len(self.endpoints.urls) or not Endpoints.may_repeat(call, error):
                    raise self.endpoints.unreachable(tried, error) from None
                continue
            return _answer(call, response)
        raise AssertionError("unreachable: attempts() is never empty")  # pragma: no cover


class AsyncClient:
    """Asyncio client with the same calls; ``await c.do(Calls.inbox(wait=30))``.

    ``base_url`` may list several replicas of Mission Control (see :class:`Endpoints`)."""

    calls = Calls

    def __init__(
        self,
        base_url: str | Sequence[str],
        token: str | None = None,
        *,
        timeout: float = 10,
        fence: int | None = None,
    ) -> None:
        """``fence``: the agent instance's fencing token, sent with every call."""
        self.endpoints = Endpoints(base_url)
        self.fence = fence
        self._http = httpx.AsyncClient(
            headers=_headers(token, fence), timeout=timeout, verify=verified_context()
        )

    @property
    def base_url(self) -> str:
        """The Mission Control URL calls go to now."""
        return self.endpoints.current

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def do(self, call: Call[T]) -> T:
        """Perform one call, on the next replica when the current one does not answer."""
        tried: list[str] = []
        for url in self.endpoints.attempts():
            tried.append(url)
            try:
                response = await self._http.request(
                    call.method,
                    url + call.path,
                    params=call.params,
                    json=call.json,
                    timeout=call.timeout or httpx.USE_CLIENT_DEFAULT,
                )
            except httpx.TransportError as error:
                self.endpoints.failed(url)
                if len(tried) == len(self.endpoints.urls) or not Endpoints.may_repeat(call, error):
                    raise self.endpoints.unreachable(tried, error) from None
                continue
            return _answer(call, response)
        raise AssertionError("unreachable: attempts() is never empty")  # pragma: no cover
