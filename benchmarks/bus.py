"""Throughput and wake-up latency of the mcos bus, against a plain-SQL ceiling and PgQueuer.

Run: ``.venv/bin/python benchmarks/bus.py [--quick] [--pg URL]`` (``make bench``). It creates and
drops its own scratch databases on the PostgreSQL server and prints one table to stdout;
progress goes to stderr. Every phase runs producers and consumers together for a fixed time
and counts messages fully consumed (claimed and acked) per second.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from mcos.config.scaffold import init_fleet  # noqa: E402
from mcos.domain.audit import audit_key  # noqa: E402
from mcos.domain.messages import NewMessage  # noqa: E402
from mcos.store import Directory, Store, make_store  # noqa: E402
from mcos.store.protocol import AgentEntry  # noqa: E402

PRODUCERS = 4
CONSUMERS = 4
DIRECTORY = Directory(
    agents=[AgentEntry(f"a{i}", "bench", "local") for i in range(CONSUMERS)]
    + [AgentEntry(f"p{i}", "bench", "local") for i in range(PRODUCERS)],
    humans=[],
    topics={},
)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class Scratch:
    """A throwaway database on the server."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.name = f"mcos_bench_{uuid.uuid4().hex[:8]}"
        self.url = admin_url.rsplit("/", 1)[0] + "/" + self.name

    def __enter__(self) -> str:
        with psycopg.connect(self.admin_url, autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{self.name}"')
            c.execute(f'ALTER DATABASE "{self.name}" SET synchronous_commit = on')
        return self.url

    def __exit__(self, *_: object) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


async def steady(
    seconds: float,
    produce: Callable[[int], Awaitable[None]],
    consume: Callable[[int], Awaitable[int]],
) -> float:
    """Run producers and consumers together; consumed messages per second."""
    stop = time.monotonic() + seconds
    consumed = 0

    async def producer(i: int) -> None:
        while time.monotonic() < stop:
            await produce(i)

    async def consumer(i: int) -> None:
        nonlocal consumed
        while time.monotonic() < stop:
            got = await consume(i)  # not `consumed += await …`: that loses concurrent updates
            consumed += got

    started = time.monotonic()
    await asyncio.gather(
        *(producer(i) for i in range(PRODUCERS)), *(consumer(i) for i in range(CONSUMERS))
    )
    return consumed / (time.monotonic() - started)


# --- 1. the ceiling: plain SQL -----------------------------------------------------------------
CEILING_SCRIPT = """\
INSERT INTO q (body) VALUES ('x');
DELETE FROM q WHERE id = (SELECT id FROM q ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED);
"""


def pgbench_rate(url: str, seconds: float) -> float | None:
    """The database alone, no Python client: pgbench, 4 clients, insert one + claim-delete one."""
    if shutil.which("pgbench") is None:
        return None
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("CREATE TABLE q (id bigserial PRIMARY KEY, body text)")
    with tempfile.NamedTemporaryFile("w", suffix=".sql") as script:
        script.write(CEILING_SCRIPT)
        script.flush()
        out = subprocess.run(
            [
                "pgbench",
                "-n",
                "-c",
                "4",
                "-j",
                "2",
                "-T",
                str(int(seconds)),
                "-f",
                script.name,
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    found = re.search(r"tps = ([\d.]+)", out)
    return float(found.group(1)) if found else None


async def ceiling(url: str, seconds: float) -> float:
    """Plain SQL through psycopg, 4 connections: insert 10 rows; claim-and-delete up to 50."""
    conns = [await psycopg.AsyncConnection.connect(url, autocommit=True) for _ in range(4)]
    await conns[0].execute(
        "CREATE TABLE q (id bigserial PRIMARY KEY, body text, claimed boolean DEFAULT false)"
    )
    locks = [asyncio.Lock() for _ in conns]

    async def produce(i: int) -> None:
        async with locks[i % 2]:
            await conns[i % 2].execute(
                "INSERT INTO q (body) SELECT 'x' FROM generate_series(1, 10)"
            )

    async def consume(i: int) -> int:
        async with locks[2 + i % 2]:
            cur = await conns[2 + i % 2].execute(
                "DELETE FROM q WHERE id IN (SELECT id FROM q ORDER BY id LIMIT 50 "
                "FOR UPDATE SKIP LOCKED) RETURNING id"
            )
            got = len(await cur.fetchall())
        if not got:
            await asyncio.sleep(0.001)
        return got

    rate = await steady(seconds, produce, consume)
    for c in conns:
        await c.close()
    return rate


# --- 2. the anchor: PgQueuer --------------------------------------------------------------------
async def pgqueuer_rate(url: str, seconds: float) -> float:
    from pgqueuer import PsycopgDriver, Queries, QueueManager

    setup = await psycopg.AsyncConnection.connect(url, autocommit=True)
    await Queries(PsycopgDriver(setup)).install()
    done = 0
    managers = []
    for _ in range(2):
        conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
        qm = QueueManager(Queries(PsycopgDriver(conn)))

        @qm.entrypoint("noop")
        async def noop(job: object) -> None:
            nonlocal done
            done += 1

        managers.append((qm, conn))
    producer_conns = [await psycopg.AsyncConnection.connect(url, autocommit=True) for _ in range(2)]
    queries = [Queries(PsycopgDriver(c)) for c in producer_conns]
    stop = time.monotonic() + seconds

    async def produce(i: int) -> None:
        q = queries[i % 2]
        while time.monotonic() < stop:
            await q.enqueue(["noop"] * 10, [None] * 10, [0] * 10)

    runners = [
        asyncio.create_task(qm.run(batch_size=10, dequeue_timeout=timedelta(seconds=1)))
        for qm, _ in managers
    ]
    await asyncio.sleep(0.5)
    start_done, started = done, time.monotonic()
    await asyncio.gather(*(produce(i) for i in range(2)))
    rate = (done - start_done) / (time.monotonic() - started)
    for qm, _ in managers:
        qm.shutdown.set()
    await asyncio.wait(runners, timeout=10)
    for c in [setup, *producer_conns, *(c for _, c in managers)]:
        await c.close()
    return rate


# --- 3. the mcos store alone --------------------------------------------------------------------
async def store_rate(url: str, seconds: float, batch: int, send_batch: int = 1) -> float:
    store: Store = make_store(url, audit_key=audit_key(b"benchmark token key"))
    await store.upgrade()
    await store.open()
    await store.sync_directory(DIRECTORY)

    async def produce(i: int) -> None:
        to = f"a{i % CONSUMERS}"
        if send_batch == 1:
            await store.send(NewMessage(f"p{i}", to, body="x"))
        else:
            await store.send_many([NewMessage(f"p{i}", to, body="x")] * send_batch)

    async def consume(i: int) -> int:
        got = await store.claim(f"a{i}", limit=batch)
        if not got:
            await store.wait(f"a{i}", 0.01)
            return 0
        if batch == 1:
            await store.ack(f"a{i}", got[0].id, got[0].receipt or "")
        else:
            await store.ack_many(f"a{i}", [(d.id, d.receipt or "") for d in got])
        return len(got)

    rate = await steady(seconds, produce, consume)
    await store.close()
    return rate


# --- 4 and 5. through HTTP ----------------------------------------------------------------------
class Server:
    """`mcos server` in its own process, on a fleet made for the benchmark."""

    def __init__(self, store_url: str, workers: int) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="mcos-bench-"))
        fleet = init_fleet(self.dir)
        port = 18700 + os.getpid() % 1000
        text = fleet.read_text()
        text = re.sub(r'url = "[^"]*"', f'url = "http://127.0.0.1:{port}"', text)
        text = re.sub(r'store = "[^"]*"', f'store = "{store_url}"', text)
        agents = "".join(
            f'\n[agents.{a.name}]\nrole = "bench"\nhost = "local"\n' for a in DIRECTORY.agents
        )
        # Producers flood their consumers on purpose: lift the per-pair limit for agents.
        fleet.write_text(text + agents + "\n[messaging]\npair_max = 100000000\n")
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mcos", "server", "-f", str(fleet), "--workers", str(workers)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 180  # each worker imports mcos: slow on a loaded host
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mcos server exited ({self.proc.returncode}) while starting")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("mcos server did not answer /healthz within 180 s")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.operator = (self.dir / "state" / "operator.token").read_text().strip()

    def token(self, agent: str) -> str:
        r = httpx.post(
            self.url + "/v1/tokens",
            json={"kind": "agent", "name": agent},
            headers={"Authorization": f"Bearer {self.operator}"},
        )
        r.raise_for_status()
        return str(r.json()["token"])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def http_rate(server: Server, seconds: float, send_batch: int = 1) -> float:
    clients = {
        name: httpx.AsyncClient(
            base_url=server.url, headers={"Authorization": f"Bearer {server.token(name)}"}
        )
        for name in [a.name for a in DIRECTORY.agents]
    }

    async def produce(i: int) -> None:
        message = {"to": f"a{i % CONSUMERS}", "body": "x"}
        if send_batch == 1:
            r = await clients[f"p{i}"].post("/v1/messages", json=message)
        else:
            r = await clients[f"p{i}"].post(
                "/v1/messages/batch", json={"messages": [message] * send_batch}
            )
        r.raise_for_status()

    async def consume(i: int) -> int:
        c = clients[f"a{i}"]
        r = await c.get("/v1/inbox", params={"limit": 100, "wait": 0.05})
        got = r.json()["deliveries"]
        if got:
            items = [{"id": d["id"], "receipt": d["receipt"]} for d in got]
            (await c.post("/v1/inbox/ack", json={"items": items})).raise_for_status()
        return len(got)

    rate = await steady(seconds, produce, consume)
    for c in clients.values():
        await c.aclose()
    return rate


async def wakeup(server: Server, seconds: float, per_second: int = 500) -> tuple[float, float]:
    """p50/p99 ms from a send returning to the waiting long-poll returning."""
    producer = httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {server.token('p0')}"}
    )
    consumer = httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {server.token('a0')}"}
    )
    sent_at: dict[int, float] = {}
    delays: list[float] = []
    acks: set[asyncio.Task[httpx.Response]] = set()
    stop = time.monotonic() + seconds

    async def consume() -> None:
        while time.monotonic() < stop + 1:
            r = await consumer.get("/v1/inbox", params={"limit": 100, "wait": 1})
            now = time.perf_counter()
            got = r.json()["deliveries"]
            for d in got:
                mid = d["message"]["id"]
                if mid in sent_at:
                    delays.append(max(0.0, now - sent_at[mid]))
            if got:  # ack in the background: the consumer goes straight back to waiting
                items = [{"id": d["id"], "receipt": d["receipt"]} for d in got]
                task = asyncio.create_task(consumer.post("/v1/inbox/ack", json={"items": items}))
                acks.add(task)
                task.add_done_callback(acks.discard)

    async def produce() -> None:
        interval = 1 / per_second
        next_at = time.monotonic()
        while time.monotonic() < stop:
            r = await producer.post("/v1/messages", json={"to": "a0", "body": "x"})
            sent_at[r.json()["message"]["id"]] = time.perf_counter()
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    await asyncio.gather(consume(), produce())
    await asyncio.gather(*acks)
    await producer.aclose()
    await consumer.aclose()
    q = statistics.quantiles([d * 1000 for d in delays], n=100)
    return q[49], q[98]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="2 s per phase")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--workers", type=int, default=2, help="server processes for PostgreSQL")
    args = parser.parse_args()
    seconds = 2.0 if args.quick else 8.0
    rows: list[tuple[str, str, str]] = []

    def add(name: str, value: str, target: str = "") -> None:
        rows.append((name, value, target))
        say(f"{name}: {value} {target}")

    with Scratch(args.pg) as url:
        say("1. ceiling: pgbench")
        tps = pgbench_rate(url, seconds)
        if tps is not None:
            add("ceiling: pgbench, 4 clients, insert 1 + claim 1 (msg/s)", f"{tps:,.0f}")
    with Scratch(args.pg) as url:
        say("1. ceiling: plain SQL through psycopg")
        add(
            "ceiling: plain SQL via psycopg, send 10 / claim 50 (msg/s)",
            f"{asyncio.run(ceiling(url, seconds)):,.0f}",
        )
    with Scratch(args.pg) as url:
        say("2. PgQueuer")
        pgq = asyncio.run(pgqueuer_rate(url, seconds))
        add("anchor: PgQueuer no-op jobs, enqueue 10 / batch 10 (msg/s)", f"{pgq:,.0f}")
    for send_batch, batch in ((1, 1), (1, 50), (10, 50)):
        with Scratch(args.pg) as url:
            say(f"3. mcos PostgresStore, send {send_batch} / claim {batch}")
            rate = asyncio.run(store_rate(url, seconds, batch, send_batch))
            verdict = "PASS" if rate >= pgq else "MISS"
            add(
                f"mcos store on PostgreSQL, send {send_batch} / claim+ack {batch} (msg/s)",
                f"{rate:,.0f} ({rate / pgq:.2f}× PgQueuer)",
                f"≥1.0× PgQueuer: {verdict}" if send_batch == 10 else "",
            )
    for send_batch in (1, 10):
        with Scratch(args.pg) as url:
            say(f"4. mcos through HTTP on PostgreSQL, send {send_batch}")
            server = Server(url, args.workers)
            try:
                rate = asyncio.run(http_rate(server, seconds, send_batch))
                add(
                    f"mcos HTTP, PostgreSQL, {args.workers} workers, send {send_batch} / "
                    "claim 100 (msg/s)",
                    f"{rate:,.0f}",
                    f"≥1,500: {'PASS' if rate >= 1500 else 'MISS'}" if send_batch == 10 else "",
                )
            finally:
                server.stop()
    with Scratch(args.pg) as url:
        say("5. wake-up latency through HTTP on PostgreSQL (1 worker)")
        server = Server(url, 1)
        try:
            p50, p99 = asyncio.run(wakeup(server, seconds))
            ok = p50 <= 3 and p99 <= 10
            add(
                "wake-up send→long-poll, PostgreSQL, 500 msg/s (p50/p99 ms)",
                f"{p50:.1f} / {p99:.1f}",
                f"≤3 / ≤10: {'PASS' if ok else 'MISS'}",
            )
        finally:
            server.stop()
    with tempfile.TemporaryDirectory() as tmp:
        say("6. SQLite store alone")
        rate = asyncio.run(store_rate(f"sqlite:///{tmp}/bench.db", seconds, 50, 10))
        add("mcos store on SQLite, send 10 / claim+ack 50 (msg/s)", f"{rate:,.0f}")
    with tempfile.TemporaryDirectory() as tmp:
        say("6. SQLite through HTTP")
        server = Server(f"sqlite:///{tmp}/bench.db", 1)
        try:
            add(
                "mcos HTTP, SQLite, send 10 / claim 100 (msg/s)",
                f"{asyncio.run(http_rate(server, seconds, 10)):,.0f}",
            )
            p50, p99 = asyncio.run(wakeup(server, seconds))
            add("wake-up send→long-poll, SQLite (p50/p99 ms)", f"{p50:.1f} / {p99:.1f}")
        finally:
            server.stop()

    width = max(len(r[0]) for r in rows)
    print(f"{'measure'.ljust(width)} | {'figure':>28} | target")
    print("-" * (width + 50))
    for name, value, target in rows:
        print(f"{name.ljust(width)} | {value:>28} | {target}")


if __name__ == "__main__":
    main()
