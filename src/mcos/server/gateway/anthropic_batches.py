"""Anthropic's Message Batches through the gateway: calls that can wait, at half price, metered.

An agent's batch (``POST …/anthropic/v1/messages/batches``) is checked request by request like
a Messages call — the model must be the agent's, on the agent's key — and each request's worst
case is reserved at the batch rates (``mc.meter.reserve(batch=True)``), its ``max_tokens``
lowered to what the budget pays for; when one request cannot be paid for, nothing is held and
nothing is sent. Mission Control remembers whose batch it is and each request's hold — in the
audit log (``gateway.batch``), so a restart of Mission Control keeps them. Retrieving and
canceling are passed through for the agent's own batches only (another's is a 404: not even its
existence shows); ``results_url`` points back at the gateway. Reading the results settles each
request's hold with its usage at the batch rates, once: a hold settles one time only, so a
second read of the results counts nothing. A batch whose results are never read keeps its holds
(they count against the day they were made in).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import dataclass, field
from datetime import timedelta

import httpx
from fastapi import APIRouter, Request
from starlette.responses import Response

from mcos.domain.audit import AuditEvent
from mcos.domain.budget import Usage
from mcos.domain.tokens import Principal
from mcos.exceptions import Conflict, McosError, OverBudget
from mcos.server.gateway.anthropic_messages import AnthropicDialect, usage_of
from mcos.server.gateway.dialect import JSON
from mcos.server.gateway.proxy import (
    OVER_BUDGET,
    Call,
    Gateway,
    Refusal,
    parse_object,
    purpose_of,
    read_body,
)
from mcos.server.gateway.upstream import answer_headers, without_key
from mcos.server.routes.deps import Caller
from mcos.store.protocol import AuditQuery

log = logging.getLogger("mcos.gateway")

PATH = "/v1/messages/batches"
MAX_REQUESTS = 1_000
"""Requests one batch may carry through the gateway (each is a hold on the budget)."""
KEPT = timedelta(days=29)
"""How long the API keeps a batch's results: how far back a restarted Mission Control looks
for the batches it metered."""
ACTION = "gateway.batch"
ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
ANTHROPIC = AnthropicDialect()

router = APIRouter(prefix="/v1/gateway/anthropic" + PATH, include_in_schema=False)


@dataclass
class AgentBatch:
    """A batch an agent sent through the gateway: whose it is and what each request holds."""

    id: str
    agent: str
    model: str
    purpose: str
    holds: dict[str, int]
    """custom_id → the reservation held for that request."""
    settled: set[str] = field(default_factory=set)
    """Requests whose result has been metered (by this process)."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)


