"""Anthropic's Messages API through the official SDK: caching, retries that cannot hammer.

The SDK's own retries are off (``max_retries=0``): overloads and server errors are retried here
with jittered backoff (tenacity), a 429 is handed to the runtime with its ``retry-after`` so the
agent cools down visibly, and a spend-limit answer is never retried.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any

import anthropic
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from mcos.domain.budget import Pricing, Usage
from mcos.domain.heartbeat import CacheTTL
from mcos.domain.redaction import redact
from mcos.exceptions import (
    McosError,
    ModelError,
    ModelRequestRejected,
    ModelUnavailable,
    RateLimited,
    SpendLimitReached,
)
from mcos.models.anthropic_cache import place_breakpoints
from mcos.models.base import (
    BatchOutcome,
    ModelReply,
    ModelRequest,
    TextBlock,
    ToolCall,
    ToolResult,
    Turn,
)
from mcos.models.gateway import gateway_error, precise_wait, purpose_headers, reservation_of
from mcos.models.spend_limits import SPEND_LIMIT_PHRASES

PROVIDER = "anthropic"
DEFAULT_RETRY_AFTER = 60.0
"""Seconds to cool down when a 429 names no wait."""
SPEND_LIMIT_CLASSES: tuple[type[anthropic.APIStatusError], ...] = (
    anthropic.EnforcedSpendLimitReachedError,
    anthropic.ContractSpendLimitReachedError,
    anthropic.PaymentRequiredError,
)


class _Retryable(Exception):
    """An overload, server error or lost connection: worth another try after a pause."""

    def __init__(self, error: ModelUnavailable) -> None:
        super().__init__(error.message)
        self.error = error


def _retry_after(error: anthropic.APIStatusError) -> float:
    headers = error.response.headers
    if (precise := precise_wait(headers)) is not None:  # Mission Control's gateway
        return precise
    for name in ("retry-after", "anthropic-ratelimit-requests-reset"):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(float(value), 1.0)
        except ValueError:
            continue
    return DEFAULT_RETRY_AFTER


def _classify(error: anthropic.APIError) -> ModelError | _Retryable:
    """The SDK's error as one of ours (the message names the status and the API's words)."""
    if isinstance(error, anthropic.APIConnectionError):
        return _Retryable(
            ModelUnavailable(f"anthropic: no connection ({error})", provider=PROVIDER)
        )
    if not isinstance(error, anthropic.APIStatusError):
        return ModelError(f"anthropic: {error}", provider=PROVIDER)
    status = error.status_code
    said = redact(str(error.message))  # an API may echo the key it refused
    if isinstance(error, SPEND_LIMIT_CLASSES) or any(
        p in said.lower() for p in SPEND_LIMIT_PHRASES
    ):
        return SpendLimitReached(
            f"anthropic {status}: the account's spend limit is reached ({said}); raise the limit "
            "in the Anthropic console — retrying cannot help",
            provider=PROVIDER,
            status_code=status,
        )
    if status == 429:
        wait = _retry_after(error)
        return RateLimited(
            f"anthropic 429: rate limited, retry after {wait:g}s ({said})",
            provider=PROVIDER,
            retry_after=wait,
        )
    if status >= 500:
        return _Retryable(
            ModelUnavailable(f"anthropic {status}: {said}", provider=PROVIDER, status_code=status)
        )
    return ModelRequestRejected(
        f"anthropic {status}: {said}", provider=PROVIDER, status_code=status
    )


def _block(block: TextBlock | ToolCall | ToolResult) -> dict[str, Any]:
    if isinstance(block, TextBlock):
        return {"type": "text", "text": block.text}
    if isinstance(block, ToolCall):
        return {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}
    return {
        "type": "tool_result",
        "tool_use_id": block.call_id,
        "content": block.content,
        "is_error": block.is_error,
    }


def _message(turn: Turn) -> dict[str, Any]:
    return {"role": turn.role, "content": [_block(b) for b in turn.blocks]}


def request_body(model: str, request: ModelRequest) -> dict[str, Any]:
    """The Messages API parameters: tools, the stable system block, the turns, then the
    volatile text as the last block of the last user message.

    Breakpoints (``anthropic_cache``) go on the stable block and on the conversation as it
    grows, so every call reads back what the one before wrote; the volatile text (the time,
    HEARTBEAT.md, WORKSTATE.md) comes after them all and is never part of a cached prefix.
    Blocks are rendered from the turns as kept, so a tool call and its result are the same
    bytes in every later call.
    """
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": request.max_output,
        "system": [{"type": "text", "text": request.stable}],
        "messages": [_message(t) for t in request.turns],
    }
    if request.tools:
        body["tools"] = [
            {"name": t.name, "description": t.description, "input_schema": t.input_schema}
            for t in request.tools
        ]
    if request.cache_ttl is not CacheTTL.NONE:
        place_breakpoints(body, {"type": "ephemeral", "ttl": request.cache_ttl.value})
    if request.volatile:
        volatile = {"type": "text", "text": request.volatile}
        messages = body["messages"]
        if messages and messages[-1]["role"] == "user":
            messages[-1]["content"].append(volatile)  # after any tool_result, as the API wants
        else:
            messages.append({"role": "user", "content": [volatile]})
    if request.tool_choice is not None:
        body["tool_choice"] = {"type": "tool", "name": request.tool_choice}
    return body


def _usage(usage: anthropic.types.Usage) -> Usage:
    one_hour = 0
    if usage.cache_creation is not None:
        one_hour = usage.cache_creation.ephemeral_1h_input_tokens or 0
    return Usage(
        input=usage.input_tokens,
        output=usage.output_tokens,
        cache_read=usage.cache_read_input_tokens or 0,
        cache_write=usage.cache_creation_input_tokens or 0,
        cache_write_1h=one_hour,
    )


def _reply(message: anthropic.types.Message) -> ModelReply:
    """The API's Message as the runtime's reply."""
    blocks: list[TextBlock | ToolCall | ToolResult] = []
    for b in message.content:
        if b.type == "text":
            blocks.append(TextBlock(b.text))
        elif b.type == "tool_use":
            payload = b.input if isinstance(b.input, dict) else {"value": b.input}
            blocks.append(ToolCall(b.id, b.name, payload))
    return ModelReply(
        text="\n".join(b.text for b in blocks if isinstance(b, TextBlock)),
        tool_calls=tuple(b for b in blocks if isinstance(b, ToolCall)),
        usage=_usage(message.usage),
        stop_reason=message.stop_reason or "end_turn",
        model=message.model,
        blocks=tuple(blocks),
    )


def _outcome(result: anthropic.types.messages.MessageBatchResult) -> BatchOutcome:
    """One line of a batch's results file as the runtime sees it."""
    if result.type == "succeeded":
        return BatchOutcome("succeeded", _reply(result.message))
    if result.type == "errored":
        error = result.error.error
        return BatchOutcome("errored", detail=redact(f"{error.type}: {error.message}"))
    return BatchOutcome(result.type)


