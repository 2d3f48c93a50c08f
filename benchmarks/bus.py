"""Throughput and wake-up latency of the mcos bus, against a plain-SQL ceiling and PgQueuer.

Run: ``.venv/bin/python benchmarks/bus.py [--quick] [--pg URL]`` (``make bench``). It creates and
drops its own scratch databases on the PostgreSQL server and prints one table to stdout;
progress goes to stderr. Every phase runs producers and consumers together for a fixed time
and counts messages fully consumed (claimed and acked) per second.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import httpx
import psutil
import psycopg
import uvloop

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")
RUN: Callable[[Coroutine[Any, Any, T]], T] = uvloop.run
"""How each phase runs its clients, PgQueuer's and mcos's alike: on uvloop, the event loop
Mission Control's server runs on (`--loop asyncio` for the standard one). The load generator
shares the two cores with what it measures; uvloop's cost per request is about a third lower."""
sys.path.insert(0, str(ROOT / "src"))

from mcos.config.scaffold import init_fleet  # noqa: E402
from mcos.domain.audit import audit_key  # noqa: E402
from mcos.domain.messages import NewMessage  # noqa: E402
from mcos.runtime.settings import RuntimeSettings  # noqa: E402
from mcos.store import Directory, Store, make_store  # noqa: E402
from mcos.store.protocol import AgentEntry  # noqa: E402

PRODUCERS = 4
CONSUMERS = 4
SENDERS = 16
"""Agents sending at once through HTTP, each one message at a time (the fleet's agents send
concurrently); the rows with 4 senders are latency-bound: each sender waits for its answer."""
CAPACITY_SENDERS = 64  # ≥ PRODUCERS and SENDERS: the directory has this many senders
"""Senders for the bus's capacity (the judged send-1 row): at 16 each sender's wait for its
answer still leaves part of the two cores idle (the row's idle share says how much), so the
figure would be the round trip's, not the server's; 64 — an eighth of a 500-agent fleet each
sending one message — leave none."""
DIRECTORY = Directory(
    agents=[AgentEntry(f"a{i}", "bench", "local") for i in range(CONSUMERS)]
    + [AgentEntry(f"p{i}", "bench", "local") for i in range(CAPACITY_SENDERS)],
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
    producers: int = PRODUCERS,
) -> tuple[float, int]:
    """Run producers and consumers together; consumed messages per second, and how many."""
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
        *(producer(i) for i in range(producers)), *(consumer(i) for i in range(CONSUMERS))
    )
    return consumed / (time.monotonic() - started), consumed


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

    rate, _ = await steady(seconds, produce, consume)
    for c in conns:
        await c.close()
    return rate


# --- 2. the anchor: PgQueuer --------------------------------------------------------------------
async def pgqueuer_rate(
    url: str, seconds: float, per_call: int = 10, producers: int = 2, driver: str = "psycopg"
) -> tuple[float, float]:
    """PgQueuer: ``producers`` connections enqueueing ``per_call`` no-op jobs per call (one job:
    its scalar ``enqueue``), two queue managers (a connection each) taking batches of 10, on
    the ``psycopg`` or the ``asyncpg`` driver. Jobs done per second, and this process's CPU
    microseconds per job done (producers and consumers together, as the store rows count)."""
    from pgqueuer import AsyncpgDriver, PsycopgDriver, Queries, QueueManager

    async def connect() -> tuple[Queries, Callable[[], Awaitable[None]]]:
        if driver == "asyncpg":
            import asyncpg

            conn = await asyncpg.connect(url)
            return Queries(AsyncpgDriver(conn)), conn.close
        pconn = await psycopg.AsyncConnection.connect(url, autocommit=True)
        return Queries(PsycopgDriver(pconn)), pconn.close

    setup, close_setup = await connect()
    await setup.install()
    done = 0
    managers = []
    closers = [close_setup]
    for _ in range(2):
        queries, close = await connect()
        qm = QueueManager(queries)
        closers.append(close)

        @qm.entrypoint("noop")
        async def noop(job: object) -> None:
            nonlocal done
            done += 1

        managers.append(qm)
    producing = []
    for _ in range(producers):
        queries, close = await connect()
        producing.append(queries)
        closers.append(close)
    stop = time.monotonic() + seconds

    async def produce(i: int) -> None:
        q = producing[i]
        while time.monotonic() < stop:
            if per_call == 1:
                await q.enqueue("noop", None, 0)
            else:
                await q.enqueue(["noop"] * per_call, [None] * per_call, [0] * per_call)

    runners = [
        asyncio.create_task(qm.run(batch_size=10, dequeue_timeout=timedelta(seconds=1)))
        for qm in managers
    ]
    await asyncio.sleep(0.5)
    start_done, started, cpu = done, time.monotonic(), time.process_time()
    await asyncio.gather(*(produce(i) for i in range(producers)))
    finished = done - start_done
    rate = finished / (time.monotonic() - started)
    cpu_us = (time.process_time() - cpu) * 1e6 / max(finished, 1)
    for qm in managers:
        qm.shutdown.set()
    await asyncio.wait(runners, timeout=10)
    for close in closers:
        await close()
    return rate, cpu_us


