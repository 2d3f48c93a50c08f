"""Key references resolved at start: a missing or empty secret stops the agent, loudly.

In the field an agent was down for nine hours because a migration left empty variable
references; here such a reference is a configuration error naming the reference, never the
value, and the agent does not start (exit 78, state *misconfigured*).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mcos.config.models import Fleet, parse_key_ref
from mcos.domain.redaction import remember
from mcos.exceptions import ConfigError

_UNEXPANDED = re.compile(r"^\$(\{[A-Za-z_][A-Za-z0-9_]*\}|[A-Za-z_][A-Za-z0-9_]*)$")


def _check(value: str, where: str, ref: str) -> str:
    stripped = value.strip()
    remember(stripped)
    if not stripped:
        raise ConfigError(where, "key", f"{ref} is empty")
    if _UNEXPANDED.match(stripped):
        raise ConfigError(
            where, "key", f"{ref} holds an unexpanded variable ({stripped}), not a key"
        )
    return stripped


def resolve_key(
    reference: str,
    *,
    where: str,
    env: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
) -> str:
    """The secret a reference points at (``env:VAR``, ``file:PATH``, ``credential:NAME``).

    ``where`` names the configuration entry in errors (``fleet.toml: agents.jarvis``);
    credentials come from systemd's ``$CREDENTIALS_DIRECTORY``.
    """
    env = os.environ if env is None else env
    ref = parse_key_ref(reference)
    if ref.kind == "env":
        if ref.name not in env:
            raise ConfigError(where, "key", f"{reference}: the variable {ref.name} is not set")
        return _check(env[ref.name], where, reference)
    if ref.kind == "file":
        path = Path(ref.name)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
    else:
        folder = env.get("CREDENTIALS_DIRECTORY")
        if not folder:
            raise ConfigError(
                where,
                "key",
                f"{reference}: no $CREDENTIALS_DIRECTORY (run under systemd with "
                "LoadCredential=, or use env: or file:)",
            )
        path = Path(folder) / ref.name
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(where, "key", f"{reference}: {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(
            where, "key", f"{reference}: cannot read {path} ({e.__class__.__name__})"
        ) from None
    return _check(text, where, reference)


GATEWAY_NOTE = (
    " (its model calls go through Mission Control, which resolves this key where it runs)"
)
"""Said of an agent's key when its model calls go through the gateway: the key must resolve
where Mission Control runs, and the agent's host needs none."""


@dataclass(frozen=True)
class KeyUse:
    """One key reference written in the fleet file, and where."""

    owner: str
    """``agent jarvis``, ``channel tg``, ``MCP server github``: who uses it."""
    where: str
    """The key path: ``agents.jarvis.key``, ``channels.tg.token``, ``mcp.github.env.TOKEN``."""
    reference: str
    note: str = ""
    """Said after a problem with it (where it must resolve)."""


@dataclass(frozen=True)
class Resolved:
    """A key reference with its value, or why it has none (never the value in ``problem``)."""

    use: KeyUse
    value: str = ""
    problem: str = ""


def key_uses(fleet: Fleet) -> list[KeyUse]:
    """Every key reference of the fleet file: agents' keys, channels' and calendars' secrets
    (OAuth client secrets included), MCP servers' environment values and telemetry headers
    written as references."""
    uses = [
        KeyUse(
            f"agent {name}",
            f"agents.{name}.key",
            a.key,
            GATEWAY_NOTE if a.model.through_gateway else "",
        )
        for name, a in sorted(fleet.agents.items())
        if a.key is not None
    ]
    uses += _channel_uses(fleet)
    for name, m in sorted(fleet.mcp.items()):
        for var, value in sorted(m.env.items()):
            if _is_reference(value):
                uses.append(KeyUse(f"MCP server {name}", f"mcp.{name}.env.{var}", value))
    for header, value in sorted(fleet.telemetry.headers.items()):
        if _is_reference(value):
            uses.append(KeyUse("telemetry", f"telemetry.headers.{header}", value))
    return uses


def _channel_uses(fleet: Fleet) -> list[KeyUse]:
    """The secrets of channels (parked ones aside: resolved only once enabled) and calendars."""
    uses = []
    for name, c in sorted(fleet.channels.items()):
        if not c.enabled:  # parked: its secrets are not resolved until it is enabled
            continue
        for field in ("token", "password", "smtp_password", "webhook_secret"):
            ref = getattr(c, field)
            if ref is not None:
                uses.append(KeyUse(f"channel {name}", f"channels.{name}.{field}", ref))
        if c.oauth is not None:
            for field in ("client_secret", "refresh_token"):
                ref = getattr(c.oauth, field)
                if ref is not None:
                    key = f"channels.{name}.oauth.{field}"
                    uses.append(KeyUse(f"channel {name}", key, ref))
    for name, cal in sorted(fleet.calendars.items()):
        if not cal.enabled:  # parked, like a channel
            continue
        if cal.password is not None:
            uses.append(KeyUse(f"calendar {name}", f"calendars.{name}.password", cal.password))
        if cal.oauth is not None and cal.oauth.client_secret is not None:
            key = f"calendars.{name}.oauth.client_secret"
            uses.append(KeyUse(f"calendar {name}", key, cal.oauth.client_secret))
    return uses


def resolve_all(fleet: Fleet, env: Mapping[str, str] | None = None) -> list[Resolved]:
    """Each key reference resolved as an agent or channel resolves it at start: `mcos config
    check` and `mcos doctor` both judge a fleet's secrets by this, one rule for both."""
    out = []
    for use in key_uses(fleet):
        try:
            value = resolve_key(use.reference, where=use.where, env=env, base_dir=fleet.base_dir)
        except ConfigError as e:
            out.append(Resolved(use, problem=e.problem))
        else:
            out.append(Resolved(use, value=value))
    return out


def _is_reference(value: str) -> bool:
    """Whether an MCP environment value is a key reference (else a literal, passed as is)."""
    try:
        parse_key_ref(value)
    except ValueError:
        return False
    return True
