"""An agent as an OS process: resolve its key, measure the clock, run the loop, stop on signals."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from datetime import datetime

from mcos.client import AsyncClient, Calls
from mcos.config.models import Fleet
from mcos.config.secrets import resolve_key
from mcos.domain.agent_state import AgentStatus
from mcos.exceptions import EX_CONFIG, ConfigError, McosError
from mcos.models.factory import make_provider
from mcos.runtime.agent import AgentRuntime, RuntimeSettings
from mcos.runtime.clock import MissionClock

log = logging.getLogger("mcos.runtime")


async def run_agent(
    fleet: Fleet, name: str, token: str, *, settings: RuntimeSettings | None = None
) -> int:
    """Run agent ``name`` until SIGTERM or SIGINT; the exit code (78: misconfigured)."""
    config = fleet.agents[name]
    async with AsyncClient(fleet.server.url, token, timeout=45) as client:
        try:
            key = None
            if config.key is not None:
                key = resolve_key(
                    config.key, where=f"{fleet.path}: agents.{name}", base_dir=fleet.base_dir
                )
            provider = make_provider(config, key, fleet.price_table())
        except ConfigError as e:
            log.error("%s is misconfigured: %s", name, e.message)
            with contextlib.suppress(McosError):
                await client.do(Calls.report_state(name, AgentStatus.MISCONFIGURED, e.message))
            return EX_CONFIG
        clock = MissionClock()

        async def server_time() -> datetime:
            return (await client.do(Calls.time())).now

        sample = await clock.measure(server_time)
        log.info("%s: clock offset to Mission Control %.3fs", name, sample.offset.total_seconds())
        runtime = AgentRuntime(name, fleet, client, provider, clock, settings=settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await runtime.run(stop)
        except ConfigError as e:
            log.error("%s is misconfigured: %s", name, e.message)
            with contextlib.suppress(McosError):
                await client.do(Calls.report_state(name, AgentStatus.MISCONFIGURED, e.message))
            return EX_CONFIG
        finally:
            await runtime.aclose()
    return 0
