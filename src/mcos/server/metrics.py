"""Prometheus metrics of one Mission Control process, in their own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """Counters and gauges exported at ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Histogram(
            "mcos_http_request_seconds",
            "HTTP requests by route and status.",
            ["route", "method", "status"],
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 31),
        )
        self.sent = Counter("mcos_messages_sent", "Messages stored, by kind.", ["kind"], registry=r)
        self.repeats = Counter(
            "mcos_messages_repeated", "Sends answered from an idempotency key.", registry=r
        )
        self.delivered = Counter(
            "mcos_deliveries_claimed", "Deliveries handed to a consumer.", registry=r
        )
        self.redelivered = Counter(
            "mcos_deliveries_redelivered", "Claims of a delivery claimed before.", registry=r
        )
        self.acked = Counter("mcos_deliveries_acked", "Deliveries acknowledged.", registry=r)
        self.nacked = Counter("mcos_deliveries_nacked", "Deliveries given back.", registry=r)
        self.deferred = Counter(
            "mcos_deliveries_deferred",
            "Claims handed back unused: the recipient could not act (no attempt used).",
            registry=r,
        )
        self.requeued = Counter(
            "mcos_dead_letters_requeued", "Dead letters put back in their inbox.", registry=r
        )
        self.queue_depth = Gauge(
            "mcos_queue_depth", "Deliveries per inbox and state.", ["inbox", "state"], registry=r
        )
        self.auth_failures = Counter(
            "mcos_auth_failures", "Requests refused for missing or bad credentials.", registry=r
        )
        self.login_failures = Counter(
            "mcos_login_failures",
            "Dashboard sign-ins refused: bad or unusable token, agent token, or throttled (429).",
            ["reason"],
            registry=r,
        )
        self.refusals = Counter(
            "mcos_authorization_refusals",
            "Authenticated requests refused (each is audited).",
            ["action"],
            registry=r,
        )
        self.agent = Gauge(
            "mcos_agent",
            "Per agent, as its runtime last reported: beats, beats without a model call, "
            "model turns, model calls, restarts, clock offset (seconds).",
            ["agent", "measure"],
            registry=r,
        )
        self.agent_state = Gauge(
            "mcos_agent_state", "1 for each agent's current state.", ["agent", "state"], registry=r
        )
        self.model_tokens = Gauge(
            "mcos_model_tokens_today", "Model tokens today (UTC) by agent and kind.",
            ["agent", "kind"], registry=r,
        )  # fmt: skip
        self.model_calls = Gauge(
            "mcos_model_calls_today", "Model calls today (UTC) by agent.", ["agent"], registry=r
        )
        self.model_cost = Gauge(
            "mcos_model_cost_usd_today", "Model spend today (UTC) by agent.", ["agent"], registry=r
        )
        self.incidents = Gauge(
            "mcos_incidents", "Incidents by severity and state.", ["severity", "state"], registry=r
        )
        self.approvals = Gauge(
            "mcos_approvals", "Approval requests by action and state.", ["action", "state"],
            registry=r,
        )  # fmt: skip
        self.lease_grants = Gauge(
            "mcos_lease_grants", "Grants of each agent's lease so far (its fencing token).",
            ["agent"], registry=r,
        )  # fmt: skip
