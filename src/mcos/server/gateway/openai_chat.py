"""The OpenAI Chat Completions API as the gateway speaks it."""

from __future__ import annotations

import json
from collections.abc import Mapping

from starlette.responses import JSONResponse

from mcos.domain.budget import Usage
from mcos.domain.heartbeat import CacheTTL
from mcos.server.gateway.dialect import JSON, EventUsage, count
from mcos.server.gateway.upstream import Upstream

OUTPUT_FIELDS = ("max_completion_tokens", "max_tokens")
"""Where a body names its output limit (the newer name first)."""
PROMPT_FIELDS = ("messages", "tools", "functions", "tool_choice", "response_format")


def usage_of(raw: object) -> Usage:
    """Chat Completions' ``usage`` as ours: cached prompt tokens are cache reads."""
    usage = raw if isinstance(raw, dict) else {}
    details = usage.get("prompt_tokens_details")
    cached = count(details.get("cached_tokens")) if isinstance(details, dict) else 0
    prompt = count(usage.get("prompt_tokens"))
    return Usage(
        input=max(prompt - cached, 0),
        output=count(usage.get("completion_tokens")),
        cache_read=min(cached, prompt),
    )


class ChunkStreamUsage(EventUsage):
    """Usage of a streamed completion: the last chunk, asked for with ``include_usage``."""

    def read(self, event: JSON) -> None:
        """The chunk that carries ``usage``."""
        if isinstance(event.get("usage"), dict):
            self.raw = event["usage"]
            self.finished = True

    def usage(self) -> Usage:
        """What the chunks said so far."""
        return usage_of(self.raw)


class OpenAIDialect:
    """``/chat/completions`` of OpenAI and the servers that speak its API."""

    provider = "openai"
    default_base_url = "https://api.openai.com/v1"

    def url(self, base_url: str, endpoint: str) -> str:
        """``chat/completions`` under the base URL (which ends in ``/v1``)."""
        return base_url.rstrip("/") + "/chat/completions"

    def outgoing_headers(self, incoming: Mapping[str, str], key: str | None) -> dict[str, str]:
        """The key as a bearer token (none for a server that takes none)."""
        headers = {"content-type": "application/json", "accept": "application/json"}
        if key is not None:
            headers["authorization"] = f"Bearer {key}"
        return headers

    async def prompt_tokens(
        self, upstream: Upstream, base_url: str, headers: Mapping[str, str], body: JSON
    ) -> int:
        """The UTF-8 bytes of the messages and tools as JSON: the API counts no tokens before
        a call, and a byte-level tokenizer never makes more tokens than bytes (the JSON
        framing outweighs the few tokens each message's role markers add)."""
        prompt = {k: body[k] for k in PROMPT_FIELDS if k in body}
        return len(json.dumps(prompt, ensure_ascii=False).encode())

    def cache_ttl(self, body: JSON) -> CacheTTL:
        """No cache writes to pay for: OpenAI caches prompts by itself, at no extra cost."""
        return CacheTTL.NONE

    def max_output(self, body: JSON, default: int) -> int:
        """``max_completion_tokens`` or ``max_tokens``; ``default`` (the agent's own output
        cap) when the body names none."""
        for name in OUTPUT_FIELDS:
            value = body.get(name)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        return default

    def limit_output(self, body: JSON, granted: int) -> None:
        """Each output limit the body names lowered to ``granted``; ``max_tokens`` set when it
        names none (an unbounded answer could pass any budget)."""
        named = [n for n in OUTPUT_FIELDS if n in body]
        for name in named or ["max_tokens"]:
            asked = body.get(name)
            if not isinstance(asked, int) or isinstance(asked, bool) or asked > granted:
                body[name] = granted

    def prepare_stream(self, body: JSON) -> None:
        """``stream_options.include_usage``: the stream's last chunk carries the usage."""
        options = body.get("stream_options")
        body["stream_options"] = {
            **(options if isinstance(options, dict) else {}),
            "include_usage": True,
        }

    def usage(self, answer: JSON) -> Usage | None:
        """The completion's ``usage``."""
        raw = answer.get("usage")
        return usage_of(raw) if isinstance(raw, dict) else None

    def stream_usage(self) -> ChunkStreamUsage:
        """A reader of the final usage chunk."""
        return ChunkStreamUsage()

    def spend_limit(self, status: int, answer: JSON) -> bool:
        """``insufficient_quota`` (a 429 that waiting does not cure), or 402."""
        error = answer.get("error")
        if not isinstance(error, dict):
            return status == 402
        return status == 402 or "insufficient_quota" in (error.get("code"), error.get("type"))

    def error(
        self, status: int, kind: str, message: str, headers: Mapping[str, str] | None = None
    ) -> JSONResponse:
        """``{"error": {"type", "code", "message", "param"}}``."""
        return JSONResponse(
            {"error": {"type": kind, "code": kind, "message": message, "param": None}},
            status_code=status,
            headers=dict(headers or {}),
        )