def pgqueuer_best(
    admin_url: str, seconds: float, per_call: int, producers: int
) -> tuple[float, str, float]:
    """PgQueuer at its best: the faster of its two drivers, each on a fresh database (rate,
    driver, CPU µs per job)."""
    runs = {}
    for driver in ("psycopg", "asyncpg"):
        with Scratch(admin_url) as url:
            runs[driver] = RUN(pgqueuer_rate(url, seconds, per_call, producers, driver))
    best = max(runs, key=lambda d: runs[d][0])
    return runs[best][0], best, runs[best][1]


# --- 3. the mcos store alone --------------------------------------------------------------------
async def store_rate(
    url: str, seconds: float, batch: int, send_batch: int = 1
) -> tuple[float, float]:
    """Messages consumed per second, and this process's CPU µs per message consumed."""
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

    cpu = time.process_time()
    rate, consumed = await steady(seconds, produce, consume)
    cpu_us = (time.process_time() - cpu) * 1e6 / max(consumed, 1)
    await store.close()
    return rate, cpu_us


# --- 4 and 5. through HTTP ----------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`mcos server` in its own process, on a fleet made for the benchmark; ``store_url`` None
    keeps the fleet's embedded SQLite store (inside the fleet folder, where it must be)."""

    def __init__(self, store_url: str | None, workers: int) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="mcos-bench-"))
        fleet = init_fleet(self.dir)
        port = _free_port()  # a fixed one may be taken by other work on the machine
        text = fleet.read_text()
        text = re.sub(r'url = "[^"]*"', f'url = "http://127.0.0.1:{port}"', text)
        if store_url is not None:
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

    def cpu_seconds(self) -> float:
        """CPU time used so far by the server and its worker processes."""
        total = 0.0
        root = psutil.Process(self.proc.pid)
        for p in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def client(self, agent: str) -> aiohttp.ClientSession:
        """An agent's HTTP client. The load generator shares the two cores with the server, so
        it is aiohttp, whose CPU per request is a fraction of httpx's (the runtime's client):
        the figure is then the server's, not the load generator's."""
        return aiohttp.ClientSession(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.token(agent)}"},
            connector=aiohttp.TCPConnector(limit=4),
        )


async def _ok(response: aiohttp.ClientResponse) -> object:
    """The response's JSON, after a clear failure on an error status."""
    async with response:
        if response.status >= 400:
            raise RuntimeError(f"{response.method} {response.url}: {response.status} "
                               f"{await response.text()}")  # fmt: skip
        return await response.json() if response.status != 204 else None


@dataclass
class HttpRun:
    """One HTTP phase: consumed messages per second and the CPU each message cost."""

    rate: float
    consumed: int
    server_us: float
    client_us: float
    database_us: float
    idle: float
    """The machine's CPU time left idle during the phase (0 to 1): what the load left unused."""

    def figures(self) -> str:
        return (
            f"{self.rate:,.0f}; {self.server_us:,.0f} + {self.client_us:,.0f} + "
            f"{self.database_us:,.0f} µs; idle {self.idle:.0%}"
        )


