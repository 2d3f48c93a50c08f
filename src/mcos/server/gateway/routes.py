"""The gateway's HTTP routes: each provider's API under ``/v1/gateway/<provider>``.

An agent points the provider's official SDK at these (``base_url``) with its own Mission
Control token as the credential; the SDK cannot tell Mission Control from the provider.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from mcos.server.gateway.anthropic_messages import AnthropicDialect
from mcos.server.gateway.openai_chat import OpenAIDialect
from mcos.server.gateway.proxy import Gateway
from mcos.server.routes.deps import Caller

PREFIX = "/v1/gateway"
ANTHROPIC = AnthropicDialect()
OPENAI = OpenAIDialect()

router = APIRouter(prefix=PREFIX, tags=["gateway"], include_in_schema=False)


def gateway_of(request: Request) -> Gateway:
    """The app's gateway."""
    gateway: Gateway = request.app.state.gateway
    return gateway


@router.post("/anthropic/v1/messages")
async def anthropic_messages(request: Request, caller: Caller) -> Response:
    """Anthropic's Messages API, metered: the agent's budget pays for the call."""
    return await gateway_of(request).metered(request, caller, ANTHROPIC, "messages")


@router.post("/anthropic/v1/messages/count_tokens")
async def anthropic_count_tokens(request: Request, caller: Caller) -> Response:
    """Anthropic's token counting (free): forwarded on the agent's key."""
    return await gateway_of(request).unmetered(request, caller, ANTHROPIC, "count_tokens")


@router.post("/openai/v1/chat/completions")
async def openai_chat_completions(request: Request, caller: Caller) -> Response:
    """OpenAI's Chat Completions API (and compatible servers), metered."""
    return await gateway_of(request).metered(request, caller, OPENAI, "chat/completions")
