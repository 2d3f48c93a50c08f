"""MCP tools for agents: a real stdio server from PyPI, a real HTTP server, and a real agent."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from mcos.client import Calls
from mcos.config.models import Fleet
from mcos.models.base import ToolCall
from mcos.models.factory import make_provider
from mcos.runtime.mcp import START_TIMEOUT, McpTools, allows, exposed_name, servers_named
from mcos.runtime.workspace import TurnKind
from tests.api.conftest import free_port
from tests.fakes.anthropic_server import FakeAnthropic, Text, ToolUse
from tests.runtime.conftest import RigFactory, write_fleet
from tests.waiting import wait_until

TIME = [sys.executable, "-m", "mcp_server_time", "--local-timezone", "UTC"]
"""The reference time server from PyPI (``mcp-server-time``), over stdio."""
REPO = Path(__file__).resolve().parents[2]
KEY = "sk-ant-test-gene"
MODEL = "claude-sonnet-4-6"


def server_toml(
    name: str, *, command: list[str] | None = None, url: str | None = None, timeout: str = "20s"
) -> str:
    """A ``[mcp.NAME]`` table (JSON strings and arrays are valid TOML)."""
    transport = f"command = {json.dumps(command)}" if command else f"url = {json.dumps(url)}"
    return f'\n[mcp.{name}]\n{transport}\ntimeout = "{timeout}"\n'


def mcp_fleet(root: Path, allowed: list[str], *servers: str, extra: str = "") -> Fleet:
    """The small fleet, gene allowed ``allowed``, with the given ``[mcp.*]`` tables."""
    return write_fleet(
        root, {"gene": f"allowed_tools = {json.dumps(allowed)}\n{extra}"}, "".join(servers)
    )


def _children() -> dict[int, str]:
    found = {}
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                found[p.pid] = " ".join(p.cmdline())
        except psutil.NoSuchProcess:
            continue
    return found


@pytest.fixture(autouse=True)
def no_stray_processes() -> Iterator[None]:
    """Every process a test starts (servers over stdio, the HTTP server) is gone after it."""
    before = set(_children())
    yield

    def stray() -> dict[int, str]:
        return {p: c for p, c in _children().items() if p not in before}

    wait_until("no stray process", lambda: not stray(), timeout=10)


@contextmanager
def mcp_server(tmp_path: Path, *args: str) -> Iterator[str]:
    """The fake MCP server (``tests/fakes/mcp_http_server.py``, with ``args`` after its port)
    over streamable HTTP; its URL once it listens."""
    port = free_port()
    with (tmp_path / "calc.log").open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.fakes.mcp_http_server", str(port), *args],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:

        def listening() -> bool:
            assert process.poll() is None, (tmp_path / "calc.log").read_text()
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        wait_until("the MCP HTTP server to listen", listening)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def calc_url(tmp_path: Path) -> Iterator[str]:
    """A real MCP server over streamable HTTP (``tests/fakes/mcp_http_server.py``)."""
    with mcp_server(tmp_path) as url:
        yield url


@pytest.fixture
async def closing() -> AsyncIterator[list[McpTools]]:
    """McpTools opened by a test, closed after it whatever happened."""
    opened: list[McpTools] = []
    yield opened
    for tools in opened:
        await tools.aclose()


async def open_tools(
    fleet: Fleet, closing: list[McpTools], start_timeout: float = START_TIMEOUT
) -> McpTools:
    """Gene's MCP tools, closed at the end of the test."""
    tools = await McpTools.open(fleet, "gene", start_timeout=start_timeout)
    closing.append(tools)
    return tools