def idle_cpu() -> tuple[float, float]:
    """The machine's idle CPU seconds (waiting for I/O included) and all its CPU seconds so far."""
    t = psutil.cpu_times()
    idle = t.idle + getattr(t, "iowait", 0.0)
    return idle, sum(t)


def idle_since(start: tuple[float, float]) -> float:
    idle, total = idle_cpu()
    return (idle - start[0]) / max(total - start[1], 1e-9)


def database_cpu_seconds() -> float:
    """CPU time used so far by PostgreSQL's processes on this machine (its backends, WAL writer
    and the rest): the database's share of a message, beside the server's and the client's."""
    total = 0.0
    for p in psutil.process_iter(["name"]):
        if p.info["name"] in ("postgres", "postmaster"):
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
    return total


async def http_rate(
    server: Server, seconds: float, send_batch: int = 1, senders: int = SENDERS, gather: float = 0
) -> HttpRun:
    """Consumed messages per second through the HTTP API, and the server's and this load
    generator's CPU per consumed message. Consumers long-poll as agents do (a send wakes them):
    at most five times a second when nothing comes (the run does not wait a long poll out)."""
    clients = {name: server.client(name) for name in [a.name for a in DIRECTORY.agents]}

    async def produce(i: int) -> None:
        message = {"to": f"a{i % CONSUMERS}", "body": "x"}
        if send_batch == 1:
            await _ok(await clients[f"p{i}"].post("/v1/messages", json=message))
        else:
            batch = {"messages": [message] * send_batch}
            await _ok(await clients[f"p{i}"].post("/v1/messages/batch", json=batch))

    async def consume(i: int) -> int:
        c = clients[f"a{i}"]
        params = {"limit": 100, "wait": 0.2, "gather": gather}
        body = await _ok(await c.get("/v1/inbox", params=params))
        got = body["deliveries"]  # type: ignore[index]
        if got:
            items = [{"id": d["id"], "receipt": d["receipt"]} for d in got]
            await _ok(await c.post("/v1/inbox/ack", json={"items": items}))
        return len(got)

    server_cpu, client_cpu = server.cpu_seconds(), time.process_time()
    database_cpu, machine = database_cpu_seconds(), idle_cpu()
    rate, consumed = await steady(seconds, produce, consume, senders)
    n = max(consumed, 1)
    run = HttpRun(
        rate,
        consumed,
        (server.cpu_seconds() - server_cpu) / n * 1e6,
        (time.process_time() - client_cpu) / n * 1e6,
        (database_cpu_seconds() - database_cpu) / n * 1e6,
        idle_since(machine),
    )
    for c in clients.values():
        await c.close()
    return run


WRK_SENDERS = """\
-- mcos benchmarks/bus.py: each request one agent's single-message send, the agents in turn.
local tokens, consumers, n = {}, 0, 0
init = function(args)
  consumers = tonumber(args[1])
  for i = 2, #args do tokens[#tokens + 1] = args[i] end
end
request = function()
  n = n + 1
  local i = n % #tokens
  return wrk.format("POST", "/v1/messages", {
    ["Authorization"] = "Bearer " .. tokens[i + 1],
    ["Content-Type"] = "application/json",
  }, '{"to": "a' .. (i % consumers) .. '", "body": "x"}')
end
"""


