"""The clock, health and metrics."""

from __future__ import annotations

import secrets
from collections import Counter
from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mcos.api_models import HealthResponse, TimeResponse
from mcos.exceptions import AuthError, StoreError
from mcos.server.routes.deps import MC

router = APIRouter(tags=["system"])


@router.get("/v1/time", response_model=TimeResponse)
async def time_now(mc: MC) -> TimeResponse:
    """Mission Control's authoritative clock (the database server's time); no auth needed."""
    now = await mc.store.now()
    return TimeResponse(now=now, unix=now.timestamp())


@router.get("/healthz", response_model=HealthResponse)
async def healthz(mc: MC, response: Response) -> HealthResponse:
    """Whether the server can reach its store (503 when it cannot)."""
    try:
        version = await mc.store.schema_version()
    except StoreError as exc:
        response.status_code = 503
        return HealthResponse(status="degraded", store=exc.message, schema_version=0)
    return HealthResponse(status="ok", store=mc.store.dialect, schema_version=version)


def _check_metrics_token(mc: MC, authorization: str | None) -> None:
    """With ``[server] metrics_token`` set, a scrape must carry it (compared in constant time)."""
    wanted = mc.settings.metrics_token
    if wanted is None:
        return
    scheme, _, presented = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(
        presented.strip().encode(), wanted.encode()
    ):
        raise AuthError("/metrics needs `Authorization: Bearer <the [server] metrics_token>`")


@router.get("/metrics", include_in_schema=False)
async def metrics(
    mc: MC, authorization: Annotated[str | None, Header(include_in_schema=False)] = None
) -> Response:
    """Prometheus metrics (behind ``[server] metrics_token`` when set); queue depths are read
    from the store at scrape time."""
    _check_metrics_token(mc, authorization)
    gauge = mc.metrics.queue_depth
    gauge.clear()
    for d in await mc.store.inbox_depths():
        gauge.labels(inbox=d.inbox, state="queued").set(d.queued)
        gauge.labels(inbox=d.inbox, state="claimed").set(d.claimed)
        gauge.labels(inbox=d.inbox, state="dead").set(d.dead)
    await _fleet_gauges(mc)
    return Response(generate_latest(mc.metrics.registry), media_type=CONTENT_TYPE_LATEST)


_AGENT_MEASURES = {
    "beats": "beats",
    "beats_without_model": "beats_ok",
    "model_turns": "turns",
    "model_calls": "model_calls",
    "restarts": "restarts",
    "clock_offset_seconds": "clock_offset",
}


async def _fleet_gauges(mc: MC) -> None:
    """Read at scrape time from the store, so every server process reports the same."""
    m = mc.metrics
    for g in (m.agent, m.agent_state, m.model_tokens, m.model_calls, m.model_cost, m.incidents,
              m.approvals, m.lease_grants):  # fmt: skip
        g.clear()
    for s in await mc.store.agent_states():
        m.agent_state.labels(agent=s.name, state=s.state).set(1)
        for measure, key in _AGENT_MEASURES.items():
            value = s.info.get(key)
            if isinstance(value, int | float):
                m.agent.labels(agent=s.name, measure=measure).set(value)
    today = (await mc.store.now()).date().isoformat()
    for u in await mc.store.usage(today):
        m.model_calls.labels(agent=u.agent).set(u.calls)
        m.model_cost.labels(agent=u.agent).set(u.cost_micros / 1_000_000)
        for kind in ("input", "output", "cache_read", "cache_write"):
            m.model_tokens.labels(agent=u.agent, kind=kind).set(getattr(u.usage, kind))
    counts: Counter[tuple[str, str]] = Counter(
        (i.severity, i.state.value) for i in await mc.store.incidents(limit=10_000)
    )
    for (severity, state), n in counts.items():
        m.incidents.labels(severity=severity, state=state).set(n)
    asks: Counter[tuple[str, str]] = Counter(
        (a.action, a.state.value) for a in await mc.store.approvals(limit=10_000)
    )
    for (action, state), n in asks.items():
        m.approvals.labels(action=action, state=state).set(n)
    for lease in await mc.store.leases():
        m.lease_grants.labels(agent=lease.agent).set(lease.fence)
