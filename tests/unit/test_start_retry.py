"""An agent's start-up rides out a brief Mission Control or database outage."""

from __future__ import annotations

import pytest

from mcos.client import ServerUnreachable
from mcos.exceptions import Forbidden, StoreUnavailable
from mcos.runtime import process
from mcos.runtime.process import reaching_mission_control


async def test_a_blip_is_tried_again_until_it_answers() -> None:
    """Before, the clock measurement and the workspace pull failed the start on the first 503
    and the agent exited into its supervisor's restart count."""
    failures = [StoreUnavailable("PostgreSQL at … is unavailable"), ServerUnreachable("cut")]
    calls = 0

    async def step() -> str:
        nonlocal calls
        calls += 1
        if failures:
            raise failures.pop(0)
        return "answered"

    assert await reaching_mission_control(step, "clock") == "answered"
    assert calls == 3


async def test_other_errors_and_a_long_outage_still_fail_the_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def refused() -> None:
        raise Forbidden("no")

    with pytest.raises(Forbidden):
        await reaching_mission_control(refused, "clock")
    monkeypatch.setattr(process, "START_RETRY_FOR", 0.5)

    async def down() -> None:
        raise StoreUnavailable("still down")

    with pytest.raises(StoreUnavailable, match="still down"):
        await reaching_mission_control(down, "clock")
