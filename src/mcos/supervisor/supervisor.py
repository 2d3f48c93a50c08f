"""`mcos up`: run the agents a host is responsible for — exactly one live instance of each.

For every agent it may run, the supervisor holds the agent's lease in Mission Control before
starting it and renews it every third of its TTL; if it cannot renew, it kills the agent before
the lease can pass to anyone else. Each agent is its own process in its own session, dies with
its supervisor (``PR_SET_PDEATHSIG`` on Linux, a parent watch elsewhere: ``portable``), writes
to a liveness socket from inside its event loop, stops itself at the lease deadline read from
that socket if no later one came (``mcos.runtime.lease_watch``), and is stopped by signalling
its whole process group.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mcos.api_models import LeaseOut
from mcos.client import AsyncClient, Calls
from mcos.config.models import Fleet, parse_duration
from mcos.domain.agent_state import AgentStatus
from mcos.domain.leases import DEFAULT_TTL
from mcos.domain.tokens import PrincipalKind
from mcos.exceptions import LeaseHeld, LeaseLost, McosError
from mcos.logs import file_handler, get_logger
from mcos.runtime.lease_watch import deadline_message
from mcos.supervisor.policy import Exit, RestartPolicy, classify_exit
from mcos.supervisor.portable import native
from mcos.supervisor.spawn import SpawnStarter
from mcos.supervisor.systemd import Notifier
from mcos.supervisor.zygote import ForkServer

RESTARTS_ENV = "MCOS_RESTARTS"


def _steady_now() -> datetime:
    """The instant of a local event, for how far apart such events are (crashes within the
    restart window), never for dating anything: the monotonic clock, which a step of the
    wall clock (NTP catching up, ``date -s``) cannot move — a step back would otherwise crowd
    old crashes into the window and fail the agent with a false P2."""
    return datetime.fromtimestamp(time.monotonic(), UTC)


@dataclass
class Slot:
    """One agent this supervisor may run, and what it knows about it."""

    name: str
    primary: bool
    """Placed on this host by the fleet file (else a failover host for it)."""
    token: str = ""
    token_id: int | None = None
    """The agent token handed to the running instance (minted as it starts)."""
    lease: LeaseOut | None = None
    renew_at: float = 0.0
    kill_at: float = 0.0
    """Monotonic time by which the agent must be dead if the lease was not renewed."""
    next_acquire: float = 0.0
    pid: int | None = None
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    liveness: int | None = None
    last_alive: float = 0.0
    not_before: float = 0.0
    restarts: int = 0
    crashes: list[datetime] = field(default_factory=list)
    """When it crashed, on the monotonic clock (``_steady_now``): only their spacing counts."""
    status: str = "waiting"
    detail: str = ""
    said: str = ""
    restart_request: int | None = None
    """An operator's restart request being carried out (its id, reported done once started)."""


