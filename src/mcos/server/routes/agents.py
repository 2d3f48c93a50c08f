"""The fleet's agents as Mission Control sees them."""

from __future__ import annotations

from fastapi import APIRouter

from mcos.api_models import AgentOut, StateReport
from mcos.domain.agent_state import AgentStatus, current
from mcos.domain.budget import MICROS
from mcos.domain.messages import MessageKind, NewMessage, Priority
from mcos.domain.redaction import redact, scrub
from mcos.domain.tokens import PrincipalKind
from mcos.exceptions import Forbidden, NotFound
from mcos.server.governance import SYSTEM
from mcos.server.routes.deps import MC, Caller, require_supervisor
from mcos.server.routes.messages import ERRORS
from mcos.server.severity import held_paused

router = APIRouter(prefix="/v1", tags=["agents"])


def _usd(micros: int | None) -> float | None:
    return None if micros is None else micros / MICROS


@router.get("/agents", response_model=list[AgentOut], responses=ERRORS)
async def list_agents(mc: MC, caller: Caller) -> list[AgentOut]:
    """Every agent with its queue depth and when it was last seen."""
    return await _agents_out(mc, None)


async def _agents_out(mc: MC, name: str | None) -> list[AgentOut]:
    """Every agent, or only ``name``: a state report answers about one agent in reads of
    that one (each report once read every agent's state twice: a start storm of N agents
    cost N² row reads)."""
    names = None if name is None else [name]
    agents = await mc.store.list_agents(names)
    depths = {d.inbox: d for d in await mc.store.inbox_depths([a.name for a in agents])}
    states = {s.name: s for s in await mc.store.agent_states(names)}
    now = await mc.store.now()
    today = now.date().isoformat()
    spent = {u.agent: u.cost_micros for u in await mc.store.usage(today, agent=name)}
    out = []
    for a in agents:
        state = states.get(a.name)
        shown, detail, until = (
            current(state.state, state.detail, state.until, now) if state else (None, "", None)
        )
        cap = mc.settings.budgets.get(a.name)
        out.append(
            AgentOut(
                name=a.name,
                role=a.role,
                host=a.host,
                reports_to=a.reports_to,
                last_seen_at=a.last_seen_at,
                queued=depths[a.name].queued,
                claimed=depths[a.name].claimed,
                dead=depths[a.name].dead,
                state=shown,
                state_detail=detail,
                state_until=until,
                state_at=state.updated_at if state else None,
                state_info=state.info if state else {},
                spent_today_usd=spent.get(a.name, 0) / MICROS,
                budget_usd=None
                if cap is None or cap.usd_micros is None
                else cap.usd_micros / MICROS,
            )
        )
    return out


@router.get("/agents/{name}", response_model=AgentOut, responses=ERRORS)
async def get_agent(name: str, mc: MC, caller: Caller) -> AgentOut:
    """One agent (a host token: only one it may run)."""
    if caller.kind is PrincipalKind.HOST:
        await require_supervisor(mc, caller, "agent.read", name)
    for agent in await _agents_out(mc, name):
        if agent.name == name:
            return agent
    raise NotFound(f"no agent {name!r}", agent=name)


@router.put("/agents/{name}/state", response_model=AgentOut, responses=ERRORS)
async def report_state(name: str, request: StateReport, mc: MC, caller: Caller) -> AgentOut:
    """An agent's runtime (or an operator) reports its state: running, cooling down, …

    While Mission Control holds the agent paused (a ping-pong loop), the agent's own reports
    change nothing and the answer says ``paused``: only an operator resumes it.
    """
    if caller.kind is PrincipalKind.AGENT and caller.name != name:
        rule = "an agent may report only its own state"
        await mc.refuse(caller, "agent.state", rule, agent=name)
        raise Forbidden(rule, rule=rule)
    if caller.kind is PrincipalKind.HOST:
        await require_supervisor(mc, caller, "agent.state", name)
    if await mc.store.recipient_kind(name) is None:
        raise NotFound(f"no agent {name!r}", agent=name)
    # Only an operator resumes a paused agent: its supervisor's reports change nothing either.
    if caller.kind is not PrincipalKind.OPERATOR and await held_paused(mc, name):
        return await get_agent(name, mc, caller)  # the runtime reads the pause in the answer
    await mc.store.set_agent_state(
        name, request.state.value, redact(request.detail), request.until, scrub(request.info)
    )
    if caller.kind is PrincipalKind.HOST and request.state is AgentStatus.FAILED:
        await _report_failure(mc, caller.name, name, request.detail)
    return await get_agent(name, mc, caller)


async def _report_failure(mc: MC, host: str, name: str, detail: str) -> None:
    """A supervisor gave up on an agent: Mission Control tells whom it reports to (or the first
    human) — a host token sends no messages of its own."""
    agent = next(iter(await mc.store.list_agents([name])), None)
    target = (agent.reports_to if agent else None) or next(iter(mc.settings.human_roles), None)
    if target is None:
        return
    sent = await mc.store.send(
        NewMessage(
            sender=SYSTEM,
            recipient=target,
            kind=MessageKind.REPORT,
            priority=Priority.URGENT,
            subject=f"P2: {name} failed (crash loop)",
            body=f"{name} was stopped by the supervisor of host {host}: {detail}. Fix the cause, "
            "then restart the supervisor.",
            meta={"incident": "P2", "agent": name, "host": host},
        )
    )
    if mc.pager is not None and target in mc.settings.human_roles:
        await mc.pager.message_to_human(sent.message)
