"""``[server] urls``: the client moves to the next Mission Control when one does not answer.

Without namespaces: a URL nobody listens on (the connection is refused), a listener that
accepts and hangs up (the answer is lost after the request left), and a real server.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mcos.client import AsyncClient, Calls, Client, ServerUnreachable
from mcos.config import load_fleet
from mcos.exceptions import ConfigErrors
from tests.api.conftest import LiveServer, free_port, serve_on


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    with serve_on("sqlite", tmp_path) as (server, _):
        yield server


@pytest.fixture
def hangs_up() -> Iterator[str]:
    """A URL whose listener reads each request, then closes without answering."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                with contextlib.suppress(OSError):
                    conn.recv(65536)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


def test_refused_url_moves_to_the_next_and_stays_there(live: LiveServer) -> None:
    dead = dead_url()
    with Client([dead, live.url], live.operator_token) as client:
        assert client.base_url == dead
        # A write whose connection was refused never left: it is safe to send it again there.
        sent = client.do(Calls.send("gene", "hello"))
        assert client.base_url == live.url
        assert client.do(Calls.message(sent.message.id)).body == "hello"
        assert client.base_url == live.url  # sticky: no detour through the dead URL


def test_every_url_down_names_them_all() -> None:
    first, second = dead_url(), dead_url()
    with Client([first, second], "t") as client, pytest.raises(ServerUnreachable) as err:
        client.do(Calls.health())
    assert first in err.value.message
    assert second in err.value.message


def test_lost_answer_to_a_write_is_not_repeated(live: LiveServer, hangs_up: str) -> None:
    """The request reached a server that then vanished: repeating it elsewhere could do it
    twice, so the caller is told; the next call goes to the other replica."""
    with Client([hangs_up, live.url], live.operator_token) as client:
        with pytest.raises(ServerUnreachable):
            client.do(Calls.send("gene", "once"))
        assert client.base_url == live.url
        client.do(Calls.send("gene", "once"))  # the caller's own retry, now on the live one
    with live.client("gene") as gene:
        bodies = [d.message.body for d in gene.do(Calls.inbox(limit=100)).deliveries]
    assert bodies == ["once"]  # the hung-up replica stored nothing; nothing was sent twice


def test_lost_answer_to_a_read_is_asked_again(live: LiveServer, hangs_up: str) -> None:
    with Client([hangs_up, live.url], live.operator_token) as client:
        assert client.do(Calls.health()).status
        assert client.base_url == live.url


def test_async_client_fails_over(live: LiveServer, hangs_up: str) -> None:
    async def scenario() -> None:
        async with AsyncClient([dead_url(), hangs_up, live.url], live.tokens["gene"]) as c:
            inbox = await c.do(Calls.inbox(wait=0))
            assert inbox.deliveries == []
            assert c.base_url == live.url

    asyncio.run(scenario())


def test_one_url_is_still_a_string(live: LiveServer) -> None:
    with Client(live.url + "/", live.operator_token) as client:
        assert client.base_url == live.url
        assert client.endpoints.urls == (live.url,)


FLEET = """
[server]
{server}
[hosts.mini]
[humans.founder]
role = "founder"
[agents.jarvis]
role = "orchestrator"
host = "mini"
reports_to = "founder"
"""


def test_fleet_urls(tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(FLEET.format(server='url = "http://10.0.0.1:8700"'))
    assert load_fleet(path).server.endpoints == ["http://10.0.0.1:8700"]
    path.write_text(FLEET.format(server='urls = ["http://a:8700", "https://b:8700"]'))
    assert load_fleet(path).server.endpoints == ["http://a:8700", "https://b:8700"]


@pytest.mark.parametrize(
    ("urls", "problem"),
    [
        ('["a:8700"]', "urls[0] = 'a:8700' is not an http:// or https:// URL"),
        ('["http://a", "http://a"]', "urls lists the same URL twice"),
    ],
)
def test_bad_fleet_urls_are_named(tmp_path: Path, urls: str, problem: str) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(FLEET.format(server=f"urls = {urls}"))
    with pytest.raises(ConfigErrors) as err:
        load_fleet(path)
    found = [e.message for e in err.value.errors]
    assert any("server.urls" in m and problem in m for m in found), found
