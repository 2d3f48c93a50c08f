"""Reaching the model through Mission Control's gateway: where, with what, and what its own
answers mean.

In gateway mode an agent holds no model key: the provider's SDK points at Mission Control with
the agent's Mission Control token as its credential (and the instance's fence), and Mission
Control calls the provider with the key it keeps. Its own answers — the budget cannot pay, it
has no key for the agent, another instance holds the agent — come in the provider's error
shape and are turned back into our errors here, for every adapter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mcos.domain.leases import FENCE_HEADER
from mcos.domain.redaction import redact
from mcos.exceptions import Fenced, KeyUnavailable, McosError, OverBudget

GATEWAY_PATH = "/v1/gateway"
PURPOSE_HEADER = "X-Mcos-Purpose"
"""What a call is for (``heartbeat``, ``message``…), recorded by Mission Control with its usage."""
RESERVATION_HEADER = "X-Mcos-Reservation"
"""On the gateway's answer: the id of the hold the call was metered under (a turn's trace links
its calls to what Mission Control recorded by it)."""


def reservation_of(headers: Mapping[str, str]) -> int | None:
    """The gateway's ``X-Mcos-Reservation`` of an answer, if it carries one."""
    value = headers.get(RESERVATION_HEADER.lower()) or headers.get(RESERVATION_HEADER) or ""
    return int(value) if value.isdigit() and int(value) > 0 else None


@dataclass(frozen=True)
class GatewayAccess:
    """How an agent reaches Mission Control's model gateway."""

    url: str
    """Mission Control's URL (``[server] url``)."""
    token: str
    """The agent's own Mission Control token: its only credential."""
    fence: int | None = None
    """The instance's fencing token, when a supervisor leased it."""

    def base_url(self, provider: str) -> str:
        """What the provider's SDK takes as ``base_url``: the Anthropic SDK appends
        ``/v1/messages``, the OpenAI SDK ``/chat/completions``."""
        root = f"{self.url.rstrip('/')}{GATEWAY_PATH}/{provider}"
        return root if provider == "anthropic" else f"{root}/v1"

    @property
    def headers(self) -> dict[str, str]:
        """Headers every call carries (the fence, so a stale instance cannot spend)."""
        return {} if self.fence is None else {FENCE_HEADER: str(self.fence)}


def precise_wait(headers: Mapping[str, str]) -> float | None:
    """The gateway's ``retry-after-ms`` in seconds (its exact rest of a key), if present."""
    try:
        return max(float(headers.get("retry-after-ms", "")) / 1000, 0.001)
    except ValueError:
        return None


def purpose_headers(metered: bool, purpose: str) -> dict[str, str]:
    """The header naming a metered call's purpose (ASCII: it is an HTTP header), if any."""
    if not (metered and purpose):
        return {}
    return {PURPOSE_HEADER: purpose.encode("ascii", "replace").decode()[:100]}


def gateway_error(error: Exception) -> McosError | None:
    """Mission Control's own answer through its gateway, as the error it stands for: the
    budget cannot pay for the call (402 ``mcos_over_budget``), Mission Control has no key for
    the agent (``mcos_misconfigured``), another instance holds the agent (409 ``fenced``).

    ``error`` is either SDK's ``APIError`` (a status error's ``body`` is the parsed answer);
    None for the provider's own errors, which the adapter classifies as before.
    """
    raw: Any = getattr(error, "body", None)
    body = raw if isinstance(raw, dict) else {}
    inner = body.get("error", body)
    if not isinstance(inner, dict):
        return None
    kind = inner.get("type") or inner.get("code")
    message = redact(str(inner.get("message") or error))
    if kind == "mcos_over_budget":
        return OverBudget(message)
    if kind == "mcos_misconfigured":
        return KeyUnavailable("Mission Control", "", message)
    if getattr(error, "status_code", None) == 409 and kind == "fenced":
        return Fenced(message)
    return None
