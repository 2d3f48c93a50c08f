"""The provider an agent's configuration names, with its key and price."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from mcos.config.models import AgentConfig
from mcos.domain.budget import FREE, Price, price_of
from mcos.models.anthropic import AnthropicModel
from mcos.models.base import ModelProvider
from mcos.models.offline import OfflineModel
from mcos.models.openai_compat import OpenAICompatModel


def make_provider(
    agent: AgentConfig,
    key: str | None,
    prices: dict[str, Price],
    *,
    sleep: Callable[[float], Awaitable[None]] | None = None,
) -> ModelProvider:
    """Anthropic, OpenAI-compatible or offline; an unpriced model counts as free (and says so)."""
    model = agent.model
    price = price_of(model.id, prices) or FREE
    if model.provider == "offline":
        return OfflineModel(model.id, price)
    if model.provider == "anthropic":
        if key is None:
            msg = "an anthropic model needs a key"
            raise ValueError(msg)
        return AnthropicModel(model.id, key, price, base_url=model.base_url, sleep=sleep)
    return OpenAICompatModel(model.id, key, price, base_url=model.base_url, sleep=sleep)