class Batches:
    """The agents' batches, on top of the gateway's checks, keys and upstream client."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.mc = gateway.mc
        self._known: dict[str, AgentBatch] = {}

    # -- create ------------------------------------------------------------------------------

    async def create(self, request: Request, caller: Principal) -> Response:
        """Check and reserve every request, then send the batch."""
        try:
            body = await read_body(request)
            requests = _requests(body)
            calls = [await self.gateway.open_call(caller, ANTHROPIC, p) for _, p in requests]
            call = calls[0]
            if any(c.fingerprint != call.fingerprint or c.base_url != call.base_url for c in calls):
                raise Refusal(400, "invalid_request_error", "a batch goes to one API on one key")
            await self.gateway.check_cooldown(call, ANTHROPIC)
            headers = ANTHROPIC.outgoing_headers(request.headers, call.secret)
            purpose = purpose_of(request)
            holds = await self._reserve(call, headers, requests, purpose)
            return await self._send(request, call, headers, body, holds, purpose)
        except Refusal as r:
            return ANTHROPIC.error(r.status, r.kind, r.message, r.headers)

    async def _reserve(
        self, call: Call, headers: dict[str, str], requests: list[tuple[str, JSON]], purpose: str
    ) -> dict[str, int]:
        """Each request's worst case at the batch rates, its output clamped to the grant; all
        or none (``Refusal`` 402 when one cannot be paid for)."""
        holds: dict[str, int] = {}
        try:
            for custom_id, params in requests:
                prompt = await ANTHROPIC.prompt_tokens(
                    self.gateway.upstream, call.base_url, headers, params
                )
                hold = await self.mc.meter.reserve(
                    call.agent,
                    call.model,
                    prompt_tokens=prompt,
                    max_output=ANTHROPIC.max_output(params, call.config.max_output),
                    cache_ttl=ANTHROPIC.cache_ttl(params),
                    purpose=purpose,
                    batch=True,
                )
                holds[custom_id] = hold.id
                ANTHROPIC.limit_output(params, hold.max_output)
        except OverBudget as e:
            await self._release(call.agent, call.model, holds, purpose)
            raise Refusal(402, OVER_BUDGET, e.message) from None
        return holds

    async def _send(
        self,
        request: Request,
        call: Call,
        headers: dict[str, str],
        body: JSON,
        holds: dict[str, int],
        purpose: str,
    ) -> Response:
        try:
            answer = await self.gateway.upstream.send(
                call.base_url.rstrip("/") + PATH, headers, json.dumps(body).encode()
            )
        except httpx.HTTPError as e:
            await self._release(call.agent, call.model, holds, purpose)
            raise Refusal(
                502,
                "api_error",
                f"Mission Control could not reach {call.base_url} ({type(e).__name__})",
            ) from None
        parsed = parse_object(answer.content)
        await self.gateway.note_answer(call, ANTHROPIC, answer, parsed)
        batch_id = parsed.get("id")
        if not answer.is_success or not isinstance(batch_id, str):
            await self._release(call.agent, call.model, holds, purpose)
            return _passed(answer, call)
        batch = AgentBatch(batch_id, call.agent, call.model, purpose, holds)
        self._known[batch_id] = batch
        await self.mc.store.record(
            AuditEvent(
                actor=f"agent:{call.agent}",
                action=ACTION,
                targets={"agent": call.agent, "batch": batch_id, "model": call.model},
                detail={"holds": holds, "purpose": purpose},
            )
        )
        return _passed(answer, call, _here(request))

    async def _release(self, agent: str, model: str, holds: dict[str, int], purpose: str) -> None:
        for hold in holds.values():
            await self._settle(agent, model, hold, None, purpose)

    # -- retrieve, cancel, results -----------------------------------------------------------

    async def retrieve(self, request: Request, caller: Principal, batch_id: str) -> Response:
        """The batch's state, if it is the agent's."""
        return await self._pass(request, caller, batch_id, "GET", "")

    async def cancel(self, request: Request, caller: Principal, batch_id: str) -> Response:
        """Cancel the batch, if it is the agent's."""
        return await self._pass(request, caller, batch_id, "POST", "/cancel")

    async def results(self, request: Request, caller: Principal, batch_id: str) -> Response:
        """The results file, each request's usage metered once at the batch rates."""
        return await self._pass(request, caller, batch_id, "GET", "/results")

    async def _pass(
        self, request: Request, caller: Principal, batch_id: str, method: str, tail: str
    ) -> Response:
        try:
            batch = await self._own(caller, batch_id)
            call = await self.gateway.open_call(caller, ANTHROPIC, {"model": batch.model})
            headers = ANTHROPIC.outgoing_headers(request.headers, call.secret)
            if tail == "/results":
                headers["accept"] = request.headers.get("accept", "application/binary")
            url = f"{call.base_url.rstrip('/')}{PATH}/{batch_id}{tail}"
            try:
                answer = await self.gateway.upstream.client.request(method, url, headers=headers)
            except httpx.HTTPError as e:
                raise Refusal(
                    502,
                    "api_error",
                    f"Mission Control could not reach {call.base_url} ({type(e).__name__})",
                ) from None
        except Refusal as r:
            return ANTHROPIC.error(r.status, r.kind, r.message, r.headers)
        if tail == "/results":
            if answer.is_success:
                await self._meter(batch, answer.content)
            return _passed(answer, call)
        return _passed(answer, call, _here(request))

    async def _meter(self, batch: AgentBatch, content: bytes) -> None:
        """Settle each request's hold with its result's usage (None for an errored, canceled
        or expired request: nothing was billed), each once."""
        async with batch.lock:
            for line in content.splitlines():
                try:
                    item = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(item, dict):
                    continue
                custom_id, result = item.get("custom_id"), item.get("result")
                if not isinstance(custom_id, str) or not isinstance(result, dict):
                    continue
                hold = batch.holds.get(custom_id)
                if hold is None or custom_id in batch.settled:
                    continue
                message = result.get("message")
                usage = (
                    usage_of(message.get("usage"))
                    if result.get("type") == "succeeded" and isinstance(message, dict)
                    else None
                )
                await self._settle(batch.agent, batch.model, hold, usage, batch.purpose)
                batch.settled.add(custom_id)

    async def _settle(
        self, agent: str, model: str, hold: int, usage: Usage | None, purpose: str
    ) -> None:
        """Record one request at the batch rates (None: nothing billed) and release its hold."""
        try:
            await self.mc.meter.settle(
                agent, model, hold, usage, purpose, provider="anthropic", batch=True
            )
        except Conflict:
            return  # settled before (another read, or before a restart): counted once
        except McosError as e:
            log.warning("gateway: could not record %s's batch request: %s", agent, e.message)

    async def _own(self, caller: Principal, batch_id: str) -> AgentBatch:
        """The caller's batch ``batch_id``; ``Refusal`` 404 for any other (not even whether
        it exists is told)."""
        batch = self._known.get(batch_id) if ID_PATTERN.match(batch_id) else None
        if batch is None and ID_PATTERN.match(batch_id):
            batch = await self._recall(batch_id)
        if batch is None or batch.agent != caller.name:
            raise Refusal(404, "not_found_error", f"message_batch_id: {batch_id}")
        return batch

    async def _recall(self, batch_id: str) -> AgentBatch | None:
        """A batch sent before Mission Control restarted, from its audit record."""
        since = await self.mc.store.now() - KEPT
        after = 0
        while True:
            page = await self.mc.store.audit(
                AuditQuery(action=ACTION, since=since, after_seq=after, limit=500)
            )
            for record in page:
                if record.targets.get("batch") != batch_id:
                    continue
                holds = record.detail.get("holds")
                batch = AgentBatch(
                    batch_id,
                    str(record.targets.get("agent")),
                    str(record.targets.get("model")),
                    str(record.detail.get("purpose", "gateway")),
                    {str(k): int(v) for k, v in holds.items()} if isinstance(holds, dict) else {},
                )
                self._known[batch_id] = batch
                return batch
            if len(page) < 500:
                return None
            after = page[-1].seq


