"""One model call through Mission Control: who may make it, on which key, metered how.

An agent's call arrives with its own Mission Control token. The gateway checks the model is
one the agent is configured with, resolves the agent's key where Mission Control runs, counts
the prompt, reserves the call's worst case (``mc.meter``), lowers the output limit to what the
budget pays for, forwards the call, prices the provider's ``usage`` and releases the rest of
the hold. The provider's answer comes back as it was sent (a stream as it arrives).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio
import httpx
from fastapi import Request
from starlette.responses import Response

from mcos.domain.audit import AuditEvent
from mcos.domain.budget import Usage
from mcos.domain.redaction import redact
from mcos.domain.tokens import Principal, PrincipalKind
from mcos.exceptions import ConfigError, McosError, OverBudget
from mcos.models.gateway import PURPOSE_HEADER, RESERVATION_HEADER
from mcos.server.gateway.dialect import JSON, Dialect
from mcos.server.gateway.keys import GatewayAgent, UpstreamKey, resolve
from mcos.server.gateway.ratelimits import Cooldowns, wait_after_429
from mcos.server.gateway.upstream import RelayedStream, Upstream, answer_headers, without_key

if TYPE_CHECKING:
    from mcos.server.context import MissionControl

log = logging.getLogger("mcos.gateway")

OVER_BUDGET = "mcos_over_budget"
"""The error type of a call the budget cannot pay for (HTTP 402, in the provider's shape)."""
MISCONFIGURED = "mcos_misconfigured"
"""The error type of a call Mission Control cannot make for want of a key (HTTP 500)."""


class Refusal(Exception):
    """A call the gateway answers itself, in the provider's error shape."""

    def __init__(
        self, status: int, kind: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.headers = dict(headers or {})


@dataclass
class Call:
    """One agent's call on its way through: the parts every step needs."""

    agent: str
    config: GatewayAgent
    model: str
    base_url: str
    key: UpstreamKey | None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def secret(self) -> str | None:
        """The key's value (cut from anything sent back)."""
        return None if self.key is None else self.key.value

    @property
    def fingerprint(self) -> str:
        """The key's name in rate limits (agents sharing a key share its cooldown)."""
        return self.key.fingerprint if self.key is not None else f"nokey:{self.base_url}"


@dataclass(frozen=True)
class Held:
    """A call's reservation, and how to settle it."""

    mc: MissionControl
    call: Call
    provider: str
    id: int
    max_output: int
    """The output the budget pays for: the body's limit is lowered to it."""
    prompt: int
    purpose: str

    @property
    def worst(self) -> Usage:
        """What a call whose usage is unknown is counted at: the whole prompt and output."""
        return Usage(input=self.prompt, output=self.max_output)

    @property
    def header(self) -> dict[str, str]:
        """The answer's header naming the hold (the agent's trace links the call by it)."""
        return {RESERVATION_HEADER.lower(): str(self.id)}

    async def settle(self, usage: Usage | None) -> None:
        """Record ``usage`` (None: nothing billed) and release the rest of the hold."""
        try:
            await self.mc.meter.settle(
                self.call.agent,
                self.call.model,
                self.id,
                usage,
                self.purpose,
                provider=self.provider,
            )
        except McosError as e:  # the hold stays reserved until it lapses: never undercounted
            log.warning("gateway: could not record %s's call: %s", self.call.agent, e.message)


class Gateway:
    """Mission Control's model gateway: the shared upstream client and the keys' cooldowns."""

    def __init__(self, mc: MissionControl, upstream: Upstream | None = None) -> None:
        self.mc = mc
        self.upstream = upstream or Upstream()
        self.cooldowns = Cooldowns()

    async def aclose(self) -> None:
        """Close the upstream connections."""
        await self.upstream.aclose()

    # -- the steps, reusable by every gateway route ------------------------------------------

    async def open_call(self, caller: Principal, dialect: Dialect, body: JSON) -> Call:
        """The agent, its model, its key, checked: ``Refusal`` when it may not call."""
        if caller.kind is not PrincipalKind.AGENT:
            rule = "the model gateway is for agents, each with its own token"
            await self.mc.refuse(caller, "gateway.call", rule)
            raise Refusal(403, "permission_error", rule)
        config = self.mc.settings.gateway.get(caller.name)
        if config is None:
            rule = (
                f"{caller.name} does not call its model through Mission Control "
                '(an offline model, or model.route = "direct")'
            )
            await self.mc.refuse(caller, "gateway.call", rule)
            raise Refusal(403, "permission_error", rule)
        if config.provider != dialect.provider:
            rule = f"{caller.name}'s model is an {config.provider} model, not {dialect.provider}"
            await self.mc.refuse(caller, "gateway.call", rule)
            raise Refusal(403, "permission_error", rule)
        model = body.get("model")
        chosen = config.models.get(model) if isinstance(model, str) else None
        if chosen is None:
            allowed = ", ".join(sorted(config.models))
            rule = f"{caller.name} may call only its configured models ({allowed}), not {model!r}"
            await self.mc.refuse(caller, "gateway.model", rule, model=str(model)[:200])
            raise Refusal(403, "permission_error", rule)
        assert isinstance(model, str)
        base_url = chosen.base_url or dialect.default_base_url
        try:
            key = resolve(caller.name, config, base_url)
        except ConfigError as e:
            await self.mc.store.record(
                AuditEvent(
                    actor=caller.actor,
                    action="gateway.key",
                    targets={"agent": caller.name},
                    detail={"problem": e.message},
                    outcome="failed",
                )
            )
            log.error("gateway: %s", e.message)
            raise Refusal(500, MISCONFIGURED, e.message) from None
        return Call(caller.name, config, model, base_url, key)

    async def check_cooldown(self, call: Call, dialect: Dialect) -> None:
        """``Refusal`` 429 while the call's key rests after a 429 (the provider is not asked)."""
        rest = self.cooldowns.remaining(call.fingerprint, await self.mc.store.now())
        if rest is None:
            return
        seconds = rest.total_seconds()
        raise Refusal(
            429,
            "rate_limit_error" if dialect.provider == "anthropic" else "rate_limit_exceeded",
            f"the provider rate-limited this key: Mission Control holds every call on it for "
            f"{seconds:.3f}s more",
            {
                "retry-after": str(max(math.ceil(seconds), 1)),
                "retry-after-ms": str(math.ceil(seconds * 1000)),
            },
        )

    async def note_answer(
        self, call: Call, dialect: Dialect, answer: httpx.Response, body: JSON
    ) -> None:
        """Learn from an answer: a 429 (not a spend limit) rests the key for as long as asked."""
        if answer.status_code != 429 or dialect.spend_limit(429, body):
            return
        now = await self.mc.store.now()
        wait = wait_after_429(answer.headers, now)
        self.cooldowns.hold(call.fingerprint, now + wait)
        log.warning(
            "gateway: %s is rate limited at %s: every call on its key waits %.3fs",
            call.agent,
            call.base_url,
            wait.total_seconds(),
        )

    # -- a metered call ----------------------------------------------------------------------

    async def metered(
        self, request: Request, caller: Principal, dialect: Dialect, endpoint: str
    ) -> Response:
        """A call that costs money, from the agent's request to the provider's answer."""
        try:
            body = await read_body(request)
            call = await self.open_call(caller, dialect, body)
            await self.check_cooldown(call, dialect)
            return await self._metered(request, call, dialect, endpoint, body)
        except Refusal as r:
            return dialect.error(r.status, r.kind, r.message, r.headers)

    async def _metered(
        self, request: Request, call: Call, dialect: Dialect, endpoint: str, body: JSON
    ) -> Response:
        headers = dialect.outgoing_headers(request.headers, call.secret)
        held = await self._hold(request, call, dialect, headers, body)
        dialect.limit_output(body, held.max_output)
        stream = body.get("stream") is True
        if stream:
            dialect.prepare_stream(body)
        try:
            answer = await self.upstream.send(
                dialect.url(call.base_url, endpoint),
                headers,
                json.dumps(body).encode(),
                stream=stream,
            )
        except httpx.HTTPError as e:
            await held.settle(None)
            raise Refusal(
                502,
                "api_error",
                f"Mission Control could not reach {call.base_url} ({type(e).__name__})",
            ) from None
        except asyncio.CancelledError:
            with anyio.CancelScope(shield=True):  # the agent hung up: the provider may bill
                await held.settle(held.worst)
            raise
        if stream and answer.status_code == 200:
            return self._relay(call, dialect, answer, held)
        return await self._whole(call, dialect, answer, held)

    async def _hold(
        self,
        request: Request,
        call: Call,
        dialect: Dialect,
        headers: Mapping[str, str],
        body: JSON,
    ) -> Held:
        """Count the prompt and reserve the call's worst case: ``Refusal`` 402 over budget."""
        prompt = await dialect.prompt_tokens(self.upstream, call.base_url, headers, body)
        purpose = purpose_of(request)
        try:
            hold = await self.mc.meter.reserve(
                call.agent,
                call.model,
                prompt_tokens=prompt,
                max_output=dialect.max_output(body, call.config.max_output),
                cache_ttl=dialect.cache_ttl(body),
                purpose=purpose,
            )
        except OverBudget as e:
            raise Refusal(402, OVER_BUDGET, e.message) from None
        return Held(self.mc, call, dialect.provider, hold.id, hold.max_output, prompt, purpose)

    def _relay(self, call: Call, dialect: Dialect, answer: httpx.Response, held: Held) -> Response:
        """A streamed answer passed on as it arrives, settled from its events at the end."""
        reader = dialect.stream_usage()

        async def finish(complete: bool) -> None:
            if reader.finished:
                await held.settle(reader.usage())
            elif reader.started:  # cut short: the output it made is unknown, so the most
                await held.settle(_with_output(reader.usage(), held.max_output))
            else:
                await held.settle(None)

        headers = answer_headers(answer.headers, call.secret) | held.header
        return RelayedStream(answer, headers, reader.feed, finish)

    async def _whole(
        self, call: Call, dialect: Dialect, answer: httpx.Response, held: Held
    ) -> Response:
        """A whole answer: read, learnt from (a 429), settled from its usage, passed on."""
        try:
            content = await answer.aread()
        except httpx.HTTPError as e:  # cut off mid-answer: the provider may have billed it all
            await held.settle(held.worst)
            raise Refusal(
                502, "api_error", f"{call.base_url} broke off its answer ({type(e).__name__})"
            ) from None
        finally:
            await answer.aclose()
        parsed = parse_object(content)
        await self.note_answer(call, dialect, answer, parsed)
        if answer.is_success:
            usage = dialect.usage(parsed)
            if usage is None:
                log.warning(
                    "gateway: %s's answer carried no usage: counted at its worst case", call.agent
                )
            await held.settle(usage or held.worst)
        else:
            await held.settle(None)
        return Response(
            without_key(content, call.secret),
            status_code=answer.status_code,
            headers=answer_headers(answer.headers, call.secret) | held.header,
        )

    # -- a free call -------------------------------------------------------------------------

    async def unmetered(
        self, request: Request, caller: Principal, dialect: Dialect, endpoint: str
    ) -> Response:
        """A call that costs nothing (counting tokens): checked and forwarded, not metered (nor
        held by a key's rest: the provider limits it apart)."""
        try:
            body = await read_body(request)
            call = await self.open_call(caller, dialect, body)
        except Refusal as r:
            return dialect.error(r.status, r.kind, r.message, r.headers)
        headers = dialect.outgoing_headers(request.headers, call.secret)
        try:
            answer = await self.upstream.send(
                dialect.url(call.base_url, endpoint), headers, json.dumps(body).encode()
            )
        except httpx.HTTPError as e:
            return dialect.error(
                502,
                "api_error",
                f"Mission Control could not reach {call.base_url} ({type(e).__name__})",
            )
        return Response(
            without_key(answer.content, call.secret),
            status_code=answer.status_code,
            headers=answer_headers(answer.headers, call.secret),
        )


def _with_output(usage: Usage, output: int) -> Usage:
    return Usage(
        usage.input,
        max(usage.output, output),
        usage.cache_read,
        usage.cache_write,
        usage.cache_write_1h,
    )


async def read_body(request: Request) -> JSON:
    """The request's JSON object: ``Refusal`` 400 naming the problem otherwise."""
    raw = await request.body()
    try:
        body = json.loads(raw)
    except ValueError as e:
        raise Refusal(400, "invalid_request_error", f"the body is not JSON: {e}") from None
    if not isinstance(body, dict):
        raise Refusal(400, "invalid_request_error", "the body must be a JSON object")
    return body


def parse_object(content: bytes) -> JSON:
    """An answer's JSON object, or ``{}`` when it is none (an HTML error page, say)."""
    try:
        value = json.loads(content)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def purpose_of(request: Request) -> str:
    """The call's purpose as the agent names it (``gateway`` when it does not)."""
    said = redact(request.headers.get(PURPOSE_HEADER, "").strip())
    return said[:100] or "gateway"