async def http_rate_wrk(server: Server, seconds: float, senders: int, gather: float) -> HttpRun:
    """:func:`http_rate` with the senders driven by wrk (C, one connection per sender, each
    waiting for its answer before its next send) instead of aiohttp: the load generator's CPU
    per send is then a fraction of Mission Control's, so the figure is the server's capacity
    rather than the two cores split three ways. The consumers are the same aiohttp long-polls,
    counted the same way; a refused send (wrk's non-2xx count) fails the phase."""
    wrk = shutil.which("wrk")
    assert wrk is not None
    tokens = [server.token(f"p{i}") for i in range(senders)]
    clients = {f"a{i}": server.client(f"a{i}") for i in range(CONSUMERS)}
    consumed = 0
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(WRK_SENDERS)
        script.flush()
        args = [wrk, "-t2", f"-c{senders}", f"-d{seconds:g}s", "-s", script.name, server.url]
        server_cpu, client_cpu = server.cpu_seconds(), time.process_time()
        database_cpu, children_cpu = database_cpu_seconds(), sum(_children_cpu())
        machine = idle_cpu()
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            *args,
            "--",
            str(CONSUMERS),
            *tokens,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )

        async def consume(name: str) -> None:
            nonlocal consumed
            c = clients[name]
            params = {"limit": 100, "wait": 0.2, "gather": gather}
            while proc.returncode is None:
                body = await _ok(await c.get("/v1/inbox", params=params))
                got = body["deliveries"]  # type: ignore[index]
                if got:
                    items = [{"id": d["id"], "receipt": d["receipt"]} for d in got]
                    await _ok(await c.post("/v1/inbox/ack", json={"items": items}))
                    consumed += len(got)

        consumers = [asyncio.create_task(consume(name)) for name in clients]
        out, err = await proc.communicate()
        elapsed = time.monotonic() - started
        await asyncio.gather(*consumers)
        wrk_cpu = sum(_children_cpu()) - children_cpu
    for c in clients.values():
        await c.close()
    report = out.decode() + err.decode()
    if proc.returncode != 0 or err or "Non-2xx" in report or "Socket errors" in report:
        raise RuntimeError(f"wrk: sends failed (exit {proc.returncode}):\n{report}")
    n = max(consumed, 1)
    return HttpRun(
        consumed / elapsed,
        consumed,
        (server.cpu_seconds() - server_cpu) / n * 1e6,
        (time.process_time() - client_cpu + wrk_cpu) / n * 1e6,
        (database_cpu_seconds() - database_cpu) / n * 1e6,
        idle_since(machine),
    )


def _children_cpu() -> tuple[float, float]:
    """CPU seconds of this process's children that ended and were waited for (wrk)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime, usage.ru_stime


async def wakeup(
    server: Server, seconds: float, per_second: int = 500
) -> tuple[float, float, float]:
    """p50/p99 ms from a send returning to the waiting long-poll returning with its message
    (0 when the long-poll returned first: the consumer had it before the sender heard back),
    and the messages sent per second (one sender, each send waiting for its answer: below
    ``per_second`` when a send's round trip is longer than its interval)."""
    producer, consumer = server.client("p0"), server.client("a0")
    sent_at: dict[int, float] = {}
    got_at: dict[int, float] = {}
    acks: set[asyncio.Task[object]] = set()
    stop = time.monotonic() + seconds

    async def consume() -> None:
        while time.monotonic() < stop + 1:
            response = await consumer.get("/v1/inbox", params={"limit": 100, "wait": 1})
            now = time.perf_counter()
            got = (await _ok(response))["deliveries"]  # type: ignore[index]
            for d in got:
                got_at[d["message"]["id"]] = now
            if got:  # ack in the background: the consumer goes straight back to waiting
                items = [{"id": d["id"], "receipt": d["receipt"]} for d in got]

                async def ack(items: list[dict[str, object]] = items) -> object:
                    return await _ok(await consumer.post("/v1/inbox/ack", json={"items": items}))

                task = asyncio.create_task(ack())
                acks.add(task)
                task.add_done_callback(acks.discard)

    async def produce() -> None:
        interval = 1 / per_second
        next_at = time.monotonic()
        while time.monotonic() < stop:
            response = await producer.post("/v1/messages", json={"to": "a0", "body": "x"})
            sent_at[(await _ok(response))["message"]["id"]] = time.perf_counter()  # type: ignore[index]
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    await asyncio.gather(consume(), produce())
    await asyncio.gather(*acks)
    await producer.close()
    await consumer.close()
    missing = set(sent_at) - set(got_at)
    if missing:
        raise RuntimeError(f"{len(missing)} sent messages never reached the long-poll")
    delays = [max(0.0, got_at[m] - sent_at[m]) * 1000 for m in sent_at]
    q = statistics.quantiles(delays, n=100)
    return q[49], q[98], len(sent_at) / seconds


# --- 7. the server's own cost per request --------------------------------------------------------
async def _asgi(
    app: Callable[..., Awaitable[None]], method: str, path: str, token: str, body: object = None,
    query: bytes = b"",
) -> tuple[int, bytes]:  # fmt: skip
    """One request straight into the ASGI app: no client, no HTTP server, no sockets."""
    raw = b"" if body is None else json.dumps(body).encode()
    headers = [(b"host", b"bench"), (b"authorization", f"Bearer {token}".encode())]
    if body is not None:
        headers += [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(raw))]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": query,
        "root_path": "", "headers": headers, "client": ("127.0.0.1", 1), "state": {},
        "server": ("127.0.0.1", 80),
    }  # fmt: skip
    pending = [{"type": "http.request", "body": raw, "more_body": False}]
    status, out = 0, b""

    async def receive() -> dict[str, object]:
        if pending:
            return pending.pop()
        await asyncio.Event().wait()  # never disconnects
        raise AssertionError

    async def send(message: dict[str, object]) -> None:
        nonlocal status, out
        if message["type"] == "http.response.start":
            status = int(message["status"])  # type: ignore[call-overload]
        elif message["type"] == "http.response.body":
            out += message.get("body", b"")  # type: ignore[operator]

    await app(scope, receive, send)
    return status, out