class TestNaming:
    """Names the model sees, and what an allowlist lets through (pure rules)."""

    def test_names_are_sanitised_and_bounded(self) -> None:
        """Characters the model APIs refuse become ``_``; long names are cut with a hash."""
        assert exposed_name("time", "get_current_time") == "time__get_current_time"
        assert exposed_name("git", "repo.log/v2") == "git__repo_log_v2"
        long_a, long_b = exposed_name("s", "x" * 80 + "a"), exposed_name("s", "x" * 80 + "b")
        assert len(long_a) == 64
        assert long_a != long_b

    def test_the_allowlist_names_one_tool_or_all_of_a_server(self) -> None:
        """``SERVER__TOOL`` allows that tool only; ``SERVER__*`` every tool of the server."""
        assert allows(["time__get_current_time"], "time", "get_current_time")
        assert not allows(["time__get_current_time"], "time", "convert_time")
        assert allows(["time__*"], "time", "convert_time")
        assert not allows(["time__*"], "clock", "convert_time")
        assert servers_named(["reply", "time__a", "calc__*", "time__b"]) == ["time", "calc"]


class TestStdio:
    """The real ``mcp-server-time`` started over stdio."""

    async def test_allowed_tool_is_offered_and_answers_fenced(
        self, tmp_path: Path, closing: list[McpTools]
    ) -> None:
        """Only the allowed tool is listed, with its schema; its answer is real and fenced."""
        fleet = mcp_fleet(tmp_path, ["time__get_current_time"], server_toml("time", command=TIME))
        tools = await open_tools(fleet, closing)
        assert tools.failures == {}
        [spec] = tools.specs()
        assert spec.name == "time__get_current_time"
        assert spec.input_schema["type"] == "object"
        assert "timezone" in spec.input_schema["properties"]
        assert spec.description
        result = await tools.call(ToolCall("c1", spec.name, {"timezone": "Europe/Paris"}))
        assert not result.is_error
        assert result.content.startswith("<<<UNTRUSTED content from MCP server time")
        assert result.content.endswith(">>>END UNTRUSTED")
        assert '"timezone": "Europe/Paris"' in result.content
        assert f'"datetime": "{time.gmtime().tm_year}-' in result.content

    async def test_server_star_offers_every_tool_and_errors_come_back(
        self, tmp_path: Path, closing: list[McpTools]
    ) -> None:
        """``time__*`` offers both tools; a bad argument is an error result, not an exception."""
        fleet = mcp_fleet(tmp_path, ["time__*"], server_toml("time", command=TIME))
        tools = await open_tools(fleet, closing)
        assert sorted(s.name for s in tools.specs()) == [
            "time__convert_time",
            "time__get_current_time",
        ]
        bad = await tools.call(ToolCall("c1", "time__get_current_time", {"timezone": "Mars/Base"}))
        assert bad.is_error
        assert "Mars/Base" in bad.content
        assert "UNTRUSTED content from MCP server time" in bad.content

    async def test_a_server_that_dies_makes_its_calls_fail_readably(
        self, tmp_path: Path, closing: list[McpTools]
    ) -> None:
        """A server killed under the agent: its calls are error results, nothing is raised."""
        fleet = mcp_fleet(tmp_path, ["time__*"], server_toml("time", command=TIME))
        tools = await open_tools(fleet, closing)
        [pid] = [p for p, c in _children().items() if "mcp_server_time" in c]
        psutil.Process(pid).kill()
        result = await tools.call(ToolCall("c1", "time__get_current_time", {"timezone": "UTC"}))
        assert result.is_error
        assert "MCP server time is gone" in result.content

    async def test_server_stderr_goes_to_a_file_in_the_workspace(
        self, tmp_path: Path, closing: list[McpTools]
    ) -> None:
        """The server's stderr is kept in ``.mcos/mcp-SERVER.log``, not on the terminal."""
        fleet = mcp_fleet(tmp_path, ["time__*"], server_toml("time", command=TIME))
        tools = await open_tools(fleet, closing)
        await tools.call(ToolCall("c1", "time__get_current_time", {"timezone": "Mars/Base"}))
        await tools.aclose()
        log = fleet.workspace_path("gene") / ".mcos" / "mcp-time.log"
        assert log.exists()