def _unretried(error: anthropic.APIError) -> McosError:
    """The SDK's error as one of ours, for calls the runtime does not retry here (Mission
    Control's own answers through the gateway first: over budget, no key, fenced)."""
    classified = gateway_error(error) or _classify(error)
    return classified.error if isinstance(classified, _Retryable) else classified


class AnthropicModel:
    """Claude through ``anthropic.AsyncAnthropic``: with the agent's own key (direct mode), or
    through Mission Control's gateway with the agent's Mission Control token and no key
    (``auth_token``; ``metered``: Mission Control meters each call)."""

    provider = PROVIDER
    caches = True
    metered = False

    def __init__(
        self,
        model: str,
        api_key: str | None,
        price: Pricing,
        *,
        base_url: str | None = None,
        attempts: int = 4,
        backoff_cap: float = 30.0,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        timeout: float = 600.0,
        auth_token: str | None = None,
        headers: Mapping[str, str] | None = None,
        metered: bool = False,
    ) -> None:
        if (api_key is None) == (auth_token is None):
            msg = "an anthropic model needs either a key or (through the gateway) a token"
            raise ValueError(msg)
        self.model = model
        self.label = model
        self.price = price
        self.metered = metered
        self._attempts = attempts
        self._backoff_cap = backoff_cap
        self._sleep = sleep
        # base_url None lets the SDK read ANTHROPIC_BASE_URL, then its default. An explicit
        # credential keeps the SDK from reading any key from the environment.
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key,
            auth_token=auth_token,
            base_url=base_url,
            max_retries=0,
            timeout=timeout,
            default_headers=dict(headers or {}),
        )

    async def _once(self, body: dict[str, Any]) -> tuple[anthropic.types.Message, int | None]:
        """One call; the message and, through the gateway, the hold it was metered under."""
        try:
            raw = await self._client.messages.with_raw_response.create(**body)
            message: anthropic.types.Message = await raw.parse()
        except anthropic.APIError as e:
            raise (gateway_error(e) or _classify(e)) from e
        return message, reservation_of(raw.headers) if self.metered else None

    async def complete(self, request: ModelRequest) -> ModelReply:
        """One Messages call; overloads and server errors retried with jittered backoff."""
        body = request_body(self.model, request)
        if headers := purpose_headers(self.metered, request.purpose):
            body["extra_headers"] = headers
        extra: dict[str, Any] = {} if self._sleep is None else {"sleep": self._sleep}
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_Retryable),
            wait=wait_random_exponential(multiplier=1, max=self._backoff_cap),
            stop=stop_after_attempt(self._attempts),
            reraise=True,
            **extra,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    message, reservation = await self._once(body)
        except _Retryable as e:
            raise e.error from e
        return replace(_reply(message), reservation=reservation)

    # --- Message Batches: calls that can wait, at half price ------------------------------------
    async def submit(self, request: ModelRequest, custom_id: str) -> str:
        """Send ``request`` as a Message Batch of one; the batch's id. Not retried here: the
        runtime makes the call directly instead."""
        one: Any = {"custom_id": custom_id, "params": request_body(self.model, request)}
        try:
            batch = await self._client.messages.batches.create(requests=[one])
        except anthropic.APIError as e:
            raise _unretried(e) from e
        return batch.id

    async def outcome(self, batch_id: str, custom_id: str) -> BatchOutcome | None:
        """None while the batch is in progress (or canceling); once it has ended, the request's
        result from the batch's results file."""
        try:
            batch = await self._client.messages.batches.retrieve(batch_id)
            if batch.processing_status != "ended":
                return None
            async for line in await self._client.messages.batches.results(batch_id):
                if line.custom_id == custom_id:
                    return _outcome(line.result)
        except anthropic.APIError as e:
            raise _unretried(e) from e
        return BatchOutcome("errored", detail=f"batch {batch_id} has no result for {custom_id}")

    async def cancel(self, batch_id: str) -> None:
        """Ask the API to stop the batch; one that has ended meanwhile is left as it is."""
        try:
            await self._client.messages.batches.cancel(batch_id)
        except anthropic.BadRequestError:
            return  # it ended before the cancel arrived: nothing to stop
        except anthropic.APIError as e:
            raise _unretried(e) from e

    async def aclose(self) -> None:
        """Close the SDK's connection pool."""
        await self._client.close()
