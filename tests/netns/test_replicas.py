"""Two Mission Control replicas on one PostgreSQL, reached across network namespaces."""

from __future__ import annotations

import signal
import subprocess
import threading
import time

import pytest

from mcos.client import Calls, Client
from mcos.domain.messages import MessageKind
from mcos.domain.tokens import PrincipalKind
from mcos.exceptions import AuthError
from tests.netns.conftest import LEASE_TTL, Rig, agent_processes, renewed_since_granted
from tests.waiting import stays, wait_until

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.xdist_group("netns")]

FALLBACK = 1.0
"""The server's fallback re-claim of a parked long-poll (``poll_fallback_seconds``)."""

TOKEN_CACHE = 2.0
"""The server's token cache (``Authenticator.cache_seconds``): the bound docs/deploy.md states
for a revocation on one replica to reach the other."""


def _running(rig: Rig) -> dict[str, tuple[int, int | None]]:
    """agent → (pid, fence), once every agent runs exactly one process."""
    found = agent_processes(rig.fleet)
    names = [name for name, _, _ in found]
    if sorted(names) != ["gene", "jarvis"]:
        return {}
    return {name: (pid, fence) for name, pid, fence in found}


def _held_on(rig: Rig) -> dict[str, tuple[int, int | None]]:
    """What :func:`_running` says, once each process runs under its agent's lease and that lease
    was renewed since it was granted: the supervisors hold their agents on (an agent start
    slower than the lease's kill margin, on a loaded machine, loses its fresh lease and starts
    again a TTL later)."""
    running = _running(rig)
    leases = rig.leases()
    for name, (_, fence) in running.items():
        lease = leases.get(name)
        if lease is None or lease.fence != fence or not renewed_since_granted(lease):
            return {}
    return running


def _answered(rig: Rig, client: Client, request_id: int) -> int:
    """How many replies gene gave to request ``request_id``."""
    thread = client.do(Calls.thread(request_id))
    return sum(1 for m in thread if m.sender == "gene" and m.reply_to == request_id)


def test_a_send_on_one_replica_wakes_a_long_poll_on_the_other_and_a_killed_replica_is_survived(
    rig: Rig,
) -> None:
    rig.up("mini")
    rig.up("vps")
    before = wait_until("both agents running, held on", lambda: _held_on(rig), timeout=60)

    # Cross-replica wake-up: the founder's inbox long-polled on B, the message sent on A,
    # right after the poll is parked. B's fallback re-claim runs every second, so a wake-up
    # that did not cross (NOTIFY on A not heard by B's LISTEN) takes about 1 s each time.
    latencies = [_wake_across(rig, n) for n in range(3)]
    print("cross-replica wake-ups (ms):", [round(x * 1000) for x in latencies])
    assert sorted(latencies)[1] < FALLBACK * 0.6, latencies

    # Kill replica A outright: supervisors and agents carry on through B, no restart.
    rig.replicas["mc-a"].stop(signal.SIGKILL)
    with rig.operator() as op:
        request = op.do(Calls.send("gene", "still there?"))
        wait_until(
            "gene to answer through B",
            lambda: _answered(rig, op, request.message.id) == 1,
            timeout=60,
        )
    renewed_from = rig.leases()["gene"].renewed_at
    wait_until(
        "gene's lease renewed through B",
        lambda: rig.leases()["gene"].renewed_at > renewed_from,
        timeout=LEASE_TTL * 2,
    )
    # Two lease TTLs without A: had a supervisor lost its leases, an agent would have restarted.
    stays(
        "the same agent processes, with the same fences",
        lambda: _running(rig) == before,
        duration=LEASE_TTL * 2,
        interval=0.1,
    )
    with rig.operator() as op:
        assert _answered(rig, op, request.message.id) == 1  # answered once, not twice


def _wake_across(rig: Rig, n: int) -> float:
    """Seconds from a send on A to the return of the founder's long-poll parked on B."""
    got: list[tuple[float, list[str]]] = []
    with rig.operator("mc-b") as on_b, rig.operator("mc-a") as on_a:

        def park() -> None:
            inbox = on_b.do(Calls.inbox(wait=20, inbox="founder"))
            got.append((time.monotonic(), [d.message.body for d in inbox.deliveries]))
            on_b.do(
                Calls.ack_many([(d.id, d.receipt or "") for d in inbox.deliveries], inbox="founder")
            )

        parked = threading.Thread(target=park)
        parked.start()
        wait_until("the long-poll to reach B", lambda: _parked(rig), timeout=30, interval=0.02)
        on_a.do(Calls.send("founder", f"cross-replica {n}", kind=MessageKind.REPORT))
        sent_at = time.monotonic()
        parked.join(30)
    assert got, "the long-poll on B never returned"
    woke_at, bodies = got[0]
    assert bodies == [f"cross-replica {n}"]
    return woke_at - sent_at


def _parked(rig: Rig) -> bool:
    """Whether the operator holds a connection to replica B (the long-poll: nothing else of
    the operator talks to B; the claim before the wait takes milliseconds)."""
    operator = str(rig.net.subnet.network_address + 254)
    out = subprocess.run(
        [*rig.net.inside("mc-b"), "ss", "-Htn", "state", "established", "sport", "= :8700"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout
    return f"{operator}:" in out


def test_a_revoked_token_is_refused_by_both_replicas_within_the_cache_bound(rig: Rig) -> None:
    with rig.operator("mc-a") as on_a:
        created = on_a.do(Calls.create_token(PrincipalKind.AGENT, "gene", label="doomed"))
    doomed = {r: Client(rig.url(r), created.token) for r in ("mc-a", "mc-b")}
    for client in doomed.values():  # each replica has now cached it as valid
        client.do(Calls.agents())
    with rig.operator("mc-a") as on_a:
        on_a.do(Calls.revoke_token(created.record.id))
    revoked_at = time.monotonic()
    with pytest.raises(AuthError):  # the replica that revoked forgets it at once
        doomed["mc-a"].do(Calls.agents())

    def refused_by_b() -> bool:
        try:
            doomed["mc-b"].do(Calls.agents())
        except AuthError:
            return True
        return False

    wait_until("B to refuse the revoked token", refused_by_b, timeout=30, interval=0.05)
    took = time.monotonic() - revoked_at
    print(f"revocation reached the other replica after {took * 1000:.0f} ms")
    # The bound is the cache (2 s); 1 s more for one request on a loaded 2-core machine.
    assert took <= TOKEN_CACHE + 1.0
    for client in doomed.values():
        client.close()
