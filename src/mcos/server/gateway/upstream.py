"""The model APIs behind the gateway: one shared HTTP client, and what may cross it.

Requests go out with the agent's key and the few headers the provider's protocol needs (never
the agent's Mission Control token or fence). Answers come back as the provider sent them, less
hop-by-hop headers, cookies and anything that could carry the key; a key the provider echoes in
a body is cut out. Kept free of any one route, so every gateway route (messages, batches)
forwards through it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping

import anyio
import httpx
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from mcos.domain.redaction import REDACTED

log = logging.getLogger("mcos.gateway")

TIMEOUT = httpx.Timeout(connect=10.0, read=600.0, write=60.0, pool=30.0)
"""Connecting is quick or broken; a long answer (or a quiet stretch of a stream) may take
minutes, as the providers' own SDKs allow."""
LIMITS = httpx.Limits(max_connections=200, max_keepalive_connections=40, keepalive_expiry=30)

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
DROPPED_ANSWER_HEADERS = HOP_BY_HOP | {
    "content-length",  # recomputed: a body with an echoed key cut out is shorter
    "content-encoding",  # httpx hands over the decoded body
    "set-cookie",
    "authorization",
    "x-api-key",
    "www-authenticate",
    "openai-organization",
    "openai-project",
    "anthropic-organization-id",
}
"""Answer headers never passed to the agent."""


def answer_headers(headers: httpx.Headers, key: str | None) -> dict[str, str]:
    """The provider's answer headers an agent may see (request ids, rate-limit figures)."""
    out = {}
    for name, value in headers.items():
        lowered = name.lower()
        if lowered in DROPPED_ANSWER_HEADERS or (key and key in value):
            continue
        out[lowered] = value
    return out


def without_key(body: bytes, key: str | None) -> bytes:
    """``body`` with every copy of ``key`` replaced (some APIs quote the key they refused)."""
    if not key:
        return body
    return body.replace(key.encode(), REDACTED.encode())


class Upstream:
    """One HTTP client for every call to every provider (connections are pooled and reused)."""

    def __init__(self, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.client = httpx.AsyncClient(
            timeout=TIMEOUT, limits=LIMITS, follow_redirects=False, transport=transport
        )

    async def send(
        self, url: str, headers: Mapping[str, str], body: bytes, *, stream: bool = False
    ) -> httpx.Response:
        """POST ``body`` to ``url``; with ``stream`` the answer's body is left unread (read it
        or close it). ``httpx.HTTPError`` when the provider cannot be reached."""
        request = self.client.build_request("POST", url, headers=dict(headers), content=body)
        return await self.client.send(request, stream=stream)

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self.client.aclose()


class RelayedStream(StreamingResponse):
    """A provider's streamed answer passed to the agent chunk by chunk as it arrives.

    ``watch`` sees every chunk (the gateway reads usage from the events); ``finish`` runs once
    the stream ends — completely (True) or cut short by either side (False) — shielded from
    cancellation, so a call is settled even when the agent hangs up mid-stream.
    """

    def __init__(
        self,
        upstream: httpx.Response,
        headers: Mapping[str, str],
        watch: Callable[[bytes], None],
        finish: Callable[[bool], Awaitable[None]],
    ) -> None:
        self._upstream = upstream
        self._watch = watch
        self._finish = finish
        self._complete = False
        self._chunks_iter = self._chunks()
        super().__init__(
            self._chunks_iter,
            status_code=upstream.status_code,
            headers=headers,
            media_type=upstream.headers.get("content-type", "text/event-stream"),
        )

    async def _chunks(self) -> AsyncGenerator[bytes, None]:
        async for chunk in self._upstream.aiter_bytes():
            self._watch(chunk)
            yield chunk
        self._complete = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except httpx.HTTPError as e:  # the provider broke off: the agent sees a cut stream
            log.warning("gateway: the provider's stream broke off: %s", e.__class__.__name__)
        finally:
            with anyio.CancelScope(shield=True):
                with contextlib.suppress(RuntimeError):  # already closed or still running
                    await self._chunks_iter.aclose()
                await self._upstream.aclose()
                await self._finish(self._complete)