class TestHttp:
    """A real MCP server over streamable HTTP, in its own process."""

    async def test_tools_answer_and_failures_are_error_results(
        self, tmp_path: Path, calc_url: str, closing: list[McpTools]
    ) -> None:
        """A result, a tool that raises, a call past the timeout — the session survives all."""
        fleet = mcp_fleet(tmp_path, ["calc__*"], server_toml("calc", url=calc_url, timeout="1s"))
        tools = await open_tools(fleet, closing)
        assert tools.failures == {}
        assert {s.name for s in tools.specs()} == {
            "calc__add",
            "calc__explode",
            "calc__slow",
            "calc__picture",
        }
        added = await tools.call(ToolCall("c1", "calc__add", {"a": 2, "b": 3}))
        assert not added.is_error
        assert "\n5\n" in added.content
        exploded = await tools.call(ToolCall("c2", "calc__explode", {"reason": "boom"}))
        assert exploded.is_error
        assert "exploded: boom" in exploded.content
        assert "UNTRUSTED content from MCP server calc" in exploded.content
        started = time.monotonic()
        slow = await tools.call(ToolCall("c3", "calc__slow", {"seconds": 30}))
        assert time.monotonic() - started < 5
        assert slow.is_error
        assert slow.content == "error: slow of MCP server calc timed out after 1s"
        picture = await tools.call(ToolCall("c4", "calc__picture", {}))
        assert "[image image/png, " in picture.content
        assert "not shown]" in picture.content
        again = await tools.call(ToolCall("c5", "calc__add", {"a": 40, "b": 2}))
        assert "\n42\n" in again.content

    async def test_unlisted_tools_are_neither_offered_nor_callable(
        self, tmp_path: Path, calc_url: str, closing: list[McpTools]
    ) -> None:
        """With ``calc__add`` allowed, ``calc__explode`` is not offered and not run."""
        fleet = mcp_fleet(tmp_path, ["calc__add"], server_toml("calc", url=calc_url))
        tools = await open_tools(fleet, closing)
        assert [s.name for s in tools.specs()] == ["calc__add"]
        assert not tools.offers("calc__explode")
        refused = await tools.call(ToolCall("c1", "calc__explode", {"reason": "x"}))
        assert refused.is_error
        assert "exploded" not in refused.content


