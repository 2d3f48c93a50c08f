"""What every request handler of Mission Control shares: the store, settings, metrics, auth."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import Request

from mcos.config.models import ModelConfig
from mcos.domain.audit import AuditEvent
from mcos.domain.authority import Matrix
from mcos.domain.budget import DEFAULT_PRICES, MIN_OUTPUT_TOKENS, Limits, Price
from mcos.domain.paging import PageRoute
from mcos.domain.pingpong import PingPongRule
from mcos.domain.severity import SendLimits
from mcos.domain.tokens import Principal
from mcos.domain.workspace_sync import SyncLimits
from mcos.ops.filemodes import private_dir
from mcos.server.auth import Authenticator
from mcos.server.limits import SendWindows
from mcos.server.metering import Meter
from mcos.server.metrics import Metrics
from mcos.server.throttle import FailureThrottle
from mcos.store import Directory, Store
from mcos.store.notify import Waiters

if TYPE_CHECKING:
    from mcos.server.audit_checkpoint import AuditCheckpoints
    from mcos.server.gateway.keys import GatewayAgent
    from mcos.server.paging import Pager


@dataclass(frozen=True)
class ChannelBinding:
    """A channel account of the fleet file as Mission Control sees it."""

    kind: str
    agent: str | None
    """The bound agent; None: Mission Control's own (paging humans)."""
    lease_key: str | None = None
    """The one lease key its receiver may hold (:func:`mcos.channels.factory.lease_key`);
    None: none is granted (a mock folder or a webhook needs no lease, or the key is unknown)."""
    lease_key_problem: str = ""
    """Why Mission Control could not derive ``lease_key`` (a bot token it cannot resolve)."""


@dataclass(frozen=True)
class ServerSettings:
    """Tunables of one Mission Control process; defaults suit a single machine."""

    token_key: bytes
    """Key of the keyed hash under which tokens are stored (same on every server of a fleet)."""
    directory: Directory | None = None
    """The fleet's agents, humans and topics, synced into the store at start."""
    max_body_bytes: int = 256 * 1024
    """Larger request bodies are refused with 413 before they are read."""
    max_wait_seconds: float = 30.0
    """Longest long-poll a client may ask for."""
    poll_fallback_seconds: float = 1.0
    """Parked long-polls are re-checked this often, all in one store query, for what no send
    announces (a lapsed claim, a deferred delivery now due, another process's send)."""
    token_cache_seconds: float = 2.0
    """How long a verified token is trusted before it is looked up again."""
    bootstrap_operator: str | None = None
    """Operator name for the first token written at start when no operator token exists."""
    state_dir: str | None = None
    """Where the bootstrap operator token is written (mode 0600)."""
    budgets: dict[str, Limits] = field(default_factory=dict)
    """Each agent's daily caps (absent: no cap)."""
    fleet_budget: Limits = field(default_factory=Limits)
    """The whole fleet's daily caps."""
    matrix: Matrix = field(default_factory=lambda: Matrix.build({}))
    """Who may do which governed action alone, and which committee approves it."""
    human_roles: dict[str, str] = field(default_factory=dict)
    """Each human of the fleet and their role (``founder``, ``operator``)."""
    reports_per_hour: int = 5
    """Incident reports one reporter may make in any hour."""
    approval_expiry: timedelta = timedelta(hours=24)
    """A pending request expires (a terminal state, the humans told) after this long."""
    incident_expiry: timedelta = timedelta(hours=24)
    """A report nobody confirmed is dismissed as expired (a terminal state) after this long."""
    workspaces: dict[str, str] = field(default_factory=dict)
    """Each agent's workspace folder, shown read-only on the dashboard when it is local."""
    sweep_seconds: float = 60.0
    """How often expiries and reminders are swept."""
    channels: dict[str, ChannelBinding] = field(default_factory=dict)
    """Channel accounts and the agent each is bound to."""
    page_routes: dict[str, tuple[PageRoute, ...]] = field(default_factory=dict)
    """Each human's paging channels with their address there, in the order tried."""
    repage_after: timedelta = timedelta(minutes=15)
    """An unacknowledged page is sent again after this long (at most ``max_page_attempts``)."""
    max_page_attempts: int = 3
    webhook_secrets: dict[str, str] = field(default_factory=dict)
    """Telegram channels in webhook mode: the secret Telegram must present."""
    send_limits: SendLimits = field(default_factory=SendLimits)
    """Per-sender limits on agents' messages (fan-out of alarms, messages per pair)."""
    pingpong: PingPongRule = field(default_factory=PingPongRule)
    """When agents messaging only each other are paused together."""
    login_failures_per_client: str = "10/minute"
    """Failed dashboard sign-ins (and bad bearer tokens) one client address may make in a moving
    window before it is refused with 429 (``limits`` notation)."""
    login_failures_per_prefix: str = "5/minute"
    """Failed dashboard sign-ins naming one token prefix before that prefix is refused (429)."""
    metrics_token: str | None = None
    """When set, ``/metrics`` needs ``Authorization: Bearer <this>`` (compared in constant time)."""
    audit_checkpoint_seconds: float = 2.0
    """How often the audit head is checkpointed to ``STATE/audit.checkpoint`` (and at shutdown)."""
    host_agents: dict[str, frozenset[str]] = field(default_factory=dict)
    """Each host of the fleet and the agents its supervisor may run (placed there or failing
    over to it): all a host token may touch."""
    gateway: dict[str, GatewayAgent] = field(default_factory=dict)
    """The agents whose model calls go through Mission Control: their models and key references
    (resolved here, at each call)."""
    max_model_body_bytes: int = 32 * 1024 * 1024
    """The body limit of the model gateway's routes (a long conversation; the providers'
    own limit)."""
    models: dict[str, ModelConfig] = field(default_factory=dict)
    """Each agent's model: with its triage model, the only ones Mission Control meters (prices
    and reserves) for it."""
    triage_models: dict[str, ModelConfig] = field(default_factory=dict)
    """Each agent's cheaper first-look model, where it has one."""
    prices: dict[str, Price] = field(default_factory=lambda: dict(DEFAULT_PRICES))
    """The fleet file's ``[prices]`` and the free offline model: they override genai-prices."""
    min_output_tokens: int = MIN_OUTPUT_TOKENS
    """The least output a reservation is clamped to when a cap has less left than the call's
    whole worst case (below it the call is refused)."""
    trace_days: float = 14
    """Turn traces are kept this many days (``[server] trace_days``), then swept away."""
    knowledge: dict[str, dict[str, str]] = field(default_factory=dict)
    """Each agent's knowledge folders: the label its chunk paths start with → the owner its
    chunks are kept under (``agent:NAME`` or ``shared:NAME``)."""
    workspace_sync: dict[str, SyncLimits] = field(default_factory=dict)
    """Each agent's ``[workspace_sync]`` limits (an agent not listed: the defaults)."""


