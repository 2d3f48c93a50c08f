"""The clock, health and metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mcos.api_models import HealthResponse, TimeResponse
from mcos.exceptions import StoreError
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


@router.get("/metrics", include_in_schema=False)
async def metrics(mc: MC) -> Response:
    """Prometheus metrics; queue depths are read from the store at scrape time."""
    gauge = mc.metrics.queue_depth
    gauge.clear()
    for d in await mc.store.inbox_depths():
        gauge.labels(inbox=d.inbox, state="queued").set(d.queued)
        gauge.labels(inbox=d.inbox, state="claimed").set(d.claimed)
        gauge.labels(inbox=d.inbox, state="dead").set(d.dead)
    return Response(generate_latest(mc.metrics.registry), media_type=CONTENT_TYPE_LATEST)
