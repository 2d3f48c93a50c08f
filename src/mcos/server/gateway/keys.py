"""Which agents call their model through Mission Control, with which models, on which key.

The key reference (``agents.NAME.key``) is resolved here, where Mission Control runs, at each
call: a key rotated in its file or credential is used from the next call on, and a reference
that does not resolve is an error naming the agent and the reference, never the value.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from mcos.config.models import Fleet, ModelConfig
from mcos.config.secrets import resolve_key
from mcos.domain.redaction import remember
from mcos.exceptions import ConfigError


@dataclass(frozen=True)
class GatewayAgent:
    """One agent whose model calls go through the gateway."""

    provider: str
    """``anthropic`` or ``openai``: the one API route this agent may use."""
    models: dict[str, ModelConfig]
    """The model ids it may ask for (its model, its triage model) and their configuration."""
    key: str | None
    """Its key reference (``env:VAR``, ``file:PATH``, ``credential:NAME``); None: no key (a
    local OpenAI-compatible server that ignores keys)."""
    where: str
    """The fleet file entry errors name (``/etc/mcos/fleet.toml: agents.jarvis``)."""
    max_output: int = 4096
    """The agent's ``max_output_tokens``: the output cap of a call whose body names none."""
    base_dir: Path | None = None
    """Where a relative ``file:`` reference is found (the fleet file's folder)."""


@dataclass(frozen=True)
class UpstreamKey:
    """A resolved key and the fingerprint that names it in rate limits and logs."""

    value: str
    fingerprint: str


def gateway_agents(fleet: Fleet) -> dict[str, GatewayAgent]:
    """Every agent of ``fleet`` whose model goes through Mission Control (``route =
    "gateway"``, a provider with a network API)."""
    out = {}
    for name, agent in fleet.agents.items():
        model = agent.model
        if not model.through_gateway:
            continue
        models = {model.id: model}
        triage = agent.triage_model
        if triage is not None and triage.provider == model.provider:
            models.setdefault(triage.id, triage)
        out[name] = GatewayAgent(
            provider=model.provider,
            models=models,
            key=agent.key,
            where=f"{fleet.path}: agents.{name}",
            max_output=agent.max_output_tokens,
            base_dir=fleet.base_dir,
        )
    return out


def fingerprint(base_url: str, key: str | None) -> str:
    """Names a key at one provider without revealing it: agents that share a key share it."""
    digest = hashlib.sha256(f"{base_url}\0{key or ''}".encode()).hexdigest()
    return f"key-{digest[:16]}"


def resolve(agent: str, config: GatewayAgent, base_url: str) -> UpstreamKey | None:
    """The key ``agent`` calls ``base_url`` with; None when it has none (allowed only for the
    OpenAI-compatible API). ``ConfigError`` naming the agent and the reference when the
    reference does not resolve here."""
    if config.key is None:
        if config.provider == "anthropic":
            raise ConfigError(
                config.where,
                "key",
                f"{agent} has no key reference: its model calls go through Mission Control, "
                f"which needs agents.{agent}.key to call Anthropic",
            )
        return None
    try:
        value = resolve_key(config.key, where=config.where, base_dir=config.base_dir)
    except ConfigError as e:
        raise ConfigError(
            config.where, "key", f"{e.problem} (where Mission Control runs; {agent} holds no key)"
        ) from None
    remember(value)  # whatever echoes it (an upstream error, a log line) is redacted
    return UpstreamKey(value, fingerprint(base_url, value))