async def request_cpu(store_url: str, rounds: int) -> dict[str, float]:
    """Mission Control's CPU per request (µs) on its hot path — send one, claim, ack — with the
    app called in this process over ASGI, so neither a client nor other work on the machine
    is counted (the database's own work is not either)."""
    from mcos.cli.fleetfile import upgrade
    from mcos.config import load_fleet
    from mcos.server.factory import build_app

    tmp = Path(tempfile.mkdtemp(prefix="mcos-bench-"))
    fleet = init_fleet(tmp)
    text = re.sub(r'store = "[^"]*"', f'store = "{store_url}"', fleet.read_text())
    agents = "".join(
        f'\n[agents.{a.name}]\nrole = "bench"\nhost = "local"\n' for a in DIRECTORY.agents
    )
    fleet.write_text(text + agents + "\n[messaging]\npair_max = 100000000\n")
    await upgrade(store_url)
    app = build_app(load_fleet(str(fleet)))
    spent = {"send": 0.0, "claim": 0.0, "ack": 0.0}
    async with app.router.lifespan_context(app):
        operator = (tmp / "state" / "operator.token").read_text().strip()
        token = {}
        for name in ("p0", "a0"):
            _, body = await _asgi(
                app, "POST", "/v1/tokens", operator, {"kind": "agent", "name": name}
            )
            token[name] = json.loads(body)["token"]

        async def one(count: bool) -> None:
            t0 = time.process_time()
            status, _ = await _asgi(
                app, "POST", "/v1/messages", token["p0"], {"to": "a0", "body": "x"}
            )
            t1 = time.process_time()
            _, body = await _asgi(app, "GET", "/v1/inbox", token["a0"], query=b"limit=100")
            t2 = time.process_time()
            items = [
                {"id": d["id"], "receipt": d["receipt"]} for d in json.loads(body)["deliveries"]
            ]
            acked, _ = await _asgi(app, "POST", "/v1/inbox/ack", token["a0"], {"items": items})
            t3 = time.process_time()
            assert (status, acked, len(items)) == (201, 200, 1)
            if count:
                spent["send"] += t1 - t0
                spent["claim"] += t2 - t1
                spent["ack"] += t3 - t2

        for _ in range(50):  # warm: prepared statements, caches
            await one(False)
        for _ in range(rounds):
            await one(True)
    shutil.rmtree(tmp, ignore_errors=True)
    return {k: v / rounds * 1e6 for k, v in spent.items()}


def machine_speed() -> float:
    """CPU milliseconds of a fixed pure-Python loop: on the idle 2-core machine it took 119 ms
    at the start of one run and 220 ms at its end (the host's other tenants), so a figure is
    read beside this one, not alone."""
    started = time.process_time()
    total = 0
    for i in range(3_000_000):
        total += i
    return (time.process_time() - started) * 1000


PHASES = ("ceiling", "pgqueuer", "store", "http", "wrk", "wakeup", "sqlite", "request-cpu")


