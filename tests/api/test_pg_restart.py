"""PostgreSQL crash-restarted under load: every send that returned 2xx is delivered afterwards."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mcos.client import Calls
from mcos.domain.severity import SendLimits
from tests.api.conftest import migrate, serve
from tests.throwaway_pg import ThrowawayCluster
from tests.waiting import wait_until

pytestmark = pytest.mark.postgres


@pytest.fixture
def cluster() -> Iterator[ThrowawayCluster]:
    """A private PostgreSQL this test may crash."""
    c = ThrowawayCluster()
    try:
        c.start()
        yield c
    finally:
        c.stop()


class Producers:
    """Threads sending to jarvis as fast as the server answers, recording what it accepted."""

    def __init__(self, url: str, token: str, count: int = 4) -> None:
        self.url = url
        self.token = token
        self.accepted: set[int] = set()
        self.accepted_after_restart = 0
        self.refused: dict[int, int] = {}
        self.transport_errors = 0
        self.restarted = threading.Event()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._run, args=(n,), name=f"producer-{n}")
            for n in range(count)
        ]

    def _run(self, n: int) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=30) as client:
            i = 0
            while not self.stop.is_set():
                i += 1
                body = {"to": "jarvis", "body": f"{n}-{i}", "idempotency_key": f"{n}-{i}"}
                try:
                    r = client.post("/v1/messages", json=body)
                except httpx.TransportError:
                    with self.lock:
                        self.transport_errors += 1
                    continue
                with self.lock:
                    if r.status_code in (200, 201):
                        self.accepted.add(r.json()["message"]["id"])
                        if self.restarted.is_set():
                            self.accepted_after_restart += 1
                    else:
                        self.refused[r.status_code] = self.refused.get(r.status_code, 0) + 1

    def __enter__(self) -> Producers:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)


def test_immediate_restart_loses_no_accepted_send(
    cluster: ThrowawayCluster, tmp_path: Path
) -> None:
    """`pg_ctl restart -m immediate` mid-load: the server reconnects, nothing 2xx is lost."""
    asyncio.run(migrate(cluster.url))
    flood = SendLimits(pair_max=1_000_000)  # one agent flooding one recipient, on purpose
    with serve(cluster.url, tmp_path, send_limits=flood) as server:
        with Producers(server.url, server.tokens["gene"]) as producers:
            wait_until("the producers to get going", lambda: len(producers.accepted) >= 100)
            accepted_before = len(producers.accepted)
            cluster.restart_immediate()
            producers.restarted.set()
            wait_until(
                lambda: (
                    "sends to recover after the restart: refused "
                    f"{producers.refused}, {producers.transport_errors} transport errors"
                ),
                lambda: producers.accepted_after_restart >= 100,
                timeout=60,
            )
        # While the database was down the server answered 503 (retry-safe), nothing else.
        assert set(producers.refused) <= {503}, producers.refused

        delivered: set[int] = set()
        with server.client("jarvis") as jarvis:
            while True:
                got = jarvis.do(Calls.inbox(limit=500)).deliveries
                if not got:
                    break
                delivered |= {d.message.id for d in got}
                jarvis.do(Calls.ack_many([(d.id, d.receipt or "") for d in got]))
        print(  # the figures, for -s runs
            f"accepted {len(producers.accepted)} ({accepted_before} before the restart), "
            f"refused {producers.refused}, transport errors {producers.transport_errors}, "
            f"delivered {len(delivered)}"
        )
        lost = producers.accepted - delivered
        assert not lost, f"{len(lost)} accepted sends were never delivered: {sorted(lost)[:10]}"
