"""Bearer tokens: their shape, how they are hashed, and how they are found.

A token looks like ``mcos_<prefix>_<secret>``. The 12-character prefix is stored in clear and
indexed, so a lookup is one index probe; the whole token is stored only as an HMAC-SHA256 under
the server's token key (a fast keyed hash is right for 256-bit random secrets: there is nothing
to brute-force). The clear token is shown once, at creation.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

TOKEN_RE = re.compile(r"^mcos_(?P<prefix>[a-z0-9]{12})_(?P<secret>[A-Za-z0-9_-]{43})$")
REDACTED = "mcos_…redacted…"


class PrincipalKind(StrEnum):
    """Whom a token authenticates."""

    AGENT = "agent"
    OPERATOR = "operator"
    HOST = "host"
    """A supervisor (`mcos up`) for one host: its agents' leases, state and tokens, nothing else."""


HOST_LABEL = "host:"
"""Agent tokens a host mints are labelled ``host:NAME …``; a new one replaces the previous."""


def minted_by_host(label: str, host: str) -> bool:
    """Whether a token with ``label`` was minted at start by the supervisor of ``host``."""
    return label.split(" ", 1)[0] == f"{HOST_LABEL}{host}"


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of a request."""

    kind: PrincipalKind
    name: str
    token_id: int | None = None

    @property
    def actor(self) -> str:
        """How the audit log names this caller, e.g. ``agent:ops`` or ``operator:founder``."""
        return f"{self.kind}:{self.name}"


@dataclass(frozen=True)
class TokenRecord:
    """A stored token (never the clear secret)."""

    id: int
    prefix: str
    digest: str
    kind: PrincipalKind
    name: str
    label: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    def usable(self, now: datetime) -> bool:
        """Whether this token authenticates at ``now``."""
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or now < self.expires_at


def new_token() -> tuple[str, str]:
    """A fresh clear token and its prefix."""
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    prefix = "".join(secrets.choice(alphabet) for _ in range(12))
    return f"mcos_{prefix}_{secrets.token_urlsafe(32)}", prefix


def parse_prefix(token: str) -> str | None:
    """The lookup prefix of a well-formed token, or None for anything else."""
    match = TOKEN_RE.match(token)
    return match.group("prefix") if match else None


def digest(key: bytes, token: str) -> str:
    """The keyed hash stored for ``token``."""
    return hmac.new(key, token.encode(), hashlib.sha256).hexdigest()


def matches(key: bytes, token: str, stored_digest: str) -> bool:
    """Constant-time comparison of a presented token with a stored digest."""
    return hmac.compare_digest(digest(key, token), stored_digest)


_TOKEN_ANYWHERE = re.compile(r"mcos_[a-z0-9]{12}_[A-Za-z0-9_-]{43}")


def redact(text: str) -> str:
    """``text`` with anything shaped like an mcos token — or any other known secret — replaced."""
    from mcos.domain.redaction import redact as redact_secrets  # noqa: PLC0415 (no cycle)

    return redact_secrets(_TOKEN_ANYWHERE.sub(REDACTED, text))
