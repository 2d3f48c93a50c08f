"""The provider an agent's configuration names, with its key (or its way through Mission
Control's gateway) and its price."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from mcos.config.models import AgentConfig
from mcos.domain.budget import FREE, Price
from mcos.domain.first_look import route_problem
from mcos.domain.prices import price_for
from mcos.domain.redaction import remember
from mcos.exceptions import ConfigError
from mcos.models.base import ModelProvider, same_client
from mcos.models.gateway import GatewayAccess
from mcos.models.offline import OfflineModel


def make_provider(
    agent: AgentConfig,
    key: str | None,
    prices: dict[str, Price],
    *,
    sleep: Callable[[float], Awaitable[None]] | None = None,
    gateway: GatewayAccess | None = None,
) -> ModelProvider:
    """Anthropic, OpenAI-compatible or offline, priced by ``prices`` (the fleet file's ``[prices]``)
    first, then genai-prices. A model nothing prices counts as free: the fleet file is refused
    at load when such a model has a dollar budget to keep (``mcos.config.loader``).

    ``gateway`` given (an agent process whose model's ``route`` is ``gateway``): the provider
    calls through Mission Control with the agent's token, holds no key (``key`` must be None)
    and is ``metered``. Without it, the provider calls the API itself with ``key``.
    """
    model = agent.model
    if key is not None:
        remember(key)  # whoever built the provider, its key is redacted wherever it surfaces
    price = price_for(model.provider, model.id, prices, model.base_url) or FREE
    if model.provider == "offline":
        return OfflineModel(model.id, price)
    if gateway is not None and key is not None:
        msg = "a provider through Mission Control's gateway holds no key"
        raise ValueError(msg)
    # Each SDK is imported only by the agents that use it: an offline agent starts in a
    # fraction of the time and memory.
    if model.provider == "anthropic":
        from mcos.models.anthropic import AnthropicModel  # noqa: PLC0415

        if gateway is not None:
            return AnthropicModel(
                model.id,
                None,
                price,
                base_url=gateway.base_url("anthropic"),
                sleep=sleep,
                auth_token=gateway.token,
                headers=gateway.headers,
                metered=True,
            )
        if key is None:
            msg = "an anthropic model needs a key"
            raise ValueError(msg)
        return AnthropicModel(model.id, key, price, base_url=model.base_url, sleep=sleep)
    from mcos.models.openai_compat import OpenAICompatModel  # noqa: PLC0415

    if gateway is not None:
        return OpenAICompatModel(
            model.id,
            gateway.token,
            price,
            base_url=gateway.base_url("openai"),
            sleep=sleep,
            headers=gateway.headers,
            metered=True,
        )
    return OpenAICompatModel(model.id, key, price, base_url=model.base_url, sleep=sleep)


def make_triage_provider(
    agent: AgentConfig,
    main: ModelProvider,
    prices: dict[str, Price],
    *,
    file: str = "fleet file",
    key: str = "triage_model",
) -> ModelProvider | None:
    """The agent's triage model (None without one), priced like the main model.

    On the main model's provider it is the main model's client — the same key, or the same
    route through Mission Control — asking for another model; otherwise the offline model or
    an OpenAI-compatible server of its own (a ``base_url`` that needs no key). Anything else
    is a ``ConfigError`` at ``file``: ``key`` (the fleet file is checked for it at load too).
    """
    triage = agent.triage_model
    if triage is None:
        return None
    problem = route_problem(
        agent.model.provider, triage.provider, triage.base_url, agent.model.base_url
    )
    if problem is not None:
        raise ConfigError(file, key, problem)
    price = price_for(triage.provider, triage.id, prices, triage.base_url) or FREE
    if triage.provider == "offline":
        return OfflineModel(triage.id, price)
    # The main model's own client, unless the triage model is on an OpenAI-compatible server
    # of its own. (Each SDK is imported only here: the main model has already loaded it.)
    own_server = triage.base_url not in (None, agent.model.base_url)
    if triage.provider == main.provider == "anthropic":
        from mcos.models.anthropic import AnthropicModel  # noqa: PLC0415

        if isinstance(main, AnthropicModel):
            return same_client(main, triage.id, price)
    from mcos.models.openai_compat import OpenAICompatModel  # noqa: PLC0415

    if triage.provider == "openai" and own_server:
        return OpenAICompatModel(triage.id, None, price, base_url=triage.base_url)
    if triage.provider == main.provider and isinstance(main, OpenAICompatModel):
        return same_client(main, triage.id, price)
    problem = f"{main.label} cannot lend its client to a {triage.provider} triage model"
    raise ConfigError(file, key, problem)
