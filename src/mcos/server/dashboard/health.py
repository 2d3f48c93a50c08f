"""The health banner on every dashboard page: what needs a person now, each with its link.

Counted from the same store the pages read: open incidents (by worst severity), requests
waiting for a decision, dead letters, agents failed / misconfigured / paused, and agents at
80% or more of today's dollar budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mcos.api_models import AgentOut
from mcos.domain.approvals import ApprovalState
from mcos.domain.incidents import OPEN
from mcos.server.context import MissionControl

BUDGET_WARNING = 0.8
"""The share of the daily budget at which the banner warns."""
DOWN = ("failed", "misconfigured", "paused", "over_budget")


@dataclass(frozen=True)
class Item:
    """One line of the banner."""

    level: str
    """``bad`` (red) or ``warn`` (amber)."""
    text: str
    href: str


@dataclass(frozen=True)
class Health:
    """The banner's lines; empty when nothing needs a person."""

    items: list[Item] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.items


async def summary(mc: MissionControl, agents: list[AgentOut]) -> Health:
    """What needs attention now across the fleet."""
    items: list[Item] = []
    incidents = [i for i in await mc.store.incidents(limit=200) if i.state in OPEN]
    if incidents:
        worst = min(i.severity for i in incidents)
        level = "bad" if worst in ("P0", "P1") else "warn"
        items.append(Item(level, f"{len(incidents)} open incident(s), worst {worst}", "/incidents"))
    pending = await mc.store.approvals(state=ApprovalState.PENDING.value, limit=200)
    if pending:
        items.append(Item("warn", f"{len(pending)} request(s) awaiting approval", "/approvals"))
    dead = sum(d.dead for d in await mc.store.inbox_depths())
    if dead:
        items.append(Item("bad", f"{dead} dead letter(s)", "/messages#dead-letters"))
    for a in agents:
        if a.state in DOWN:
            level = "warn" if a.state == "paused" else "bad"
            items.append(Item(level, f"{a.name} {a.state.replace('_', ' ')}", f"/agents/{a.name}"))
        elif a.budget_usd and a.spent_today_usd >= BUDGET_WARNING * a.budget_usd:
            share = a.spent_today_usd / a.budget_usd
            text = f"{a.name} at {share:.0%} of today's ${a.budget_usd:.2f} budget"
            items.append(Item("warn", text, f"/agents/{a.name}"))
    return Health(items)
