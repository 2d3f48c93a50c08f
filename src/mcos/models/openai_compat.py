"""Any OpenAI-compatible Chat Completions endpoint (Ollama, vLLM, LM Studio) via the SDK."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import openai
from openai.types.chat import ChatCompletion
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from mcos.domain.budget import Pricing, Usage
from mcos.domain.redaction import redact
from mcos.exceptions import (
    ModelError,
    ModelRequestRejected,
    ModelUnavailable,
    RateLimited,
    SpendLimitReached,
)
from mcos.models.base import (
    INVALID_ARGUMENTS,
    ModelReply,
    ModelRequest,
    TextBlock,
    ToolCall,
    ToolResult,
)
from mcos.models.gateway import gateway_error, precise_wait, purpose_headers, reservation_of

PROVIDER = "openai"
DEFAULT_RETRY_AFTER = 60.0


class _Retryable(Exception):
    def __init__(self, error: ModelUnavailable) -> None:
        super().__init__(error.message)
        self.error = error


def _retry_after(error: openai.APIStatusError) -> float:
    headers = error.response.headers
    if (precise := precise_wait(headers)) is not None:  # Mission Control's gateway
        return precise
    try:
        return max(float(headers.get("retry-after", "")), 1.0)
    except ValueError:
        return DEFAULT_RETRY_AFTER


def _classify(error: openai.APIError) -> ModelError | _Retryable:
    if isinstance(error, openai.APIConnectionError):
        return _Retryable(ModelUnavailable(f"openai: no connection ({error})", provider=PROVIDER))
    if not isinstance(error, openai.APIStatusError):
        return ModelError(f"openai: {error}", provider=PROVIDER)
    status = error.status_code
    said = redact(str(error.message))  # an API may echo the key it refused
    if error.code == "insufficient_quota":
        return SpendLimitReached(
            f"openai {status}: quota exhausted ({said}) — retrying cannot help",
            provider=PROVIDER,
            status_code=status,
        )
    if status == 429:
        wait = _retry_after(error)
        return RateLimited(
            f"openai 429: retry after {wait:g}s ({said})", provider=PROVIDER, retry_after=wait
        )
    if status >= 500:
        return _Retryable(
            ModelUnavailable(f"openai {status}: {said}", provider=PROVIDER, status_code=status)
        )
    return ModelRequestRejected(f"openai {status}: {said}", provider=PROVIDER, status_code=status)


def chat_messages(request: ModelRequest) -> list[dict[str, Any]]:
    """The conversation in Chat Completions form: tool results become ``tool`` messages."""
    system = request.stable + (f"\n\n{request.volatile}" if request.volatile else "")
    out: list[dict[str, Any]] = [{"role": "system", "content": system}]
    for turn in request.turns:
        if turn.role == "assistant":
            calls = [b for b in turn.blocks if isinstance(b, ToolCall)]
            message: dict[str, Any] = {"role": "assistant", "content": turn.text or None}
            if calls:
                message["tool_calls"] = [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": json.dumps(c.input)},
                    }
                    for c in calls
                ]
            out.append(message)
            continue
        out.extend(
            {"role": "tool", "tool_call_id": b.call_id, "content": b.content}
            for b in turn.blocks
            if isinstance(b, ToolResult)
        )
        if turn.text:
            out.append({"role": "user", "content": turn.text})
    return out


def _arguments(raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw or "{}")
    except json.JSONDecodeError:
        return {INVALID_ARGUMENTS: raw[:500]}
    return value if isinstance(value, dict) else {INVALID_ARGUMENTS: raw[:500]}


class OpenAICompatModel:
    """A model behind an OpenAI-compatible server; prompt caching, if any, is the server's.

    Through Mission Control's gateway, ``api_key`` is the agent's Mission Control token, the
    base URL Mission Control's, and ``metered`` says Mission Control meters each call.
    """

    provider = PROVIDER
    caches = False
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
        headers: Mapping[str, str] | None = None,
        metered: bool = False,
    ) -> None:
        self.model = model
        self.label = model
        self.price = price
        self.metered = metered
        self._attempts = attempts
        self._backoff_cap = backoff_cap
        self._sleep = sleep
        # Local servers ignore the key, but the SDK insists on one.
        self._client = openai.AsyncOpenAI(
            api_key=api_key or "unused",
            base_url=base_url,
            max_retries=0,
            timeout=timeout,
            default_headers=dict(headers or {}),
        )

    async def _once(self, body: dict[str, Any]) -> tuple[ChatCompletion, int | None]:
        """One call; the completion and, through the gateway, the hold it was metered under."""
        try:
            raw = await self._client.chat.completions.with_raw_response.create(**body)
            completion: ChatCompletion = raw.parse()
        except openai.APIError as e:
            raise (gateway_error(e) or _classify(e)) from e
        return completion, reservation_of(raw.headers) if self.metered else None

    async def complete(self, request: ModelRequest) -> ModelReply:
        """One chat completion; server errors retried with jittered backoff."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": chat_messages(request),
            "max_tokens": request.max_output,
        }
        if headers := purpose_headers(self.metered, request.purpose):
            body["extra_headers"] = headers
        if request.tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.input_schema,
                    },
                }
                for t in request.tools
            ]
        if request.tool_choice is not None:
            body["tool_choice"] = {"type": "function", "function": {"name": request.tool_choice}}
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
                    completion, reservation = await self._once(body)
        except _Retryable as e:
            raise e.error from e
        if not completion.choices:
            raise ModelError("openai: the answer had no choices", provider=PROVIDER)
        choice = completion.choices[0]
        text = choice.message.content or ""
        calls = tuple(
            ToolCall(c.id, c.function.name, _arguments(c.function.arguments))
            for c in choice.message.tool_calls or ()
            if c.type == "function"
        )
        usage = Usage()
        if completion.usage is not None:
            details = completion.usage.prompt_tokens_details
            cached = (details.cached_tokens or 0) if details is not None else 0
            usage = Usage(
                input=completion.usage.prompt_tokens - cached,
                output=completion.usage.completion_tokens,
                cache_read=cached,
            )
        blocks: tuple[TextBlock | ToolCall | ToolResult, ...] = (
            (TextBlock(text),) if text else ()
        ) + calls
        return ModelReply(
            text=text,
            tool_calls=calls,
            usage=usage,
            stop_reason=choice.finish_reason or "stop",
            model=completion.model,
            blocks=blocks,
            reservation=reservation,
        )

    async def aclose(self) -> None:
        """Close the SDK's connection pool."""
        await self._client.close()
