"""The fleet at a glance: ``mcos status``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import typer

from mcos.api_models import AgentOut, LeaseOut
from mcos.cli.common import (
    FleetOpt,
    JsonOpt,
    TokenOpt,
    UrlOpt,
    age,
    connect,
    console,
    friendly_errors,
    print_json,
    table,
)
from mcos.client import Calls
from mcos.exceptions import Forbidden

app = typer.Typer()

_NOTED_STATES = ("misconfigured", "paused", "over_budget", "cooling_down", "failed", "starting")


@app.command()
def status(
    fleet: FleetOpt = None, url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False
) -> None:
    """The fleet at a glance: every agent, when it was last seen, its queue."""
    with friendly_errors(), connect(url, token, fleet) as client:
        health = client.do(Calls.health())
        now = client.do(Calls.time()).now
        agents = client.do(Calls.agents())
        try:
            leases = {x.agent: x for x in client.do(Calls.leases())}
        except Forbidden:  # an agent's token: who holds which agent is the operators' business
            leases = {}
    if as_json:
        print_json({"health": health, "now": now, "agents": agents, "leases": leases})
        return
    console.print(
        f"Mission Control {client.base_url}: {health.status} "
        f"(store {health.store}, schema v{health.schema_version}), "
        f"clock {now:%Y-%m-%d %H:%M:%S} UTC"
    )
    table(
        f"{len(agents)} agent(s)",
        ["agent", "role", "host", "state", "pid", "lease (fence)", "restarts", "last seen",
         "queued", "dead", "spent today", "notes"],
        [_row(a, leases.get(a.name), now) for a in agents],
    )  # fmt: skip


def _row(a: AgentOut, lease: LeaseOut | None, now: datetime) -> tuple[Any, ...]:
    budget = f" / ${a.budget_usd:.2f}" if a.budget_usd is not None else ""
    return (
        a.name, a.role, a.host, _state(a, now), a.state_info.get("pid", ""), _lease(lease, now),
        a.state_info.get("restarts", ""), age(a.last_seen_at, now), a.queued, a.dead,
        f"${a.spent_today_usd:.2f}{budget}", notes(a),
    )  # fmt: skip


def _lease(lease: LeaseOut | None, now: datetime) -> str:
    if lease is None:
        return "none"
    holder = lease.holder.split("/")[0] if lease.expires_at > now else "expired"
    return f"{holder} ({lease.fence})"


def _state(agent: AgentOut, now: datetime) -> str:
    if agent.state is None:
        return "not started"
    text = agent.state.replace("_", " ")
    if agent.state_until is not None and agent.state_until > now:
        text += f" until {agent.state_until:%H:%M:%S}"
    beat = agent.state_info.get("last_beat") or {}
    if beat:
        text += f" · beat {beat.get('outcome', '?')}"
    return text


def notes(agent: AgentOut) -> str:
    """What an operator should know about an agent beyond its state, in one cell."""
    info = agent.state_info
    found = [f"truncated {t}" for t in info.get("truncations", [])]
    if agent.state in _NOTED_STATES or agent.state_detail.startswith("last model call failed"):
        found.append(agent.state_detail)
    if info.get("label") == "offline model":
        found.append("offline model")
    triage = info.get("triage")
    if isinstance(triage, dict):
        found.append(
            f"first look: {triage.get('settled', 0)} settled, {triage.get('to_main', 0)} to the "
            f"main model, {triage.get('skipped', 0)} straight to it"
        )
    if agent.dead:
        found.append(f"{agent.dead} dead letter(s): mcos dead-letters list --inbox {agent.name}")
    channels = info.get("channels") or {}
    if isinstance(channels, dict) and channels:
        found.append(
            "channels "
            + ", ".join(
                f"{n} {'receiving' if on else 'not receiving'}" for n, on in channels.items()
            )
        )
    return "; ".join(n for n in found if n)