def main() -> None:  # noqa: PLR0912 (one phase after another)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="2 s per phase")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--workers", type=int, default=2, help="server processes for PostgreSQL")
    parser.add_argument(
        "--loop", choices=("uvloop", "asyncio"), default="uvloop", help="the clients' event loop"
    )
    parser.add_argument(
        "--gather",
        type=float,
        default=RuntimeSettings().claim_gather,
        help="seconds a woken claim gathers (default: the agent runtime's claim_gather)",
    )
    parser.add_argument(
        "--only", default=",".join(PHASES), help=f"comma-separated phases of {', '.join(PHASES)}"
    )
    args = parser.parse_args()
    if args.loop == "asyncio":
        global RUN  # noqa: PLW0603 (one switch for every phase)
        RUN = asyncio.run
    only = set(args.only.split(","))
    if only - set(PHASES):
        parser.error(f"--only: unknown phase(s) {', '.join(sorted(only - set(PHASES)))}")
    seconds = 2.0 if args.quick else 8.0
    rows: list[tuple[str, str, str]] = []

    def add(name: str, value: str, target: str = "") -> None:
        rows.append((name, value, target))
        say(f"{name}: {value} {target}")

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    load_before, speed_before = os.getloadavg()[0], machine_speed()
    if "ceiling" in only:
        with Scratch(args.pg) as url:
            say("1. ceiling: pgbench")
            tps = pgbench_rate(url, seconds)
            if tps is not None:
                add("ceiling: pgbench, 4 clients, insert 1 + claim 1 (msg/s)", f"{tps:,.0f}")
        with Scratch(args.pg) as url:
            say("1. ceiling: plain SQL through psycopg")
            add(
                "ceiling: plain SQL via psycopg, send 10 / claim 50 (msg/s)",
                f"{RUN(ceiling(url, seconds)):,.0f}",
            )
    pgq10 = pgq1 = 0.0
    if "pgqueuer" in only or "store" in only:
        say("2. PgQueuer, enqueue 10 per call (both drivers)")
        pgq10, driver, cpu_us = pgqueuer_best(args.pg, seconds, per_call=10, producers=2)
        add(
            f"anchor: PgQueuer ({driver}), enqueue 10 / batch 10 (msg/s; CPU per message)",
            f"{pgq10:,.0f}; {cpu_us:,.0f} µs",
        )
        say("2. PgQueuer, enqueue 1 per call (both drivers)")
        pgq1, driver, cpu_us = pgqueuer_best(args.pg, seconds, per_call=1, producers=PRODUCERS)
        add(
            f"anchor: PgQueuer ({driver}), enqueue 1 / batch 10 (msg/s; CPU per message)",
            f"{pgq1:,.0f}; {cpu_us:,.0f} µs",
        )
    if "store" in only:
        for send_batch, batch in ((1, 1), (1, 50), (10, 50)):
            with Scratch(args.pg) as url:
                say(f"3. mcos PostgresStore, send {send_batch} / claim {batch}")
                rate, cpu_us = RUN(store_rate(url, seconds, batch, send_batch))
                anchor, per = (pgq10, 10) if send_batch == 10 else (pgq1, 1)
                held = send_batch == 10 or batch == 50
                add(
                    f"mcos store on PostgreSQL, send {send_batch} / claim+ack {batch} "
                    "(msg/s; CPU per message)",
                    f"{rate:,.0f} ({rate / anchor:.2f}× enqueue-{per}); {cpu_us:,.0f} µs",
                    f"≥1.0× PgQueuer enqueue-{per}: {verdict(rate >= anchor)}" if held else "",
                )
    gather = args.gather  # consumers claim as agents do
    wrk = shutil.which("wrk")
    if "http" in only:
        runs = [(1, PRODUCERS, 0.0), (1, SENDERS, gather), (1, CAPACITY_SENDERS, gather)]
        runs += [(10, PRODUCERS, 0.0), (10, SENDERS, gather)]
        for send_batch, senders, gathered in runs:
            with Scratch(args.pg) as url:
                say(f"4. HTTP, PostgreSQL, send {send_batch}, {senders} senders, gather {gathered}")
                server = Server(url, args.workers)
                try:
                    run = RUN(http_rate(server, seconds, send_batch, senders, gathered))
                    floor = 1000 if send_batch == 1 else 1500
                    judged = gathered > 0 and senders == (
                        CAPACITY_SENDERS if send_batch == 1 else SENDERS
                    )
                    add(
                        f"mcos HTTP, PostgreSQL, {args.workers} workers, send {send_batch} / "
                        f"claim 100, {senders} senders, gather {gathered * 1000:g} ms (msg/s; "
                        "CPU per message: server, load generator, database; machine idle)",
                        run.figures(),
                        f"≥{floor:,}: {verdict(run.rate >= floor)}" if judged else "",
                    )
                finally:
                    server.stop()
    if "wrk" in only:
        if wrk is None:
            say("4. HTTP, senders by wrk: skipped, wrk is not installed (`make bench` installs it)")
        else:
            with Scratch(args.pg) as url:
                senders = CAPACITY_SENDERS
                say(f"4. HTTP, PostgreSQL, send 1 by wrk, {senders} senders, gather {gather}")
                server = Server(url, args.workers)
                try:
                    run = RUN(http_rate_wrk(server, seconds, senders, gather))
                    add(  # a second view of the judged row: the senders' CPU is wrk's (C)
                        f"mcos HTTP, PostgreSQL, {args.workers} workers, send 1 by wrk / claim "
                        f"100, {senders} senders, gather {gather * 1000:g} ms (msg/s; CPU per "
                        "message: server, load generator, database; machine idle)",
                        run.figures(),
                    )
                finally:
                    server.stop()
    if "wakeup" in only:
        for per_second in (100, 500):
            with Scratch(args.pg) as url:
                say(f"5. wake-up latency through HTTP on PostgreSQL (1 worker), {per_second} msg/s")
                server = Server(url, 1)
                try:
                    p50, p99, sent = RUN(wakeup(server, seconds, per_second))
                    add(
                        f"wake-up send→long-poll, PostgreSQL, {per_second} msg/s asked (p50/p99 "
                        "ms; msg/s sent)",
                        f"{p50:.1f} / {p99:.1f}; {sent:,.0f}",
                        f"≤2 / ≤5: {verdict(p50 <= 2 and p99 <= 5)}",
                    )
                finally:
                    server.stop()
    if "sqlite" in only:
        with tempfile.TemporaryDirectory() as tmp:
            say("6. SQLite store alone")
            rate, _ = RUN(store_rate(f"sqlite:///{tmp}/bench.db", seconds, 50, 10))
            add("mcos store on SQLite, send 10 / claim+ack 50 (msg/s)", f"{rate:,.0f}")
        say("6. SQLite through HTTP")
        server = Server(None, 1)  # the fleet's own SQLite file
        try:
            run = RUN(http_rate(server, seconds, 10))
            add("mcos HTTP, SQLite, send 10 / claim 100 (msg/s)", f"{run.rate:,.0f}")
            p50, p99, sent = RUN(wakeup(server, seconds))
            add(
                "wake-up send→long-poll, SQLite, 500 msg/s asked (p50/p99 ms; msg/s sent)",
                f"{p50:.1f} / {p99:.1f}; {sent:,.0f}",
            )
        finally:
            server.stop()
    if "request-cpu" in only:
        with Scratch(args.pg) as url:
            say("7. Mission Control's CPU per request, in process (ASGI), PostgreSQL")
            cpu = RUN(request_cpu(url, 300 if args.quick else 1000))
            add(
                "server CPU per request, in process: send 1 / claim / ack (µs)",
                " / ".join(f"{cpu[k]:,.0f}" for k in ("send", "claim", "ack")),
            )
    add(
        "load average (1 min) at start / end: other work on the machine",
        f"{load_before:.1f} / {os.getloadavg()[0]:.1f}",
    )
    add(
        "machine speed at start / end: CPU ms of a fixed Python loop (lower is faster)",
        f"{speed_before:.0f} / {machine_speed():.0f}",
    )

    width = max(len(r[0]) for r in rows)
    print(f"{'measure'.ljust(width)} | {'figure':>30} | target")
    print("-" * (width + 52))
    for name, value, target in rows:
        print(f"{name.ljust(width)} | {value:>30} | {target}")


if __name__ == "__main__":
    main()
