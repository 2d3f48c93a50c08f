"""An operator's restart request, carried out by the supervisor: real processes, PostgreSQL."""

from __future__ import annotations

import os
import signal

import pytest

from mcos.client import Calls
from tests.supervisor.conftest import RigFactory, agent_pids, wait_for
from tests.waiting import wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

AGENTS = """
[agents.jarvis]
role = "orchestrator"
host = "mini"
reports_to = "founder"

[agents.gene]
role = "ops"
host = "mini"
reports_to = "jarvis"
"""


def _one(rig_fleet: object, name: str) -> int | None:
    pids = agent_pids(rig_fleet, name).get(name, [])  # type: ignore[arg-type]
    return pids[0] if len(pids) == 1 else None


@pytest.mark.timeout(300)  # two agents start twice, on a machine shared with other suites
def test_a_restart_request_stops_and_starts_the_agent_once(
    fleet_rig_factory: RigFactory,
) -> None:
    rig = fleet_rig_factory(AGENTS)
    sup = rig.up("mini")
    old = wait_until(
        lambda: f"gene running; the supervisor said: {sup.output()[-3000:]}",
        lambda: _one(rig.fleet, "gene"),
        timeout=90,  # a supervisor and two agents starting on a loaded 2-core machine
    )
    jarvis = wait_for("jarvis running", lambda: _one(rig.fleet, "jarvis"), timeout=90)
    # The supervisor takes its cursor on its first look: wait until it has looked.
    wait_for("gene idle", lambda: rig.state("gene")[0] == "idle", timeout=90)
    with rig.client() as op:
        asked = op.do(Calls.restart_agent("gene", "new SOUL.md"))
    new = wait_for(
        "gene running again under a new pid",
        lambda: (p := _one(rig.fleet, "gene")) is not None and p != old and p,
        timeout=60,
    )
    assert "restart requested by" in sup.output()
    with rig.client() as op:
        done = wait_for(
            "the restart recorded", lambda: op.do(Calls.audit(action="agent.restarted"))
        )
        requested = op.do(Calls.audit(action="agent.restart_requested"))
    assert [r.targets for r in done] == [{"agent": "gene", "request": asked.id}]
    assert done[0].detail == {"pid": new}
    assert requested[0].actor.startswith("operator:")
    assert requested[0].detail == {"reason": "new SOUL.md"}
    assert _one(rig.fleet, "jarvis") == jarvis  # only gene
    assert "exited with" not in sup.output()  # a requested stop is not a crash


@pytest.mark.timeout(300)  # seven starts of an agent, on a machine shared with other suites
def test_a_failed_agent_is_tried_again_on_request(fleet_rig_factory: RigFactory) -> None:
    rig = fleet_rig_factory(AGENTS)
    sup = rig.up("mini")
    wait_for("gene running", lambda: _one(rig.fleet, "gene"), timeout=90)
    wait_for("gene idle", lambda: rig.state("gene")[0] == "idle", timeout=90)
    # Crash it until the supervisor gives up (max_restarts = 5 in the rig). Kill after kill, as
    # long as it comes back: a lease lost by a starved supervisor counts as a crash too.
    for crash in range(1, 12):
        up = wait_for(
            f"gene up (or failed) before crash {crash}",
            lambda: _one(rig.fleet, "gene") or rig.state("gene")[0] == "failed",
            timeout=60,
        )
        if up is True:
            break
        os.kill(up, signal.SIGKILL)
        wait_for(f"gene gone after crash {crash}", lambda p=up: _one(rig.fleet, "gene") != p)
    wait_for("gene marked failed", lambda: rig.state("gene")[0] == "failed", timeout=15)
    with rig.client() as op:
        op.do(Calls.restart_agent("gene"))
    wait_for("gene running again", lambda: _one(rig.fleet, "gene"), timeout=60)
    assert "starting it again" in sup.output()
