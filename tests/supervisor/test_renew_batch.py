"""The supervisor renews all of its host's leases in one request, never one lease at a time."""

from __future__ import annotations

import re

import httpx
import pytest

from mcos.api_models import LeaseOut
from mcos.client import Calls
from tests.supervisor.conftest import FleetRig, RigFactory, agent_pids, wait_for
from tests.supervisor.test_faults import AGENTS

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

NAMES = ("jarvis", "gene", "sentinel")


def _renewals(rig: FleetRig) -> dict[str, float]:
    """Answered lease renewals so far, by route (Mission Control's request metrics)."""
    text = httpx.get(rig.server.url + "/metrics", timeout=5).text
    found: dict[str, float] = {}
    for route, count in re.findall(
        r'mcos_http_request_seconds_count\{[^}]*route="(/v1/leases/[^"]*renew[^"]*)"[^}]*\} (\S+)',
        text,
    ):
        found[route] = found.get(route, 0) + float(count)
    return found


def test_one_request_renews_every_lease_of_the_host(fleet_rig_factory: RigFactory) -> None:
    """Three agents on mini (lease TTL 6 s: renewed every 2 s): batch renewals answered, no
    single-lease renewal at all, and every agent's lease renewed by them."""
    rig = fleet_rig_factory(AGENTS)
    rig.up("mini")
    wait_for(
        "three agents",
        lambda: all(len(agent_pids(rig.fleet).get(n, [])) == 1 for n in NAMES),
        timeout=60,
    )
    with rig.client() as op:
        first = {x.agent: x for x in op.do(Calls.leases())}

    def renewed() -> dict[str, LeaseOut] | None:
        with rig.client() as op:
            now = {x.agent: x for x in op.do(Calls.leases())}
        return now if all(now[n].renewed_at > first[n].renewed_at for n in NAMES) else None

    now = wait_for("every lease renewed again", renewed, timeout=60)
    for name in NAMES:
        assert now[name].fence == first[name].fence  # kept, not granted anew
        assert now[name].live is True
    assert _renewals(rig).get("/v1/leases/renew-batch", 0) >= 1
    assert set(_renewals(rig)) == {"/v1/leases/renew-batch"}  # no /v1/leases/{agent}/renew
