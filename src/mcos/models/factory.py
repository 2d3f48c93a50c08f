"""The provider an agent's configuration names, with its key and price."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from mcos.config.models import AgentConfig
from mcos.domain.budget import FREE, Price, price_of
from mcos.domain.redaction import remember
from mcos.models.base import ModelProvider
from mcos.models.offline import OfflineModel


def make_provider(
    agent: AgentConfig,
    key: str | None,
    prices: dict[str, Price],
    *,
    sleep: Callable[[float], Awaitable[None]] | None = None,
) -> ModelProvider:
    """Anthropic, OpenAI-compatible or offline; an unpriced model counts as free (and says so)."""
    model = agent.model
    if key is not None:
        remember(key)  # whoever built the provider, its key is redacted wherever it surfaces
    price = price_of(model.id, prices) or FREE
    if model.provider == "offline":
        return OfflineModel(model.id, price)
    # Each SDK is imported only by the agents that use it: an offline agent starts in a
    # fraction of the time and memory.
    if model.provider == "anthropic":
        from mcos.models.anthropic import AnthropicModel  # noqa: PLC0415

        if key is None:
            msg = "an anthropic model needs a key"
            raise ValueError(msg)
        return AnthropicModel(model.id, key, price, base_url=model.base_url, sleep=sleep)
    from mcos.models.openai_compat import OpenAICompatModel  # noqa: PLC0415

    return OpenAICompatModel(model.id, key, price, base_url=model.base_url, sleep=sleep)
