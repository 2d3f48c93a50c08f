"""A real Mission Control: uvicorn serving the app on a loopback port, on each store."""

from __future__ import annotations

import asyncio
import secrets
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from mcos.client import Client
from mcos.domain.tokens import Principal, PrincipalKind
from mcos.server import ServerSettings, create_app
from mcos.server.context import MissionControl
from mcos.server.routes.tokens import issue
from mcos.store import make_store
from tests.store.conftest import (
    DIRECTORY,
    FAST_POLICY,
    drop_pg_database,
    migrated_database,
)
from tests.waiting import wait_until


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PromptServer(uvicorn.Server):
    """uvicorn that stops as soon as a test's teardown asks, not a tenth of a second later twice.

    uvicorn looks at ``should_exit`` every 0.1 s, and its shutdown then waits 0.1 s for the
    open connections to close even when there are none: 0.1-0.2 s of every API test's teardown.
    This one looks every 0.01 s (its once-a-second chores still run once a second), and skips
    the wait when no connection is open and no request is running; otherwise it is uvicorn's own
    shutdown. Stopping is all that differs: the app, its lifespan and the requests do not.
    """

    async def main_loop(self) -> None:
        """uvicorn's loop, ticking ten times as often for ``should_exit`` only."""
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            for _ in range(10):
                await asyncio.sleep(0.01)
                if self.should_exit:
                    return
            counter = (counter + 1) % 864000
            should_exit = await self.on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's shutdown, without its wait for connections when there are none."""
        if self.server_state.connections or self.server_state.tasks:
            await super().shutdown(sockets)
            return
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        if not self.force_exit:
            await self.lifespan.shutdown()


@dataclass
class LiveServer:
    """A running server and the tokens the tests act with."""

    url: str
    state_dir: Path
    operator_token: str
    tokens: dict[str, str]
    server: uvicorn.Server | None = field(default=None, repr=False)

    def requests_in_flight(self) -> int:
        """Requests the server is handling right now (uvicorn's own count of request tasks).

        What a test waits on to know a long-poll is parked in the server, or has returned.
        """
        assert self.server is not None
        return len(self.server.server_state.tasks)

    def parked(self, inbox: str) -> bool:
        """Whether a long-poll of ``inbox`` found it empty and now waits for a wake-up.

        Known by the task that listens for its client's hang-up, started only after the empty
        claim (:func:`mcos.server.routes.inbox._claim_waiting`): a request merely in flight may
        not have claimed yet, and would find a message sent now at once.
        """
        assert self.server is not None
        requests = list(self.server.server_state.tasks)
        if not requests:
            return False

        async def names() -> set[str]:
            return {task.get_name() for task in asyncio.all_tasks()}

        loop = requests[0].get_loop()
        return f"hang-up-{inbox}" in asyncio.run_coroutine_threadsafe(names(), loop).result(10)

    def client(self, name: str | None = None, token: str | None = None) -> Client:
        """A client acting as agent ``name``, as the operator (no name), or with ``token``."""
        return Client(self.url, token or (self.tokens[name] if name else self.operator_token))


async def migrate(url: str) -> None:
    store = make_store(url)
    try:
        await store.upgrade()
    finally:
        await store.close()


async def _mint(mc: MissionControl, agents: tuple[str, ...]) -> dict[str, str]:
    """The founder's tokens for ``agents``, made as ``POST /v1/tokens`` makes them (the same
    rows and audit records), on the server's own loop: three requests were a tenth of a second
    or more of every API test's setup."""
    founder = Principal(PrincipalKind.OPERATOR, "founder").actor
    return {agent: (await issue(mc, founder, PrincipalKind.AGENT, agent)).token for agent in agents}


@contextmanager
def serve(url: str, tmp_path: Path, **overrides: Any) -> Iterator[LiveServer]:
    """Mission Control on a real uvicorn over the store at ``url`` (already migrated)."""
    own_channels = overrides.pop("own_channels", None)
    settings = ServerSettings(
        token_key=overrides.pop("token_key", None) or secrets.token_bytes(32),
        directory=DIRECTORY,
        bootstrap_operator="founder",
        state_dir=str(tmp_path / "state"),
        max_body_bytes=64 * 1024,
        poll_fallback_seconds=1.0,
        human_roles={"founder": "founder"},
        **overrides,
    )
    app = create_app(make_store(url, FAST_POLICY), settings, own_channels)
    port = free_port()
    server = PromptServer(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"

    def started() -> bool:
        if not thread.is_alive():
            pytest.fail("the server thread ended before it started")
        return server.started

    try:
        wait_until("the server to start", started, timeout=30, interval=0.02)
        operator = (tmp_path / "state" / "operator.token").read_text().strip()
        tokens = asyncio.run_coroutine_threadsafe(
            _mint(app.state.mc, ("jarvis", "gene", "sentinel")), server.servers[0].get_loop()
        ).result(30)
        yield LiveServer(base, tmp_path / "state", operator, tokens, server)
    finally:
        server.should_exit = True
        thread.join(15)


@contextmanager
def serve_on(store: str, tmp_path: Path, **overrides: Any) -> Iterator[tuple[LiveServer, str]]:
    """:func:`serve` on a fresh, migrated ``store`` ("sqlite" or "postgres", dropped after), and
    that store's URL (to write into it as another process would)."""
    url = migrated_database(store, tmp_path)
    try:
        with serve(url, tmp_path, **overrides) as server:
            yield server, url
    finally:
        if store == "postgres":
            drop_pg_database(url)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def live_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LiveServer]:
    """Mission Control on a real uvicorn, with tokens for jarvis, gene and sentinel."""
    with serve_on(request.param, tmp_path) as (server, _):
        yield server


def raw(
    server: LiveServer,
    method: str,
    path: str,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    **kw: object,
) -> httpx.Response:
    """A plain HTTP request, for what the typed client would refuse to send."""
    sent = dict(headers or {})
    if token:
        sent["Authorization"] = f"Bearer {token}"
    return httpx.request(method, server.url + path, headers=sent, timeout=10, **kw)  # type: ignore[arg-type]
