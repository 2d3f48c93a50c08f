"""A host loses its network: its agents move to their failover host, never run twice."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest

from mcos.client import Calls, Client, ServerUnreachable
from tests.netns.conftest import LEASE_TTL, Rig, agent_processes, renewed_since_granted
from tests.waiting import stays, wait_until

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.xdist_group("netns")]


@dataclass
class Sampler:
    """Every 100 ms: which instances of each agent are live — the process exists (``/proc``)
    AND its fence is one Mission Control accepts (not older than the agent's current lease)."""

    rig: Rig
    samples: int = 0
    violations: list[str] = field(default_factory=list)
    errors: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with self.rig.operator() as op:
            while not self._stop.wait(0.1):
                self.sample(op)

    def sample(self, op: Client) -> None:
        processes = agent_processes(self.rig.fleet)  # first: a lease read after is newer
        try:
            leases = {lease.agent: lease for lease in op.do(Calls.leases())}
        except ServerUnreachable:
            self.errors += 1
            return
        live: dict[str, list[tuple[int, int | None]]] = {}
        for name, pid, fence in processes:
            lease = leases.get(name)
            if lease is not None and fence is not None and fence >= lease.fence:
                live.setdefault(name, []).append((pid, fence))
        self.samples += 1
        for name, instances in live.items():
            if len(instances) > 1:
                self.violations.append(f"{name}: {instances} live at once")

    @contextmanager
    def running(self) -> Iterator[Sampler]:
        thread = threading.Thread(target=self.run, name="sampler", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join(10)


def _gene(rig: Rig) -> tuple[str, int] | None:
    """(host, fence) of gene's lease, once exactly one gene process runs with that fence."""
    lease = rig.leases().get("gene")
    running = [f for name, _, f in agent_processes(rig.fleet) if name == "gene"]
    if lease is None or running != [lease.fence]:
        return None
    return lease.host, lease.fence


def _replies(op: Client, request_ids: list[int]) -> list[int]:
    """How many replies gene gave to each request."""
    counts = []
    for rid in request_ids:
        thread = op.do(Calls.thread(rid))
        counts.append(sum(1 for m in thread if m.sender == "gene" and m.reply_to == rid))
    return counts


def test_a_cut_host_is_fenced_out_and_its_agent_moves_without_ever_running_twice(
    rig: Rig,
) -> None:
    rig.up("mini")  # first: vps, gene's failover host, would take it if it were there first
    host, first_fence = wait_until("gene running on mini", lambda: _gene(rig), timeout=60)
    assert host == "mini"
    rig.up("vps")
    op = rig.operator()
    requests = [op.do(Calls.send("gene", "before the cut")).message.id]
    wait_until("gene to answer", lambda: _replies(op, requests) == [1], timeout=60)

    with Sampler(rig).running() as sampler:
        rig.net.cut("mini")
        cut_at = time.monotonic()
        requests += [op.do(Calls.send("gene", f"during the cut {i}")).message.id for i in range(3)]
        moved = wait_until(
            "gene started on vps under a new fence",
            lambda: (g := _gene(rig)) is not None and g[0] == "vps" and g,
            timeout=90,  # a TTL, vps's next look (TTL/3), then a process start on a loaded host
            interval=0.1,
        )
        assert moved
        took = time.monotonic() - cut_at
        # The figure (about 7 s with a 6 s TTL when idle) is reported, not asserted: the safety
        # property is the sampler's — never two live instances — however slow the start is.
        print(f"gene moved to vps {took:.1f} s after the cut (lease TTL {LEASE_TTL:g} s)")
        new_fence = moved[1]
        assert new_fence > first_fence
        wait_until(
            "every request answered",
            lambda: all(n >= 1 for n in _replies(op, requests)),
            timeout=60,
        )

        # Plug mini back in: its supervisor finds gene held by vps; nothing flaps back.
        rig.net.restore("mini")
        wait_until(
            "mini's supervisor to see gene held elsewhere",
            lambda: "not running gene" in rig.supervisors["mini"].output(),
            timeout=LEASE_TTL * 3,
        )
        # Two TTLs: a flap back needs a lease to lapse, which takes one TTL plus a look.
        stays(
            "gene stays on vps under the same fence",
            lambda: _gene(rig) == ("vps", new_fence),
            duration=LEASE_TTL * 2,
            interval=0.1,
        )

    assert sampler.violations == []
    assert sampler.samples >= 100, sampler.samples  # ≥ 10 s of 100 ms samples
    assert _replies(op, requests) == [1] * len(requests)  # none lost, none handled twice
    print(f"{sampler.samples} samples, {sampler.errors} unanswered")
    op.close()


def test_a_lossy_slow_link_slows_an_agent_but_never_doubles_it(rig: Rig) -> None:
    rig.up("mini")
    host, fence = wait_until(
        "gene running on mini, held on",
        lambda: (g := rig.leases().get("gene")) and renewed_since_granted(g) and _gene(rig),
        timeout=60,
    )
    rig.up("vps")
    op = rig.operator()
    with Sampler(rig).running() as sampler:
        applied = rig.net.degrade("mini")
        requests = [op.do(Calls.send("gene", f"on a lossy link {i}")).message.id for i in range(3)]
        wait_until(
            "the requests sent over the lossy link answered",
            lambda: all(n >= 1 for n in _replies(op, requests)),
            timeout=60,
        )
        # Renewals every TTL/3 over a link losing one packet in ten: the lease holds.
        stays(
            "gene stays on mini under its fence",
            lambda: _gene(rig) == (host, fence),
            duration=LEASE_TTL * 2,
            interval=0.1,
        )
        dropped = rig.net.shaped_drops("mini")
        rig.net.clear_degrade("mini")
    print(f"mini's link: {applied}; {dropped} packets dropped")
    assert dropped > 0, "the link was meant to lose packets"
    assert sampler.violations == []
    assert _replies(op, requests) == [1] * len(requests)
    op.close()
