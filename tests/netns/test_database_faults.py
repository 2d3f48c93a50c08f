"""PostgreSQL goes down: replicas say so, no agent outlives its lease, each restarts once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

import httpx
import pytest

from mcos.client import Calls, Client
from mcos.domain.leases import DEFAULT_TTL
from mcos.domain.messages import Priority
from mcos.exceptions import StoreUnavailable
from tests.netns.conftest import Rig, agent_processes, set_lease_ttl
from tests.waiting import stays, wait_until

pytestmark = [pytest.mark.netns, pytest.mark.slow]

AGENTS = ("gene", "jarvis")
TTL = DEFAULT_TTL.total_seconds()
URGENT = Priority.URGENT
"""Handled at once, not batched for the 20 s window of normal messages."""
OUTAGE_SEND = Calls.send(
    "gene", "sent during the outage", priority=URGENT, idempotency_key="sent-during-the-outage"
)
"""Refused while the database is down; sent again, with its key, once it is back."""


@dataclass
class Processes:
    """Every 100 ms, the live agent processes of the fleet (agent, pid, fence), from ``/proc``
    alone: while the database is down Mission Control cannot say which fences it accepts."""

    rig: Rig
    samples: list[tuple[float, list[tuple[str, int, int | None]]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self._stop.wait(0.1):
            self.samples.append((time.monotonic(), agent_processes(self.rig.fleet)))

    @contextmanager
    def running(self) -> Iterator[Processes]:
        thread = threading.Thread(target=self.run, name="processes", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join(10)

    def doubles(self) -> list[str]:
        """Every sampled moment with two processes of one agent."""
        found = []
        for at, processes in self.samples:
            for name in AGENTS:
                mine = [(pid, fence) for n, pid, fence in processes if n == name]
                if len(mine) > 1:
                    found.append(f"{at:.1f}: {name} {mine}")
        return found

    def outliving(self, fences: dict[str, int], after: float) -> list[str]:
        """Processes still running a fence of ``fences`` at a moment later than ``after``."""
        return [
            f"{at - after:+.1f}s: {name} pid {pid} fence {fence}"
            for at, processes in self.samples
            if at > after
            for name, pid, fence in processes
            if fences.get(name) == fence
        ]


def _running(rig: Rig) -> dict[str, tuple[str, int, int]] | None:
    """Each agent's (host, fence, pid) once exactly one process of it runs, under its lease."""
    leases = rig.leases()
    processes = agent_processes(rig.fleet)
    found = {}
    for name in AGENTS:
        lease = leases.get(name)
        mine = [(pid, fence) for n, pid, fence in processes if n == name]
        if lease is None or len(mine) != 1 or mine[0][1] != lease.fence:
            return None
        found[name] = (lease.host, lease.fence, mine[0][0])
    return found


def _replies(op: Client, requests: dict[int, str]) -> list[int]:
    """How many replies each request got from the agent it was sent to."""
    counts = []
    for rid, agent in requests.items():
        thread = op.do(Calls.thread(rid))
        counts.append(sum(1 for m in thread if m.sender == agent and m.reply_to == rid))
    return counts


def _starts(rig: Rig, since: dict[str, int]) -> dict[str, int]:
    """How often each agent was started by any supervisor after the given output offsets."""
    text = "".join(p.output()[since[h] :] for h, p in rig.supervisors.items())
    return {name: text.count(f"started {name} (pid") for name in AGENTS}


def _offsets(rig: Rig) -> dict[str, int]:
    return {h: len(p.output()) for h, p in rig.supervisors.items()}


def _renewed_since(rig: Rig, at: datetime, fences: dict[str, int]) -> bool:
    """Whether every agent's lease was renewed after ``at`` (Mission Control's clock) under the
    fence given: its supervisor holds it on, and will not kill that instance for it."""
    leases = rig.leases()
    return all(
        (lease := leases.get(a)) is not None and lease.renewed_at > at and lease.fence == fence
        for a, fence in fences.items()
    )


