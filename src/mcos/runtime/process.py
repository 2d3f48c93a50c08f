"""An agent as an OS process: its model (through Mission Control, or with its own key), the clock
measured, the loop run, stopped on signals."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential_jitter,
)

from mcos.client import AsyncClient, Calls, ServerUnreachable
from mcos.config.models import Fleet, parse_key_ref
from mcos.config.secrets import resolve_key
from mcos.domain.agent_state import AgentStatus
from mcos.domain.redaction import remember
from mcos.exceptions import EX_CONFIG, ConfigError, Fenced, McosError, StoreUnavailable
from mcos.logs import get_logger
from mcos.models.factory import make_provider
from mcos.models.gateway import GatewayAccess
from mcos.runtime.agent import AgentRuntime, RuntimeSettings
from mcos.runtime.clock import MissionClock
from mcos.runtime.lease_watch import LeaseWatch
from mcos.runtime.sidecars import Sidecars
from mcos.runtime.sync import start_sync
from mcos.supervisor.policy import EX_FENCED

log = get_logger("mcos.runtime")
T = TypeVar("T")


START_RETRY_FOR = 30.0
"""Seconds a start-up step keeps trying through a Mission Control or database blip."""


async def reaching_mission_control(step: Callable[[], Awaitable[T]], what: str) -> T:
    """A start-up step that needs Mission Control (the clock's first measurement), tried again
    while it or its database is briefly out of reach (503 ``store_unavailable``, no
    connection): failing the start would exit the agent into its supervisor's restart count
    for an outage that its lease already rides out. Anything else, and an outage past
    ``START_RETRY_FOR``, still fails it. (The workspace pull needs none: a failed pull starts
    the agent on the files it has, and its first push pulls again.)"""

    def noted(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.warning("start-up %s: Mission Control unreachable (%s); trying again", what, error)

    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type((StoreUnavailable, ServerUnreachable)),
        wait=wait_exponential_jitter(initial=0.2, max=2.0),
        stop=stop_after_delay(START_RETRY_FOR),
        before_sleep=noted,
        reraise=True,
    ):
        with attempt:
            return await step()
    raise AssertionError("unreachable: tenacity returns or raises")


async def _beat(fd: int, every: float) -> None:
    """Tell the supervisor we are alive, from inside the event loop (a hung loop goes silent)."""
    while True:
        try:
            os.write(fd, b".")
        except BlockingIOError:
            pass  # the supervisor is behind on reading; it has heard from us recently
        except OSError:
            return  # the supervisor is gone; PR_SET_PDEATHSIG (or the parent watch) ends us
        await asyncio.sleep(every)


def forget_key_variable(reference: str | None) -> None:
    """Drop an ``env:`` key reference's variable from this process's environment, should it
    have inherited it: an agent whose calls go through Mission Control, and everything it
    starts (tools, MCP servers, sidecars), holds no model key."""
    if reference is None:
        return
    ref = parse_key_ref(reference)
    if ref.kind == "env":
        os.environ.pop(ref.name, None)


async def _misconfigured(client: AsyncClient, name: str, error: ConfigError) -> int:
    """Say why in the log and the agent's state, and exit 78 (the supervisor does not retry)."""
    log.error("%s is misconfigured: %s", name, error.message)
    with contextlib.suppress(McosError):
        await client.do(Calls.report_state(name, AgentStatus.MISCONFIGURED, error.message))
    return EX_CONFIG


async def run_agent(
    fleet: Fleet,
    name: str,
    token: str,
    *,
    settings: RuntimeSettings | None = None,
    fence: int | None = None,
    liveness_fd: int | None = None,
    liveness_every: float = 2.0,
    own_process: bool = False,
) -> int:
    """Run agent ``name`` until SIGTERM or SIGINT; the exit code (78: misconfigured, 75:
    fenced out by another instance, or its lease deadline passed unrenewed).

    ``liveness_fd``: the socket the supervisor gave it, to beat on and to read its lease
    deadlines from (:mod:`mcos.runtime.lease_watch`). ``own_process``: this process (and its
    process group) is the agent's alone, as the supervisor starts it: a lease deadline passing
    kills it at once; otherwise (the runtime called in-process) it stops as on SIGTERM."""
    remember(token)  # the agent's own Mission Control token: redacted wherever it surfaces
    stop = asyncio.Event()
    beating: asyncio.Task[None] | None = None
    watch: LeaseWatch | None = None
    if liveness_fd is not None:
        os.set_blocking(liveness_fd, False)
        beating = asyncio.create_task(_beat(liveness_fd, liveness_every), name="liveness")

        def lease_expired() -> None:
            log.error(
                "the lease deadline passed with no renewal confirmed by the supervisor: "
                "stopping at once (another host may run this agent now)",
                agent=name,
            )
            if own_process:
                _kill_own(signal.SIGKILL)
            stop.set()

        watch = LeaseWatch(liveness_fd, lease_expired)
        watch.start()
    try:
        code = await _run(fleet, name, token, stop, settings=settings, fence=fence)
    finally:
        if watch is not None:
            watch.close()
        if beating is not None:
            beating.cancel()
    if watch is not None and watch.expired and code == 0:
        return EX_FENCED
    return code


def _kill_own(sig: signal.Signals) -> None:
    """Signal this agent's process group, children included, when it leads it (as the
    supervisor starts it, in a session of its own); else only this process."""
    if os.getpgrp() == os.getpid():
        os.killpg(os.getpgrp(), sig)
    else:
        os.kill(os.getpid(), sig)


async def _run(
    fleet: Fleet,
    name: str,
    token: str,
    stop: asyncio.Event,
    *,
    settings: RuntimeSettings | None,
    fence: int | None,
) -> int:
    """The agent, set up in order, until ``stop`` is set."""
    config = fleet.agents[name]
    async with AsyncClient(fleet.server.endpoints, token, timeout=45, fence=fence) as client:
        try:
            key, gateway = None, None
            if config.model.through_gateway:  # Mission Control holds the key: this process has none
                gateway = GatewayAccess(client.base_url, token, fence)
                forget_key_variable(config.key)
            elif config.key is not None:
                key = resolve_key(
                    config.key, where=f"{fleet.path}: agents.{name}", base_dir=fleet.base_dir
                )
            provider = make_provider(config, key, fleet.price_table(), gateway=gateway)
        except ConfigError as e:
            return await _misconfigured(client, name, e)
        clock = MissionClock()

        async def server_time() -> datetime:
            return (await client.do(Calls.time())).now

        sample = await reaching_mission_control(lambda: clock.measure(server_time), "clock")
        log.info("clock offset to Mission Control %.3fs", sample.offset.total_seconds())
        sync = await start_sync(fleet, name, client)  # before anything reads the workspace
        try:
            runtime = AgentRuntime(name, fleet, client, provider, clock, settings=settings)
        except ConfigError as e:  # a channel's secret, say: no restart loop over it
            await provider.aclose()
            return await _misconfigured(client, name, e)
        await runtime.discipline_clock(sample.offset)
        runtime.sync = sync
        runtime.extra_info = {
            "pid": os.getpid(),
            "fence": fence,
            "restarts": int(os.environ.get("MCOS_RESTARTS", "0") or 0),
        }
        loop = asyncio.get_running_loop()
        parent = os.getppid()

        def on_signal() -> None:
            if os.getppid() != parent and os.getpgrp() == os.getpid():
                # Our supervisor died (PR_SET_PDEATHSIG, or portable's parent watch): take our
                # whole process group with us at once, children included, so nothing of this
                # agent outlives it.
                os.killpg(os.getpgrp(), signal.SIGKILL)
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        sidecars = Sidecars(name, config.sidecars, runtime.workspace.root)
        sidecars.start()
        try:
            await runtime.run(stop)
        except Fenced as e:
            log.error("fenced out, stopping: %s", e.message, agent=name)
            return EX_FENCED
        except ConfigError as e:
            return await _misconfigured(client, name, e)
        finally:
            await sidecars.stop()
            await runtime.aclose()
    return 0
