"""The fleet's agents as Mission Control sees them."""

from __future__ import annotations

from fastapi import APIRouter

from mcos.api_models import AgentOut
from mcos.exceptions import NotFound
from mcos.server.routes.deps import MC, Caller
from mcos.server.routes.messages import ERRORS

router = APIRouter(prefix="/v1", tags=["agents"])


@router.get("/agents", response_model=list[AgentOut], responses=ERRORS)
async def list_agents(mc: MC, caller: Caller) -> list[AgentOut]:
    """Every agent with its queue depth and when it was last seen."""
    agents = await mc.store.list_agents()
    depths = {d.inbox: d for d in await mc.store.inbox_depths([a.name for a in agents])}
    return [
        AgentOut(
            name=a.name,
            role=a.role,
            host=a.host,
            reports_to=a.reports_to,
            last_seen_at=a.last_seen_at,
            queued=depths[a.name].queued,
            claimed=depths[a.name].claimed,
            dead=depths[a.name].dead,
        )
        for a in agents
    ]


@router.get("/agents/{name}", response_model=AgentOut, responses=ERRORS)
async def get_agent(name: str, mc: MC, caller: Caller) -> AgentOut:
    """One agent."""
    for agent in await list_agents(mc, caller):
        if agent.name == name:
            return agent
    raise NotFound(f"no agent {name!r}", agent=name)