@pytest.mark.timeout(300)  # the rig, two outages and a TTL's wait, on a machine shared with others
def test_a_database_blip_costs_nothing_and_an_outage_past_the_ttl_stops_every_agent_until_back(
    rig: Rig,
) -> None:
    # The default TTL: renewals every 5 s, the kill deadline 13 s after the last one, so a
    # restart of PostgreSQL (seconds on a loaded host) fits in between however it falls.
    set_lease_ttl(rig, TTL)
    rig.up("mini")
    rig.up("vps")  # gene may start on either: mini is its host, vps its failover host
    before = wait_until(
        lambda: f"gene and jarvis running ({agent_processes(rig.fleet)}, {rig.leases()})",
        lambda: _running(rig),
        timeout=60,
    )
    fences = {a: f for a, (_, f, _) in before.items()}
    op = rig.operator()

    # 1. A blip: PostgreSQL crash-restarted. No agent is stopped, none restarted.
    with Processes(rig).running() as seen:
        since = _offsets(rig)
        down_at = time.monotonic()
        rig.db.halt()
        rig.db.start()
        print(f"blip: the database was down {time.monotonic() - down_at:.1f} s (TTL {TTL:g} s)")
        back = op.do(Calls.time()).now
        wait_until(
            "every lease renewed since the database came back",
            lambda: _renewed_since(rig, back, fences),
            timeout=TTL * 2,
            interval=0.2,
        )
        assert _running(rig) == before
    assert _starts(rig, since) == dict.fromkeys(AGENTS, 0)
    pids = {(a, before[a][2]) for a in AGENTS}
    assert all({(n, pid) for n, pid, _ in processes} == pids for _, processes in seen.samples), (
        "an agent process was replaced, doubled or missing during the blip"
    )

    # 2. An outage longer than the TTL.
    requests = {op.do(Calls.send(a, f"before the outage {i}", priority=URGENT)).message.id: a
                for i in range(2) for a in AGENTS}  # fmt: skip
    with Processes(rig).running() as seen:
        since = _offsets(rig)
        rig.db.halt()
        down_at = time.monotonic()

        # Both replicas answer at once, and say what is wrong.
        for replica in ("mc-a", "mc-b"):
            with rig.operator(replica) as one:
                asked = time.monotonic()
                with pytest.raises(StoreUnavailable) as refused:
                    one.do(OUTAGE_SEND)
                took = time.monotonic() - asked
            assert refused.value.status == 503
            assert "PostgreSQL" in refused.value.message, refused.value.message
            print(f"{replica}: 503 store_unavailable in {took * 1000:.0f} ms")
            raw = httpx.post(
                rig.url(replica) + "/v1/messages",
                json={"to": "gene", "body": "raw"},
                headers={"Authorization": f"Bearer {rig.operator_token}"},
                timeout=10,
            )
            assert raw.status_code == 503, raw.text
            assert raw.json()["error"]["code"] == "store_unavailable"
            assert raw.headers["Retry-After"] == "1"
            health = httpx.get(rig.url(replica) + "/healthz", timeout=10)
            assert health.status_code == 503, health.text
            assert health.json()["status"] == "degraded"
            assert "PostgreSQL" in health.json()["store"]

        # The supervisors cannot renew: each agent is stopped at its kill deadline.
        wait_until(
            "every agent stopped",
            lambda: not agent_processes(rig.fleet),
            timeout=TTL * 2,
            interval=0.1,
        )
        print(
            f"every agent stopped {time.monotonic() - down_at:.1f} s after the database went down"
        )
        # The outage outlasts every lease; nothing may start meanwhile.
        stays(
            "no agent runs while the database is down",
            lambda: not agent_processes(rig.fleet),
            duration=max(TTL + 1 - (time.monotonic() - down_at), 0.1),
            interval=0.1,
        )

        rig.db.start()
        back_at = time.monotonic()
        after = wait_until(
            "each agent running again under a new fence",
            lambda: (r := _running(rig)) and all(r[a][1] > fences[a] for a in AGENTS) and r,
            timeout=60,
            interval=0.1,
        )
        print(
            f"the database was down {back_at - down_at:.1f} s; every agent running again "
            f"{time.monotonic() - back_at:.1f} s after it came back: "
            + ", ".join(f"{a} on {h} fence {f}" for a, (h, f, _) in after.items())
        )
        # Started once: the instances started after the outage hold their leases on.
        started = op.do(Calls.time()).now
        wait_until(
            "every new lease renewed",
            lambda: _renewed_since(rig, started, {a: f for a, (_, f, _) in after.items()}),
            timeout=TTL * 2,
            interval=0.2,
        )
        assert _running(rig) == after
        # The send refused during the outage was not stored; its retry (same key) is, once.
        retried = op.do(OUTAGE_SEND)
        assert retried.created
        again = op.do(OUTAGE_SEND)
        assert not again.created
        assert again.message.id == retried.message.id
        requests[retried.message.id] = "gene"
        wait_until(
            "every request answered",
            lambda: all(n >= 1 for n in _replies(op, requests)),
            timeout=60,
        )

    assert seen.outliving(fences, after=down_at + TTL) == []
    assert seen.doubles() == []
    assert _starts(rig, since) == dict.fromkeys(AGENTS, 1)
    assert _replies(op, requests) == [1] * len(requests)  # none lost, none handled twice
    op.close()