class Supervisor:
    """The agents of some hosts of a fleet, kept running under leases."""

    @classmethod
    def for_fleet(
        cls, fleet: Fleet, hosts: set[str], client: AsyncClient, say: Callable[[str], None]
    ) -> Supervisor:
        """With the fleet file's ``[supervisor]`` settings."""
        c = fleet.supervisor
        policy = RestartPolicy(
            first=parse_duration(c.restart_first),
            cap=parse_duration(c.restart_cap),
            max_restarts=c.max_restarts,
            window=parse_duration(c.restart_window),
        )
        return cls(
            fleet,
            hosts,
            client,
            ttl=parse_duration(c.lease_ttl),
            watchdog=parse_duration(c.watchdog),
            grace=parse_duration(c.stop_grace).total_seconds(),
            policy=policy,
            say=say,
        )

    def __init__(
        self,
        fleet: Fleet,
        hosts: set[str],
        client: AsyncClient,
        *,
        ttl: timedelta = DEFAULT_TTL,
        watchdog: timedelta = timedelta(seconds=30),
        grace: float = 10.0,
        policy: RestartPolicy | None = None,
        say: Callable[[str], None] = print,
        logs: Path | None = None,
    ) -> None:
        self.fleet = fleet
        self.hosts = hosts
        self.client = client
        self.ttl = ttl
        self.watchdog = watchdog
        self.grace = grace
        self.policy = policy or RestartPolicy()
        self.say = say
        self.logs = logs or fleet.state_dir / "logs"
        self.holder = f"{'+'.join(sorted(hosts))}/{socket.gethostname()}/{os.getpid()}"
        self.log_name = f"supervisor-{'+'.join(sorted(hosts))}"
        """Its logger (``mcos.supervisor-HOST``) and log file (``LOGS/supervisor-HOST.log``)."""
        self.log = get_logger(f"mcos.{self.log_name}")
        self.rng = random.Random()  # noqa: S311 (jitter)
        self.slots = {
            name: Slot(name, primary=a.host in hosts)
            for name, a in sorted(fleet.agents.items())
            if a.host in hosts or hosts & set(a.failover_hosts)
        }
        self.notifier = Notifier.from_env()
        self.forks: ForkServer | SpawnStarter = (
            ForkServer(self._on_exit) if native() else SpawnStarter(self._on_exit)
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self.restart_poll = 2.0
        """Seconds between looks at operators' restart requests."""
        self._restart_cursor: int | None = None
        self._restarts_due = 0.0
        self._renewing: asyncio.Task[None] | None = None
        self._guarding: asyncio.Task[None] | None = None
        self.starting = 16
        """Agents being started (their lease taken, token minted, process forked) at once: 16
        rather than 8 took 500 agents from 67 to 50 s (a pass waits for its slowest start, and
        each start mostly waits on Mission Control's answers)."""
        self.beat = min(max(self.watchdog.total_seconds() / 6, 0.5), 5.0)
        """Seconds between an agent's beats on its liveness socket: six per watchdog period
        (5 s for the default 30 s; every 2 s, as before, was 250 wake-ups a second for 500 idle
        agents, and as many reads for their supervisor), at least one every half second."""

    # --- lifecycle ------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event, *, tick: float = 0.25) -> None:
        """Supervise until ``stop`` is set, then stop every agent and give the leases back."""
        await self.forks.start()
        self.notifier.ready()
        logger = logging.getLogger(f"mcos.{self.log_name}")
        handler = file_handler(self.logs / f"{self.log_name}.log")
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        self._guarding = asyncio.get_running_loop().create_task(
            self._guard(tick), name="lease-guard"
        )
        try:
            while not stop.is_set():
                await self.follow_restarts()
                more = await self._tick_all()
                self.notifier.watchdog()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0 if more else tick):
                        await stop.wait()
        finally:
            self.notifier.stopping()
            try:
                await self.shutdown()
            finally:
                await self._stop_renewing()
                logger.removeHandler(handler)
                handler.close()

    async def _stop_renewing(self) -> None:
        for task in (self._guarding, self._renewing):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._guarding = self._renewing = None

    async def shutdown(self) -> None:
        """Stop every agent (group SIGTERM, grace, SIGKILL), release leases, revoke tokens.

        The leases are renewed until the agents are gone (a fleet of hundreds takes a while to
        stop gracefully, longer than a TTL, and each agent stops itself at its deadline)."""
        running = [s for s in self.slots.values() if s.pid is not None]
        for slot in running:
            slot.status = "stopping"
            _signal_group(slot, signal.SIGTERM)
        await asyncio.gather(*(self._reap(s) for s in running))
        await self._stop_renewing()
        await self.forks.stop()
        for slot in self.slots.values():
            if slot.lease is not None:
                with contextlib.suppress(McosError):
                    await self.client.do(
                        Calls.release_lease(slot.name, self.holder, slot.lease.fence)
                    )
                slot.lease = None
        for slot in self.slots.values():
            if slot.token_id is not None:
                with contextlib.suppress(McosError):
                    await self.client.do(Calls.revoke_token(slot.token_id))
                slot.token_id = None

    async def _reap(self, slot: Slot) -> None:
        try:
            async with asyncio.timeout(self.grace):
                await slot.exited.wait()
        except TimeoutError:
            _signal_group(slot, signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await slot.exited.wait()

    async def _tick_all(self) -> bool:
        """Tick every slot, up to ``starting`` of them at once: an agent's start waits on
        Mission Control (lease, token) and the fork server, so starting hundreds one after
        another would leave both idle between round trips."""
        gate = asyncio.Semaphore(self.starting)

        async def one(slot: Slot) -> None:
            async with gate:
                try:
                    await self.tick(slot)
                except McosError as e:
                    self._say(slot, f"{slot.name}: {e.message}")

        self._enforce_deadlines()
        idle = [s for s in self.slots.values() if not self._may_act(s)]
        for slot in idle:  # the common case, no I/O: no task for it
            self._watch(slot, time.monotonic())
        # At most ``starting`` per pass, so a pass stays short: the watchdog and operators'
        # restarts are looked at between passes (deadlines and renewals: ``_guard``).
        waiting = [s for s in self.slots.values() if self._may_act(s)]
        busy = waiting[: self.starting]
        if busy:
            await asyncio.gather(*(one(s) for s in busy))
        return len(waiting) > len(busy)  # more to start: no pause before the next pass

    def _enforce_deadlines(self) -> None:
        """Kill each agent whose lease deadline passed with its renewal still unanswered."""
        now = time.monotonic()
        for slot in self.slots.values():
            if slot.lease is not None and now >= slot.kill_at:
                self._lose(slot, "could not renew the lease in time (no answer yet)")

    async def _guard(self, tick: float) -> None:
        """Every ``tick``, whatever the passes are waiting on (a start waits on Mission Control
        and the fork server, which may still be importing): renew the leases that are due and
        enforce each lease's deadline. Renewals once waited for the pass, and a start slow
        enough outlived the leases of the agents it was starting."""
        while True:
            self._enforce_deadlines()
            self._renew_in_background()
            await asyncio.sleep(tick)

    def _may_act(self, slot: Slot) -> bool:
        """Whether a tick of ``slot`` would call anyone (acquire a lease, start the agent)."""
        now = time.monotonic()
        if slot.lease is None:
            return slot.status not in ("failed", "misconfigured") and now >= slot.next_acquire
        return (
            slot.pid is None
            and slot.status not in ("failed", "misconfigured")
            and now >= slot.not_before
        )

    # --- all leases at once ---------------------------------------------------------------------
    def _renew_in_background(self) -> None:
        """Renew off the loop (one request at a time): a slow answer must not hold up the
        ticks, which kill each agent whose own deadline passes while the answer is awaited."""
        if self._renewing is None or self._renewing.done():
            self._renewing = asyncio.get_running_loop().create_task(
                self.renew(), name="renew-leases"
            )

    async def renew(self) -> None:
        """Once any held lease is due, renew every held lease in one request (so they stay due
        together: one request per third of the TTL, however many agents); a lease the answer
        says is lost kills its agent, and if no answer comes before the first kill deadline,
        each lease past its own deadline is given up as lost."""
        now = time.monotonic()
        held = [s for s in self.slots.values() if s.lease is not None]
        if not any(now >= s.renew_at for s in held):
            return
        call = Calls.renew_leases(
            self.holder,
            [(s.name, s.lease.fence) for s in held if s.lease is not None],
            self.ttl.total_seconds(),
        )
        sent = {s.name: s.lease.fence for s in held if s.lease is not None}
        try:
            # A host whose network went silent (packets dropped, no refusal) would wait out
            # the HTTP timeout — past the leases' end, while another host may take the agents.
            # The last kill deadline bounds the wait instead (the ticks kill each agent at its
            # own deadline meanwhile).
            async with asyncio.timeout(max(max(s.kill_at for s in held) - now, 0.05)):
                answer = await self.client.do(call)
        except (McosError, TimeoutError) as e:
            why = e.message if isinstance(e, McosError) else "Mission Control did not answer"
            for slot in held:
                if slot.lease is not None and slot.lease.fence == sent[slot.name]:
                    self._not_renewed(slot, now, why)
            return
        for slot, result in zip(held, answer.results, strict=True):
            if slot.lease is None or slot.lease.fence != sent[slot.name]:
                continue  # given up (its deadline passed) or granted anew while we waited
            if result.lease is not None:
                self._hold(slot, result.lease, now)
            elif result.error is not None and result.error.code == LeaseLost.code:
                self._lose(slot, result.error.message)
            else:  # refused for this agent (forbidden, not found): as if unanswered
                self._not_renewed(slot, now, result.error.message if result.error else "?")

    def _not_renewed(self, slot: Slot, sent: float, why: str) -> None:
        if time.monotonic() >= slot.kill_at:
            self._lose(slot, f"could not renew the lease in time ({why})")
        else:
            slot.renew_at = sent + 1.0

    # --- one agent ------------------------------------------------------------------------------
    async def tick(self, slot: Slot) -> None:
        """Take the lease, start the agent when it may run, enforce the watchdog (leases are
        renewed together: :meth:`renew`)."""
        now = time.monotonic()
        if slot.lease is None:
            if slot.status in ("failed", "misconfigured") or now < slot.next_acquire:
                return
            await self._acquire(slot, now)
            if slot.lease is None:
                return
        if slot.pid is None and slot.status not in ("failed", "misconfigured"):
            if now >= slot.not_before:
                await self._start(slot)
        else:
            self._watch(slot, now)

    def _watch(self, slot: Slot, now: float) -> None:
        """Kill a running agent whose event loop went silent past the watchdog."""
        if slot.pid is not None and now - slot.last_alive > self.watchdog.total_seconds():
            self._say(slot, f"{slot.name}: no liveness for {self.watchdog}: killing it (hung)")
            slot.detail = f"hung: no liveness for {self.watchdog}"
            _signal_group(slot, signal.SIGKILL)
            slot.last_alive = now  # one kill per silence

    # --- restarts operators ask for ---------------------------------------------------------
    async def follow_restarts(self) -> None:
        """Carry out the restart requests recorded since the last look (every ``restart_poll``
        seconds; the first look only takes the cursor: older requests are not replayed)."""
        now = time.monotonic()
        if now < self._restarts_due:
            return
        self._restarts_due = now + self.restart_poll
        try:
            found = await self.client.do(Calls.restart_requests(self._restart_cursor))
        except McosError:
            return
        self._restart_cursor = found.cursor
        for request in found.requests:
            slot = self.slots.get(request.agent)
            if slot is not None:
                self._restart(slot, request.id, request.by)

    def _restart(self, slot: Slot, request_id: int, by: str) -> None:
        """Stop the agent gracefully and start it again at once (not a crash); a failed or
        misconfigured agent is tried again from scratch."""
        slot.restart_request = request_id
        slot.detail = f"restart requested by {by}"
        if slot.pid is not None:
            self._say(slot, f"{slot.name}: restart requested by {by}: stopping it")
            slot.status = "stopping"
            _signal_group(slot, signal.SIGTERM)
            task = asyncio.get_running_loop().create_task(
                self._reap(slot), name=f"restart-{slot.name}"
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif slot.status in ("failed", "misconfigured", "restarting"):
            self._say(slot, f"{slot.name}: restart requested by {by}: starting it again")
            slot.status = "waiting"
            slot.crashes.clear()
            slot.next_acquire = slot.not_before = 0.0
        else:  # held elsewhere, lease lost: the host that holds it restarts it
            slot.restart_request = None

    async def _restarted(self, slot: Slot) -> None:
        request, slot.restart_request = slot.restart_request, None
        if request is None:
            return
        with contextlib.suppress(McosError):
            await self.client.do(Calls.restart_done(request, slot.name, slot.pid))

    async def _acquire(self, slot: Slot, now: float) -> None:
        try:
            lease = await self.client.do(
                Calls.acquire_lease(
                    slot.name, self.holder, ",".join(sorted(self.hosts)), self.ttl.total_seconds()
                )
            )
        except LeaseHeld as e:
            slot.status, slot.detail = "held elsewhere", e.message
            self._say(slot, f"not running {slot.name}: {e.message}")
            # A failover host waits a full TTL more, so the primary host wins a restart race.
            slot.next_acquire = now + self.ttl.total_seconds() / (3 if slot.primary else 1)
            return
        self._hold(slot, lease, now)

    def _hold(self, slot: Slot, lease: LeaseOut, sent: float) -> None:
        """Adopt a grant; deadlines count from when the request left, on our own clock. A
        running agent is told its new deadline (it stops itself there if told no later one,
        should this supervisor be unable to kill it: :mod:`mcos.runtime.lease_watch`)."""
        slot.lease = lease
        ttl = self.ttl.total_seconds()
        slot.renew_at = sent + ttl / 3
        slot.kill_at = sent + ttl - min(2.0, ttl / 4)
        if slot.liveness is not None:
            _tell_deadline(slot.liveness, slot.kill_at)

    def _lose(self, slot: Slot, why: str) -> None:
        """The lease is gone: the agent must die now, before another instance may start."""
        self._say(slot, f"{slot.name}: lease lost — {why}; stopping it")
        slot.lease = None
        slot.status, slot.detail = "lease lost", why
        slot.next_acquire = time.monotonic() + self.ttl.total_seconds()
        _signal_group(slot, signal.SIGKILL)

    async def _mint(self, slot: Slot) -> None:
        """A fresh token for the instance about to start, under the lease. Minted with the host
        token, it replaces this host's previous token for the agent (Mission Control revokes
        that one as it hands this over): restarts leave one active token per agent and host."""
        created = await self.client.do(
            Calls.create_token(
                PrincipalKind.AGENT, slot.name, label=f"supervisor {self.holder}"[:100],
                expires_in_seconds=30 * 86400,
            )
        )  # fmt: skip
        slot.token, slot.token_id = created.token, created.record.id

    async def _start(self, slot: Slot) -> None:
        assert slot.lease is not None
        await self._mint(slot)
        lease = slot.lease
        if lease is None or time.monotonic() >= slot.kill_at:
            return  # lost, or past its deadline, while the token was minted: not started
        # A socket, not a pipe: the agent beats on it, and we write it its lease deadlines —
        # the first one before it starts, and any renewal confirmed while it is being forked.
        ours, theirs = socket.socketpair()
        read_end, write_end = ours.detach(), theirs.detach()
        os.set_blocking(read_end, False)
        _tell_deadline(read_end, slot.kill_at)
        slot.liveness = read_end
        self.logs.mkdir(parents=True, exist_ok=True)
        log = os.open(self.logs / f"{slot.name}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        request = {
            "name": slot.name,
            "fleet": str(self.fleet.path),
            "token": slot.token,
            "fence": lease.fence,
            "env": {RESTARTS_ENV: str(slot.restarts)},
            "liveness_every": self.beat,
        }
        try:
            pid = await self.forks.spawn(request, [log, write_end])
        except BaseException:
            self._close_liveness(slot)
            raise
        finally:
            os.close(log)
            os.close(write_end)
        slot.pid = pid
        slot.exited.clear()
        slot.last_alive = time.monotonic()
        asyncio.get_running_loop().add_reader(read_end, self._alive, slot)
        if slot.lease is None or slot.lease.fence != lease.fence:
            # Lost while it was being forked (the deadline passed, or the renewal said so):
            # it must not run on.
            _signal_group(slot, signal.SIGKILL)
            return
        slot.status, slot.detail = "running", f"pid {pid}, fence {lease.fence}"
        self._say(slot, f"started {slot.name} (pid {pid}, fence {lease.fence})")
        await self._restarted(slot)

    def _alive(self, slot: Slot) -> None:
        if slot.liveness is None:
            return
        try:
            data = os.read(slot.liveness, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            slot.last_alive = time.monotonic()
        else:  # the agent closed its end: it is exiting
            self._close_liveness(slot)

    def _close_liveness(self, slot: Slot) -> None:
        if slot.liveness is not None:
            asyncio.get_running_loop().remove_reader(slot.liveness)
            os.close(slot.liveness)
            slot.liveness = None

    def _on_exit(self, pid: int, code: int) -> None:
        slot = next((s for s in self.slots.values() if s.pid == pid), None)
        if slot is None:
            return
        task = asyncio.get_running_loop().create_task(
            self._exited(slot, code), name=f"exited-{slot.name}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _exited(self, slot: Slot, code: int) -> None:
        _signal_group(slot, signal.SIGKILL)  # whatever it left behind in its group goes too
        self._close_liveness(slot)
        slot.pid = None
        slot.exited.set()
        outcome = classify_exit(code, stopping=slot.status == "stopping")
        await self._after_exit(slot, code, outcome)

    async def _after_exit(self, slot: Slot, code: int, outcome: Exit) -> None:
        now = _steady_now()
        if outcome is Exit.STOPPED:
            if slot.restart_request is not None:  # an operator's restart: start it again now
                slot.status, slot.not_before = "waiting", 0.0
            return
        if outcome is Exit.MISCONFIGURED:
            slot.status = "misconfigured"
            slot.detail = slot.detail if "misconfigured" in slot.detail else f"exit {code}"
            self._say(slot, f"{slot.name} is misconfigured (exit 78): not restarting it")
            await self._release(slot)
            return
        if outcome is Exit.FENCED:
            self._say(slot, f"{slot.name} was fenced out: another instance runs it")
            slot.lease = None
            slot.status = "held elsewhere"
            return
        slot.crashes.append(now)
        slot.restarts += 1
        if self.policy.failed(slot.crashes, now):
            await self._failed(slot, code)
            return
        wait = self.policy.backoff(slot.restarts, self.rng.random()).total_seconds()
        # No start while Mission Control is asked for a cooldown: a tick meanwhile would start
        # the agent at once (its exit cleared its pid), before the backoff or the cooldown.
        slot.not_before, slot.status, cooldown = math.inf, "restarting", 0.0
        try:
            cooldown = await self._cooldown_left(slot)
        finally:
            wait = max(wait, cooldown)
            slot.not_before = time.monotonic() + wait
        slot.detail = f"exit {code}; restart {slot.restarts} in {wait:.1f}s"
        self._say(slot, f"{slot.name} exited with {code}: restart {slot.restarts} in {wait:.1f}s")
        with contextlib.suppress(McosError):
            await self.client.do(Calls.report_state(slot.name, AgentStatus.STARTING, slot.detail))

    async def _cooldown_left(self, slot: Slot) -> float:
        """Seconds until a rate-limit cooldown the agent reported ends (0 if none)."""
        try:
            agent = await self.client.do(Calls.agent(slot.name))
            now = (await self.client.do(Calls.time())).now
        except McosError:
            return 0.0
        if agent.state == AgentStatus.COOLING_DOWN.value and agent.state_until is not None:
            return max((agent.state_until - now).total_seconds(), 0.0)
        return 0.0

    async def _failed(self, slot: Slot, code: int) -> None:
        slot.status = "failed"
        window = self.policy.window
        slot.detail = (
            f"{len(slot.crashes)} crashes, more than {self.policy.max_restarts} in {window}; "
            f"last exit {code}"
        )
        self._say(slot, f"{slot.name} failed: {slot.detail}; not restarting it")
        await self._release(slot)
        # Mission Control tells whom the agent reports to (P2, crash loop): a host token sends
        # no messages of its own.
        with contextlib.suppress(McosError):
            await self.client.do(
                Calls.report_state(
                    slot.name,
                    AgentStatus.FAILED,
                    f"{slot.detail}; its log: {self.logs / (slot.name + '.log')}",
                )
            )

    async def _release(self, slot: Slot) -> None:
        if slot.lease is not None:
            with contextlib.suppress(McosError):
                await self.client.do(Calls.release_lease(slot.name, self.holder, slot.lease.fence))
            slot.lease = None

    def _say(self, slot: Slot, text: str) -> None:
        if text != slot.said:
            slot.said = text
            self.say(text)
            self.log.info(
                text, agent=slot.name, status=slot.status, restarts=slot.restarts, pid=slot.pid
            )


def _tell_deadline(fd: int, deadline: float) -> None:
    """Write an agent its lease deadline (the monotonic instant we would kill it); an agent
    too far behind to take it in, or gone, is past telling."""
    with contextlib.suppress(OSError):
        os.write(fd, deadline_message(deadline))


def _signal_group(slot: Slot, sig: signal.Signals) -> None:
    """Signal the agent's whole process group (its session), children included."""
    if slot.pid is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(slot.pid, sig)
