"""A crashed agent waits out its backoff and any cooldown Mission Control reports, including
while the supervisor is still asking for that cooldown: the exit cleared the agent's pid, so a
tick in that moment would otherwise start it at once (seen under load: "restart 1 in 5.9s",
then started within the second)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import cast

from mcos.api_models import LeaseOut
from mcos.client import AsyncClient
from mcos.config import load_fleet
from mcos.config.scaffold import init_fleet
from mcos.supervisor.policy import Exit
from mcos.supervisor.supervisor import Supervisor
from tests.waiting import eventually


async def test_no_tick_starts_a_crashed_agent_while_its_cooldown_is_asked(tmp_path: Path) -> None:
    fleet = load_fleet(str(init_fleet(tmp_path)))
    name, agent = next(iter(fleet.agents.items()))
    asked, answer = asyncio.Event(), asyncio.Event()

    async def slow_cooldown(_: object) -> float:  # Mission Control answering late: 30 s left
        asked.set()
        await answer.wait()
        return 30.0

    async with AsyncClient("http://127.0.0.1:9", "unreachable") as client:
        supervisor = Supervisor(fleet, {agent.host}, client, say=lambda _: None)
        supervisor._cooldown_left = slow_cooldown  # type: ignore[method-assign]
        slot = supervisor.slots[name]
        slot.lease = cast(LeaseOut, object())  # held: only the pid and the clock gate a start
        assert supervisor._may_act(slot)  # no pid, no wait: a tick would start it
        exited = asyncio.create_task(supervisor._after_exit(slot, 1, Exit.CRASHED))
        await eventually("the cooldown asked", asked.is_set)
        assert not supervisor._may_act(slot), "a tick now would start it inside its cooldown"
        answer.set()
        await exited
        assert not supervisor._may_act(slot)  # the cooldown, not the 1 s backoff
        assert slot.status == "restarting"
        assert "restart 1 in 30.0s" in slot.detail
