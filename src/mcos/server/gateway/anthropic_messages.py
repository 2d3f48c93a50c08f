"""The Anthropic Messages API as the gateway speaks it."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

import httpx
from starlette.responses import JSONResponse

from mcos.domain.budget import Usage
from mcos.domain.heartbeat import CacheTTL
from mcos.models.spend_limits import SPEND_LIMIT_PHRASES  # not the SDK: 1-2 s of imports
from mcos.server.gateway.dialect import JSON, EventUsage, count
from mcos.server.gateway.upstream import Upstream

log = logging.getLogger("mcos.gateway")

DEFAULT_VERSION = "2023-06-01"
FORWARDED = ("anthropic-version", "anthropic-beta")
"""The agent's request headers that reach Anthropic (the SDK's version and beta flags)."""
COUNT_FIELDS = frozenset(
    {
        "model",
        "messages",
        "system",
        "tools",
        "tool_choice",
        "thinking",
        "mcp_servers",
        "context_management",
        "output_config",
        "output_format",
        "cache_control",
        "speed",
    }
)
"""What ``/v1/messages/count_tokens`` accepts of a Messages body (it refuses the rest)."""
SPEND_LIMIT_CODES = frozenset({"enforced_spend_limit_reached", "contract_spend_limit_reached"})


def _ttls(value: object) -> set[str]:
    """Every ``cache_control.ttl`` inside ``value`` (a body, a block list, a block)."""
    found: set[str] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            control = item.get("cache_control")
            if isinstance(control, dict):
                found.add(str(control.get("ttl", "5m")))
            stack.extend(v for k, v in item.items() if k != "cache_control")
        elif isinstance(item, list):
            stack.extend(item)
    return found


def usage_of(raw: object) -> Usage:
    """Anthropic's ``usage`` object as ours (absent kinds count 0)."""
    usage = raw if isinstance(raw, dict) else {}
    creation = usage.get("cache_creation")
    one_hour = count(creation.get("ephemeral_1h_input_tokens")) if isinstance(creation, dict) else 0
    written = count(usage.get("cache_creation_input_tokens"))
    return Usage(
        input=count(usage.get("input_tokens")),
        output=count(usage.get("output_tokens")),
        cache_read=count(usage.get("cache_read_input_tokens")),
        cache_write=written,
        cache_write_1h=min(one_hour, written),
    )


class MessageStreamUsage(EventUsage):
    """Usage of a streamed message: ``message_start`` carries the input, ``message_delta``
    the output (and, cumulatively, the input again)."""

    def read(self, event: JSON) -> None:
        """``message_start``'s usage, updated by ``message_delta``'s."""
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message")
            if isinstance(message, dict) and isinstance(message.get("usage"), dict):
                self.raw.update(message["usage"])
        elif kind == "message_delta" and isinstance(event.get("usage"), dict):
            self.raw.update({k: v for k, v in event["usage"].items() if v is not None})
            self.finished = True

    def usage(self) -> Usage:
        """What the events said so far."""
        return usage_of(self.raw)


class AnthropicDialect:
    """``/v1/messages`` and ``/v1/messages/count_tokens``."""

    provider = "anthropic"
    default_base_url = "https://api.anthropic.com"

    def url(self, base_url: str, endpoint: str) -> str:
        """``messages`` or ``count_tokens`` under the API's ``/v1``."""
        path = "/v1/messages" if endpoint == "messages" else "/v1/messages/count_tokens"
        return base_url.rstrip("/") + path

    def outgoing_headers(self, incoming: Mapping[str, str], key: str | None) -> dict[str, str]:
        """The key as ``x-api-key``, the agent's API version and beta flags."""
        headers = {"content-type": "application/json", "accept": "application/json"}
        for name in FORWARDED:
            if (value := incoming.get(name)) is not None:
                headers[name] = value
        headers.setdefault("anthropic-version", DEFAULT_VERSION)
        if key is not None:
            headers["x-api-key"] = key
        return headers

    async def prompt_tokens(
        self, upstream: Upstream, base_url: str, headers: Mapping[str, str], body: JSON
    ) -> int:
        """Counted by the API's own ``count_tokens`` (free); should it fail, the UTF-8 bytes of
        the prompt, which no tokenizer exceeds."""
        counted = {k: v for k, v in body.items() if k in COUNT_FIELDS}
        payload = json.dumps(counted).encode()
        try:
            answer = await upstream.send(self.url(base_url, "count_tokens"), headers, payload)
            if answer.status_code == 200:
                tokens = answer.json().get("input_tokens")
                if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens >= 0:
                    return tokens
            log.info("gateway: count_tokens answered %s; using the byte bound", answer.status_code)
        except (httpx.HTTPError, ValueError, AttributeError) as e:
            log.info("gateway: count_tokens failed (%s); using the byte bound", type(e).__name__)
        return len(payload)

    def cache_ttl(self, body: JSON) -> CacheTTL:
        """1 hour if any breakpoint asks for it, else 5 minutes if any breakpoint is set."""
        ttls = _ttls({k: body.get(k) for k in ("system", "tools", "messages", "cache_control")})
        if "1h" in ttls:
            return CacheTTL.ONE_HOUR
        return CacheTTL.FIVE_MINUTES if ttls else CacheTTL.NONE

    def max_output(self, body: JSON, default: int) -> int:
        """``max_tokens`` (required by the API: a body without it fails upstream)."""
        value = body.get("max_tokens")
        return value if isinstance(value, int) and not isinstance(value, bool) else default

    def limit_output(self, body: JSON, granted: int) -> None:
        """``max_tokens`` lowered to what the budget pays for."""
        asked = body.get("max_tokens")
        if not isinstance(asked, int) or isinstance(asked, bool) or asked > granted:
            body["max_tokens"] = granted

    def prepare_stream(self, body: JSON) -> None:
        """Nothing to do: every Messages stream carries its usage."""

    def usage(self, answer: JSON) -> Usage | None:
        """The message's ``usage``."""
        raw = answer.get("usage")
        return usage_of(raw) if isinstance(raw, dict) else None

    def stream_usage(self) -> MessageStreamUsage:
        """A reader of ``message_start`` / ``message_delta`` usage."""
        return MessageStreamUsage()

    def spend_limit(self, status: int, answer: JSON) -> bool:
        """402, a spend-limit error code, or the words the API uses for an exhausted credit."""
        error = answer.get("error")
        if not isinstance(error, dict):
            return status == 402
        details = error.get("details")
        code = details.get("error_code") if isinstance(details, dict) else None
        message = str(error.get("message", "")).lower()
        return (
            status == 402
            or code in SPEND_LIMIT_CODES
            or any(p in message for p in SPEND_LIMIT_PHRASES)
        )

    def error(
        self, status: int, kind: str, message: str, headers: Mapping[str, str] | None = None
    ) -> JSONResponse:
        """``{"type": "error", "error": {"type", "message"}}``."""
        return JSONResponse(
            {"type": "error", "error": {"type": kind, "message": message}},
            status_code=status,
            headers=dict(headers or {}),
        )