@dataclass
class MissionControl:
    """The server's shared state, reachable from handlers through :func:`mission_control`."""

    store: Store
    settings: ServerSettings
    auth: Authenticator
    metrics: Metrics = field(default_factory=Metrics)
    last_touch: dict[str, float] = field(default_factory=dict)
    """When each agent's ``last_seen_at`` was last written (monotonic seconds)."""
    pager: Pager | None = None
    """Pages humans on Mission Control's own channels (None: nobody to page)."""
    windows: SendWindows = field(default_factory=SendWindows)
    """Recent sends, for the per-sender limits and the ping-pong rule."""
    checkpoints: AuditCheckpoints | None = None
    """Signed checkpoints of the audit head, kept in the state directory."""
    throttle: FailureThrottle = field(init=False)
    """Failed sign-ins per client address and per token prefix."""
    meter: Meter = field(init=False)
    """Prices, reserves and records every model call of the fleet (gateway and direct mode)."""
    parked: Waiters = field(default_factory=Waiters)
    """Long-polls waiting now, by inbox: woken together by :mod:`mcos.server.parked`'s re-check
    (what no send announces), not each re-claiming on its own."""

    def __post_init__(self) -> None:
        if self.settings.state_dir is not None:
            private_dir(Path(self.settings.state_dir))  # 0700: keys, tokens, checkpoints
        self.throttle = FailureThrottle(
            client=self.settings.login_failures_per_client,
            prefix=self.settings.login_failures_per_prefix,
        )
        self.meter = Meter(self)

    async def refuse(self, principal: Principal, action: str, rule: str, **targets: str) -> None:
        """Audit a refused request before the 403 goes out."""
        self.metrics.refusals.labels(action=action).inc()
        await self.store.record(
            AuditEvent(
                actor=principal.actor,
                action=action,
                targets=dict(targets),
                detail={"rule": rule},
                outcome="refused",
            )
        )


def mission_control(request: Request) -> MissionControl:
    """The MissionControl of the app handling ``request``."""
    mc: MissionControl = request.app.state.mc
    return mc
