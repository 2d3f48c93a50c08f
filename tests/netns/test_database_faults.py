"""PostgreSQL goes down: replicas say so, no agent outlives its lease, each restarts once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
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

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.xdist_group("netns")]

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


ANSWER_WITHIN = 10.0
"""Seconds a replica may take to answer while its database is unreachable: the client's own
timeout (``Client``'s default), past which an answer is no answer. Expected: the database
stopped (connections refused) about 1 s; its host's link cut (packets vanish) about
``tcp_user_timeout`` (5 s) on a connection that was idle, plus a second of the pool's
``DOWN_WAIT`` (``mcos.store.postgres.LIVENESS``)."""


def _up_under_the_default_ttl(rig: Rig) -> dict[str, tuple[str, int, int]]:
    # The default TTL: renewals every 5 s, the kill deadline 13 s after the last one, so a
    # restart of PostgreSQL (seconds on a loaded host) fits in between however it falls.
    set_lease_ttl(rig, TTL)
    rig.up("mini")
    rig.up("vps")  # gene may start on either: mini is its host, vps its failover host
    return wait_until(
        lambda: f"gene and jarvis running ({agent_processes(rig.fleet)}, {rig.leases()})",
        lambda: (r := _running(rig)) and _reported(rig, r) and r,
        timeout=60,
    )


def _reported(rig: Rig, running: dict[str, tuple[str, int, int]]) -> bool:
    """Whether each running process has reported itself to Mission Control: past its start-up
    (clock, workspace), whose calls do not yet wait out a 503 (the process would exit 70 and be
    restarted)."""
    with rig.operator() as op:
        states = {a.name: a.state_info.get("pid") for a in op.do(Calls.agents())}
    return all(states.get(name) == pid for name, (_, _, pid) in running.items())


def _refused(rig: Rig, replica: str, call: Callable[[], httpx.Response]) -> httpx.Response:
    """``call``'s answer, which must come within :data:`ANSWER_WITHIN` and be a 503."""
    asked = time.monotonic()
    try:
        answer = call()
    except httpx.TimeoutException:
        pytest.fail(
            f"{replica} gave no answer within {ANSWER_WITHIN:g} s while its database was "
            "unreachable (a connection waiting on a silent peer: no TCP keepalive or "
            "tcp_user_timeout?)"
        )
    took = time.monotonic() - asked
    print(f"{replica}: {answer.status_code} {answer.request.url.path} in {took * 1000:.0f} ms")
    assert answer.status_code == 503, answer.text
    return answer


def _check_refusals(rig: Rig, replica: str) -> None:
    """While the database is unreachable ``replica`` refuses at once and says what is wrong."""
    auth = {"Authorization": f"Bearer {rig.operator_token}"}
    url = rig.url(replica)
    sent = _refused(
        rig,
        replica,
        lambda: httpx.post(
            url + "/v1/messages",
            json=OUTAGE_SEND.json,
            headers=auth,
            timeout=ANSWER_WITHIN,
        ),
    )
    assert sent.json()["error"]["code"] == "store_unavailable"
    assert "PostgreSQL" in sent.json()["error"]["message"], sent.text
    assert sent.headers["Retry-After"] == "1"
    with Client(url, rig.operator_token) as one, pytest.raises(StoreUnavailable) as refused:
        one.do(OUTAGE_SEND)  # the client raises it: a 503 is not retried
    assert refused.value.status == 503
    health = _refused(rig, replica, lambda: httpx.get(url + "/healthz", timeout=ANSWER_WITHIN))
    assert health.json()["status"] == "degraded"
    assert "PostgreSQL" in health.json()["store"]


def _store_back(op: Client) -> datetime:
    """Mission Control's clock (the database's), once it reaches the database again: after a
    link cut its pool may need a connection attempt or two (``connect_timeout``)."""

    def now() -> datetime | None:
        try:
            return op.do(Calls.time()).now
        except StoreUnavailable:
            return None

    return wait_until("Mission Control to reach the database again", now, timeout=30)


def _a_blip_costs_nothing(
    rig: Rig, op: Client, before: dict[str, tuple[str, int, int]], blip: Callable[[], None]
) -> None:
    """During and after ``blip`` (shorter than the lease's kill margin) no agent is stopped or
    restarted, and every lease is renewed afterwards under the fence it had."""
    fences = {a: f for a, (_, f, _) in before.items()}
    with Processes(rig).running() as seen:
        since = _offsets(rig)
        blip()
        back = _store_back(op)
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


def _an_outage_past_the_ttl_stops_every_agent_until_back(
    rig: Rig,
    op: Client,
    before: dict[str, tuple[str, int, int]],
    down: Callable[[], None],
    back: Callable[[], None],
) -> None:
    """``down`` for longer than the TTL: both replicas refuse at once, every agent is stopped
    at its kill deadline and none runs until ``back``; then each starts again exactly once, and
    what was sent (2xx) before is answered exactly once."""
    fences = {a: f for a, (_, f, _) in before.items()}
    requests = {op.do(Calls.send(a, f"before the outage {i}", priority=URGENT)).message.id: a
                for i in range(2) for a in AGENTS}  # fmt: skip
    with Processes(rig).running() as seen:
        since = _offsets(rig)
        down()
        down_at = time.monotonic()

        for replica in ("mc-a", "mc-b"):
            _check_refusals(rig, replica)

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

        back()
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
        started = _store_back(op)
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


@pytest.mark.timeout(300)  # two outages and a TTL's wait, on a machine shared with others
def test_a_database_blip_costs_nothing_and_an_outage_past_the_ttl_stops_every_agent_until_back(
    rig: Rig,
) -> None:
    before = _up_under_the_default_ttl(rig)
    with rig.operator() as op:

        def blip() -> None:  # PostgreSQL crash-restarted
            down_at = time.monotonic()
            rig.db.halt()
            rig.db.start()
            print(f"blip: the database was down {time.monotonic() - down_at:.1f} s (TTL {TTL:g} s)")

        _a_blip_costs_nothing(rig, op, before, blip)
        _an_outage_past_the_ttl_stops_every_agent_until_back(
            rig, op, before, rig.db.halt, rig.db.start
        )


@pytest.mark.timeout(300)  # two outages and a TTL's wait, on a machine shared with others
def test_the_database_host_s_link_cut_briefly_costs_nothing_and_past_the_ttl_stops_every_agent(
    rig: Rig,
) -> None:
    """PostgreSQL keeps running; its host's packets vanish (no refusal, no reset): without TCP
    keepalives and ``tcp_user_timeout`` a replica's connections would wait on it for TCP's
    retransmissions, about 15 minutes, and answer nothing meanwhile."""
    before = _up_under_the_default_ttl(rig)
    with rig.operator() as op:

        def brief_cut() -> None:
            """Cut off as long as it takes a replica to notice: its first 503."""
            rig.net.cut("db")
            cut_at = time.monotonic()
            try:
                _refused(
                    rig,
                    "mc-a",
                    lambda: httpx.get(
                        rig.url("mc-a") + "/v1/leases",
                        headers={"Authorization": f"Bearer {rig.operator_token}"},
                        timeout=ANSWER_WITHIN,
                    ),
                )
            finally:
                rig.net.restore("db")
            print(f"brief cut: the database host was cut off {time.monotonic() - cut_at:.1f} s")

        _a_blip_costs_nothing(rig, op, before, brief_cut)
        _an_outage_past_the_ttl_stops_every_agent_until_back(
            rig, op, before, lambda: rig.net.cut("db"), lambda: rig.net.restore("db")
        )