def _requests(body: JSON) -> list[tuple[str, JSON]]:
    """The batch's requests as ``(custom_id, params)``; the shape the gateway needs to meter
    them (the API checks the rest)."""
    extra = sorted(set(body) - {"requests"})
    if extra:
        raise Refusal(400, "invalid_request_error", f"{extra[0]}: Extra inputs are not permitted")
    requests = body.get("requests")
    if not isinstance(requests, list) or not requests:
        raise Refusal(400, "invalid_request_error", "requests: a non-empty list is required")
    if len(requests) > MAX_REQUESTS:
        raise Refusal(
            400,
            "invalid_request_error",
            f"requests: at most {MAX_REQUESTS} requests per batch through Mission Control, "
            f"not {len(requests)}",
        )
    found = []
    for i, item in enumerate(requests):
        custom_id = item.get("custom_id") if isinstance(item, dict) else None
        params = item.get("params") if isinstance(item, dict) else None
        if not isinstance(custom_id, str) or not isinstance(params, dict):
            raise Refusal(
                400,
                "invalid_request_error",
                f"requests.{i}: needs a custom_id (string) and params (object)",
            )
        found.append((custom_id, params))
    return found


def _here(request: Request) -> str:
    """The gateway's own batches URL, as the agent reached it."""
    return str(request.base_url).rstrip("/") + "/v1/gateway/anthropic" + PATH


def _passed(answer: httpx.Response, call: Call, here: str | None = None) -> Response:
    """The provider's answer for the agent: the key cut out and, for a batch object, its
    ``results_url`` pointing at the gateway."""
    content = answer.content
    if here is not None and answer.is_success:
        parsed = parse_object(content)
        if isinstance(parsed.get("results_url"), str) and isinstance(parsed.get("id"), str):
            parsed["results_url"] = f"{here}/{parsed['id']}/results"
            content = json.dumps(parsed).encode()
    return Response(
        without_key(content, call.secret),
        status_code=answer.status_code,
        headers=answer_headers(answer.headers, call.secret),
    )


def batches_of(request: Request) -> Batches:
    """The app's gateway batches."""
    batches: Batches = request.app.state.gateway_batches
    return batches


@router.post("")
async def create_batch(request: Request, caller: Caller) -> Response:
    """Create a Message Batch, every request reserved at the batch rates."""
    return await batches_of(request).create(request, caller)


@router.get("/{batch_id}")
async def retrieve_batch(request: Request, caller: Caller, batch_id: str) -> Response:
    """One of the agent's batches."""
    return await batches_of(request).retrieve(request, caller, batch_id)


@router.post("/{batch_id}/cancel")
async def cancel_batch(request: Request, caller: Caller, batch_id: str) -> Response:
    """Cancel one of the agent's batches."""
    return await batches_of(request).cancel(request, caller, batch_id)


@router.get("/{batch_id}/results")
async def batch_results(request: Request, caller: Caller, batch_id: str) -> Response:
    """The results of one of the agent's batches, metered once."""
    return await batches_of(request).results(request, caller, batch_id)