class TestServersThatFail:
    """A server that cannot start is named in a clear error; the others still work."""

    async def test_missing_and_dying_servers_leave_the_others_working(
        self, tmp_path: Path, closing: list[McpTools]
    ) -> None:
        """A missing program and one that exits at once are reported; time still answers."""
        dying = [sys.executable, "-c", "import sys; sys.stderr.write('no licence\\n'); sys.exit(3)"]
        fleet = mcp_fleet(
            tmp_path,
            ["time__get_current_time", "ghost__*", "dying__*", "gone__*"],
            server_toml("time", command=TIME),
            server_toml("ghost", command=["/nonexistent/mcp-ghost", "--serve"]),
            server_toml("dying", command=dying),
            server_toml("gone", url=f"http://127.0.0.1:{free_port()}/mcp"),
        )
        tools = await open_tools(fleet, closing)
        assert sorted(tools.failures) == ["dying", "ghost", "gone"]
        ghost = tools.failures["ghost"]
        assert "MCP server 'ghost'" in ghost
        assert "/nonexistent/mcp-ghost --serve" in ghost
        assert "not found" in ghost
        assert "MCP server 'dying'" in tools.failures["dying"]
        assert "it said: no licence" in tools.failures["dying"]  # its last line of stderr
        assert "mcp-dying.log" in tools.failures["dying"]
        assert "MCP server 'gone'" in tools.failures["gone"]
        assert "url http://127.0.0.1:" in tools.failures["gone"]
        assert [s.name for s in tools.specs()] == ["time__get_current_time"]
        result = await tools.call(ToolCall("c1", "time__get_current_time", {"timezone": "UTC"}))
        assert not result.is_error

    async def test_a_server_that_never_answers_is_given_up_and_stopped(
        self, tmp_path: Path, closing: list[McpTools]
    ) -> None:
        """A server silent past the start timeout is reported and its process is stopped."""
        mute = [sys.executable, "-c", "import time; time.sleep(120)"]
        fleet = mcp_fleet(tmp_path, ["mute__*"], server_toml("mute", command=mute))
        started = time.monotonic()
        tools = await open_tools(fleet, closing, start_timeout=1.0)
        assert time.monotonic() - started < 10
        assert "no answer within 1s" in tools.failures["mute"]
        assert tools.specs() == ()

    async def test_a_missing_secret_in_the_env_is_named_not_echoed(
        self, tmp_path: Path, closing: list[McpTools], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An env key reference that resolves to nothing leaves the server out, saying which."""
        monkeypatch.delenv("MCOS_TEST_NO_SUCH_KEY", raising=False)
        table = (
            server_toml("time", command=TIME) + 'env = { TOKEN = "env:MCOS_TEST_NO_SUCH_KEY" }\n'
        )
        fleet = mcp_fleet(tmp_path, ["time__*"], table)
        tools = await open_tools(fleet, closing)
        assert "MCOS_TEST_NO_SUCH_KEY is not set" in tools.failures["time"]


class TestAgent:
    """MCP tools in a real agent, through the real Anthropic SDK and the fake API."""

    @pytest.fixture
    def fake(self) -> Iterator[FakeAnthropic]:
        with FakeAnthropic(api_key=KEY) as server:
            yield server

    async def test_a_model_calls_the_time_server_and_reads_its_answer(
        self, rig_factory: RigFactory, fake: FakeAnthropic
    ) -> None:
        """The result reaches the next request fenced; the server process ends with the agent."""
        model = (
            f'model = {{ provider = "anthropic", id = "{MODEL}", base_url = "{fake.url}", '
            'route = "direct" }'
        )
        rig = rig_factory(
            {
                "gene": f'{model}\nkey = "env:GENE_ANTHROPIC_KEY"\n'
                'allowed_tools = ["memory_write", "time__get_current_time"]'
            },
            tail=server_toml("time", command=TIME),
        )
        provider = make_provider(rig.fleet.agents["gene"], KEY, rig.fleet.price_table())
        gene = rig.runtime("gene", provider)
        await gene.start()
        servers = [p for p, c in _children().items() if "mcp_server_time" in c]
        assert len(servers) == 1
        fake.script(
            ToolUse("time__get_current_time", {"timezone": "Europe/Paris"}),
            ToolUse(
                "time__convert_time",
                {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"},
            ),
            Text("It is afternoon in Paris."),
        )
        await gene.turn(TurnKind.MAIN, "What time is it in Paris?")
        assert len(fake.requests) == 3
        offered = [t["name"] for t in fake.requests[0].body["tools"]]
        assert offered == ["memory_write", "write_workstate", "time__get_current_time"]
        [answer, _now] = fake.requests[1].body["messages"][-1]["content"]
        assert answer["type"] == "tool_result"
        assert answer.get("is_error") is not True
        assert "UNTRUSTED content from MCP server time" in answer["content"]
        assert '"timezone": "Europe/Paris"' in answer["content"]
        [refused, _now] = fake.requests[2].body["messages"][-1]["content"]
        assert refused["is_error"] is True
        assert "not allowed for gene" in refused["content"]
        audit = await rig.client().do(Calls.audit(action="runtime.tool.refused"))
        assert [a.targets for a in audit] == [{"tool": "time__convert_time"}]
        await gene.aclose()
        assert not psutil.pid_exists(servers[0]) or (
            psutil.Process(servers[0]).status() == psutil.STATUS_ZOMBIE
        )

    async def test_an_agent_starts_without_a_broken_server_and_says_why(
        self, rig_factory: RigFactory
    ) -> None:
        """A server that cannot start is logged and shown in the agent's state detail."""
        rig = rig_factory(
            {"gene": 'allowed_tools = ["memory_write", "ghost__*"]'},
            tail=server_toml("ghost", command=["/nonexistent/mcp-ghost"]),
        )
        gene = rig.runtime("gene")
        await gene.start()
        assert gene.tools.specs()[-1].name == "memory_write"
        shown = await rig.client().do(Calls.agent("gene"))
        assert "MCP server 'ghost'" in (shown.state_detail or "")
        assert "/nonexistent/mcp-ghost" in (shown.state_detail or "")
