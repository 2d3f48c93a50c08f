"""Tools of MCP servers for one agent: connected at start, offered as ``SERVER__TOOL``, fenced.

Only the servers the agent's allowlist names are started (stdio) or reached (streamable
HTTP), and only the tools it allows are offered. Each server gets one connection task that
owns its transport and session from start to :meth:`McpTools.aclose` — the SDK's task groups
must be entered and left in one task, and the agent's loop is not that task; calls reach the
session through its streams from any task.

A server that cannot be started, reached or initialised is left out and its reason logged
(and kept in :attr:`McpTools.failures`): the agent runs on without that server's tools. What a
server returns is outside content, fenced with :func:`~mcos.runtime.tools.untrusted`; so is
each tool's description (a server writes it: tool poisoning). A tool not annotated
``readOnlyHint: true`` counts as writing: each call passes the runtime's one gate
(:attr:`McpTools.gate`, the action ``mcp_call``), so from a turn holding untrusted content it
runs only with an approved request for exactly that call. Failures, timeouts and a dropped
connection come back to the model as error results, never raised into the runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import shlex
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import mcp_types
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from mcos.api_models import RuntimeEvent
from mcos.config.models import Fleet, McpServerConfig, parse_duration, parse_key_ref
from mcos.config.secrets import resolve_key
from mcos.domain.redaction import redact
from mcos.exceptions import McosError, McpUnavailable
from mcos.logs import get_logger
from mcos.models.base import INVALID_ARGUMENTS, ToolCall, ToolResult, ToolSpec
from mcos.runtime.browser import BLANK, BrowserGuard, locate
from mcos.runtime.tools import MAX_RESULT_CHARS, untrusted

log = get_logger("mcos.runtime")

SEPARATOR = "__"
"""Between the server's name and the tool's in the name the model sees (``time__now``)."""
MAX_NAME = 64
"""The longest tool name the model APIs accept (``^[a-zA-Z0-9_-]{1,64}$``)."""
START_TIMEOUT = 30.0
"""Seconds a server has to start, initialise and list its tools."""
CLOSE_TIMEOUT = 10.0
"""Seconds a connection has to close (stdio: stdin closed, SIGTERM, SIGKILL — bounded by
the SDK) before its task is cancelled."""
_MAX_PAGES = 20
_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")
_ROOM = MAX_RESULT_CHARS - 400
"""Characters of a result kept inside the untrusted fence (the fence itself takes the rest)."""
APPROVAL_ARG = "mcos_approval_id"
"""The argument mcos adds to a writing tool's schema (and takes out before the call): the
approved ``mcp_call`` request a turn holding untrusted content must name."""
MAX_DESCRIPTION = 2_000
"""Characters of a server's tool description kept inside its fence."""

Gate = Callable[[str, dict[str, Any], int | None], Awaitable[None]]
"""The runtime's gate for one writing call (exposed name, payload, approval id): returns to go
on, raises ``Forbidden`` with the refusal the model reads."""
Audit = Callable[[RuntimeEvent], Awaitable[None]]
"""Records one event in Mission Control's audit log (never raises)."""


def writes(tool: mcp_types.Tool) -> bool:
    """Whether a tool may change something: all but those annotated ``readOnlyHint: true``
    (an annotation is the server's claim, so only the safe reading is taken on its word)."""
    return tool.annotations is None or tool.annotations.read_only_hint is not True


def mcp_payload(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """What an approved ``mcp_call`` request must name: the tool and exactly its arguments."""
    return {"tool": name, "arguments": arguments}


def exposed_name(server: str, tool: str) -> str:
    """``SERVER__TOOL`` as the model sees it: only ``[a-zA-Z0-9_-]``, at most 64 characters
    (a name cut short ends in a hash of the whole, so two long names stay apart)."""
    name = _UNSAFE.sub("_", f"{server}{SEPARATOR}{tool}")
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(f"{server}{SEPARATOR}{tool}".encode()).hexdigest()[:8]
    return f"{name[: MAX_NAME - 9]}_{digest}"


def allows(allowed: Iterable[str], server: str, tool: str) -> bool:
    """Whether an allowlist lets an agent use ``tool`` of ``server``: ``SERVER__*``, or
    ``SERVER__TOOL`` by the tool's own name or the name the model sees."""
    names = {f"{server}{SEPARATOR}*", f"{server}{SEPARATOR}{tool}", exposed_name(server, tool)}
    return any(entry in names for entry in allowed)


def servers_named(allowed: Iterable[str]) -> list[str]:
    """The MCP servers an allowlist names, in order, each once."""
    servers = [entry.partition(SEPARATOR)[0] for entry in allowed if SEPARATOR in entry]
    return list(dict.fromkeys(servers))


def _block_text(block: mcp_types.ContentBlock) -> str:
    """One content block as text; what is not text is summarised, never inlined."""
    if isinstance(block, mcp_types.TextContent):
        return block.text
    if isinstance(block, mcp_types.ImageContent | mcp_types.AudioContent):
        kind = "image" if isinstance(block, mcp_types.ImageContent) else "audio"
        return f"[{kind} {block.mime_type}, {len(block.data) * 3 // 4} bytes, not shown]"
    if isinstance(block, mcp_types.ResourceLink):
        return f"[resource link {block.name}: {block.uri}]"
    resource = block.resource
    if isinstance(resource, mcp_types.TextResourceContents):
        return f"[resource {resource.uri}]\n{resource.text}"
    size = len(resource.blob) * 3 // 4
    return f"[resource {resource.uri}, {resource.mime_type or 'binary'}, {size} bytes, not shown]"


def result_text(result: mcp_types.CallToolResult) -> str:
    """A tool result's content as text (structured content when there are no blocks)."""
    if result.content:
        return "\n".join(_block_text(b) for b in result.content)
    if result.structured_content is not None:
        return json.dumps(result.structured_content, ensure_ascii=False, sort_keys=True)
    return "(no content)"


def _reason(error: BaseException) -> str:
    """What went wrong, from the innermost error of an exception group."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    if isinstance(error, MCPError):
        return error.message
    if isinstance(error, McosError):
        return error.message
    if isinstance(error, FileNotFoundError):
        return f"program not found ({error.filename or error})"
    text = str(error)
    return f"{error.__class__.__name__}: {text}" if text else error.__class__.__name__


@dataclass(frozen=True)
class McpTool:
    """An MCP tool offered to the model."""

    name: str
    """The name the model sees (``SERVER__TOOL``, sanitised)."""
    server: str
    tool: str
    """The tool's name on its server."""
    spec: ToolSpec
    writes: bool = True
    """Not annotated read-only: every call passes the gate."""


@dataclass
class _Connection:
    """One server's connection, owned by its task from start to close."""

    name: str
    config: McpServerConfig
    stderr_path: Path | None
    timeout: float
    stderr_from: int = 0
    """Where this run's stderr starts in the (appended) file."""
    extra_args: list[str] = field(default_factory=list)
    """stdio: what the runtime appends to the command for this agent (a browser's domains)."""
    cwd: Path | None = None
    """stdio: the working directory, when not the fleet file's folder (a browser's own folder:
    the files it writes by name land there, never beside the fleet file)."""
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    session: ClientSession | None = None
    task: asyncio.Task[None] | None = None

    @property
    def where(self) -> str:
        """The command or URL, for errors an operator reads."""
        if self.config.command is not None:
            return f"command {shlex.join(self.config.command)}"
        return f"url {self.config.url}"

    async def serve(self, fleet: Fleet, ready: asyncio.Future[list[mcp_types.Tool]]) -> None:
        """Connect, initialise, list the tools, then hold the session until closing."""
        try:
            async with AsyncExitStack() as stack:
                session = await self._connect(stack, fleet)
                await session.initialize()
                listed = await _list_tools(session)
                self.session = session
                ready.set_result(listed)
                await self.closing.wait()
        except Exception as e:  # a server's failure is reported, never raised
            why = _reason(e)
            if said := _last_line(self.stderr_path, self.stderr_from):
                why = f"{why}; it said: {said}"
            if not ready.done():
                ready.set_exception(McpUnavailable(self.name, self.where, why, self.stderr_path))
            else:
                log.warning("MCP server %s (%s) disconnected: %s", self.name, self.where, why)
        finally:
            self.session = None

    async def _connect(self, stack: AsyncExitStack, fleet: Fleet) -> ClientSession:
        config = self.config
        if config.command is not None:
            env = {
                key: _env_value(value, f"{fleet.path}: mcp.{self.name}.env.{key}", fleet)
                for key, value in config.env.items()
            }
            assert self.stderr_path is not None
            self.stderr_path.parent.mkdir(parents=True, exist_ok=True)
            errlog = stack.enter_context(self.stderr_path.open("a", encoding="utf-8"))
            self.stderr_from = self.stderr_path.stat().st_size
            program = config.command[0]
            if self.cwd is not None:  # a browser: its own folder, its program found as before
                self.cwd.mkdir(parents=True, exist_ok=True)
                program = locate(program, fleet.base_dir)
            params = StdioServerParameters(
                command=program,
                args=[*config.command[1:], *self.extra_args],
                env=env,
                cwd=self.cwd or fleet.base_dir,
            )
            read, write = await stack.enter_async_context(stdio_client(params, errlog=errlog))
        else:
            assert config.url is not None
            read, write = await stack.enter_async_context(streamable_http_client(config.url))
        return await stack.enter_async_context(ClientSession(read, write))


def _env_value(value: str, where: str, fleet: Fleet) -> str:
    """A literal value, or the secret a key reference (``env:``, ``file:``, ``credential:``)
    points at."""
    try:
        parse_key_ref(value)
    except ValueError:
        return value
    return resolve_key(value, where=where, env=os.environ, base_dir=fleet.base_dir)


def _last_line(path: Path | None, start: int) -> str:
    """The last line a stdio server wrote to stderr in this run (often why it stopped),
    redacted."""
    if path is None:
        return ""
    try:
        with path.open("rb") as f:
            f.seek(max(f.seek(0, os.SEEK_END) - 4096, start))
            lines = f.read().decode("utf-8", "replace").strip().splitlines()
    except OSError:
        return ""
    return redact(lines[-1].strip())[:300] if lines else ""


async def _list_tools(session: ClientSession) -> list[mcp_types.Tool]:
    tools: list[mcp_types.Tool] = []
    cursor: str | None = None
    for _ in range(_MAX_PAGES):
        params = mcp_types.PaginatedRequestParams(cursor=cursor) if cursor else None
        page = await session.list_tools(params=params)
        tools += page.tools
        cursor = page.next_cursor
        if not cursor:
            break
    return tools


class McpTools:
    """The MCP tools one agent may use, over the connections that serve them."""

    def __init__(self, agent: str, allowed: Sequence[str]) -> None:
        self.agent = agent
        self.allowed = tuple(allowed)
        self.tools: dict[str, McpTool] = {}
        """By the name the model sees."""
        self.failures: dict[str, str] = {}
        """Servers left out, with the reason (naming the command or URL)."""
        self.gate: Gate | None = None
        """What every call of a writing tool passes first (set by the agent's ``Toolbox``)."""
        self.audit: Audit | None = None
        """Where browser fetches and refusals are recorded (set by the agent's ``Toolbox``)."""
        self.guards: dict[str, BrowserGuard] = {}
        """Browser servers (``kind = "browser"``) by name: the agent's allowlist on each."""
        self._connections: dict[str, _Connection] = {}

    @staticmethod
    def wanted(allowed: Iterable[str]) -> bool:
        """Whether an allowlist names any MCP tool."""
        return bool(servers_named(allowed))

    @classmethod
    async def open(
        cls,
        fleet: Fleet,
        agent: str,
        *,
        log_dir: Path | None = None,
        start_timeout: float = START_TIMEOUT,
    ) -> McpTools:
        """Connect to every server agent ``agent``'s allowlist names, concurrently.

        stdio servers run with the fleet file's folder as working directory, their stderr
        appended to ``log_dir/mcp-SERVER.log`` (default: the agent's ``.mcos`` folder). A
        server that fails is logged and left out (see :attr:`failures`); this never raises
        for a server's sake.
        """
        allowed = fleet.agents[agent].allowed_tools
        tools = cls(agent, allowed)
        logs = log_dir if log_dir is not None else fleet.workspace_path(agent) / ".mcos"
        readies: dict[str, asyncio.Future[list[mcp_types.Tool]]] = {}
        for server in servers_named(allowed):
            config = fleet.mcp.get(server)
            if config is None:
                tools.failures[server] = f"no MCP server {server!r} in {fleet.path}"
                continue
            conn = _Connection(
                server,
                config,
                logs / f"mcp-{server}.log" if config.command is not None else None,
                parse_duration(config.timeout).total_seconds(),
            )
            if config.kind == "browser":
                browsing = fleet.agents[agent].browser
                guard = BrowserGuard(server, tuple(browsing.allowed_domains if browsing else ()))
                tools.guards[server] = guard
                conn.cwd = logs / f"browser-{server}"
                conn.extra_args = guard.args(conn.cwd)
            ready = asyncio.get_running_loop().create_future()
            conn.task = asyncio.create_task(conn.serve(fleet, ready), name=f"mcp-{agent}-{server}")
            tools._connections[server] = conn
            readies[server] = ready
        try:
            if readies:
                await asyncio.wait(readies.values(), timeout=start_timeout)
        except BaseException:  # cancelled while starting: no server may outlive the agent
            await tools.aclose()
            raise
        for server, ready in readies.items():
            conn = tools._connections[server]
            if not ready.done():
                ready.cancel()
                error = McpUnavailable(
                    server,
                    conn.where,
                    f"no answer within {start_timeout:g}s",
                    conn.stderr_path,
                )
                await tools._stop(conn, at_once=True)
            elif (failed := ready.exception()) is not None:
                error = (
                    failed
                    if isinstance(failed, McpUnavailable)
                    else McpUnavailable(server, conn.where, _reason(failed), conn.stderr_path)
                )
            else:
                tools._add(server, ready.result())
                continue
            del tools._connections[server]
            tools.failures[server] = error.message
            log.warning("%s; running without its tools", error.message, agent=agent)
        return tools

    def _add(self, server: str, listed: list[mcp_types.Tool]) -> None:
        listed_names = set()
        for tool in listed:
            listed_names.add(tool.name)
            if not allows(self.allowed, server, tool.name):
                continue
            name = exposed_name(server, tool.name)
            if name in self.tools:  # two tool names that sanitise alike: keep both apart
                digest = hashlib.sha256(f"{server}{SEPARATOR}{tool.name}".encode()).hexdigest()
                name = f"{name[: MAX_NAME - 9]}_{digest[:8]}"
            schema = dict(tool.input_schema)
            schema.setdefault("type", "object")
            written = tool.description or tool.title
            # The server wrote the description: the model reads it as data (tool poisoning).
            description = (
                untrusted(f"MCP server {server}", written[:MAX_DESCRIPTION])
                if written
                else f"{tool.name} of MCP server {server}"
            )
            guard = self.guards.get(server)
            writing = writes(tool) and not (guard is not None and guard.reads(tool.name))
            if writing:
                properties = dict(schema.get("properties") or {})
                properties.setdefault(
                    APPROVAL_ARG,
                    {
                        "type": "integer",
                        "description": "Only from a turn holding untrusted content: the "
                        "approved mcp_call request covering exactly this call.",
                    },
                )
                schema["properties"] = properties
            self.tools[name] = McpTool(
                name, server, tool.name, ToolSpec(name, description, schema), writing
            )
        for entry in self.allowed:
            named, sep, wanted = entry.partition(SEPARATOR)
            if (
                named == server
                and sep
                and wanted != "*"
                and not any(allows((entry,), server, n) for n in listed_names)
            ):
                log.warning("MCP server %s has no tool %r", server, wanted, agent=self.agent)

    def specs(self) -> tuple[ToolSpec, ...]:
        """The definitions offered to the model (allowed tools of connected servers)."""
        return tuple(t.spec for t in self.tools.values())

    def offers(self, name: str) -> bool:
        """Whether ``name`` is an MCP tool this agent's allowlist lets it call."""
        tool = self.tools.get(name)
        return tool is not None and allows(self.allowed, tool.server, tool.tool)

    async def call(self, call: ToolCall) -> ToolResult:  # noqa: PLR0911 (one answer per outcome)
        """Run one call on its server within the server's timeout; every problem (unknown
        tool, error result, exception, timeout, lost connection) is an error result."""
        tool = self.tools.get(call.name)
        if tool is None or not self.offers(call.name):
            return ToolResult(call.id, f"error: no MCP tool {call.name!r}", is_error=True)
        if INVALID_ARGUMENTS in call.input:
            return ToolResult(call.id, "error: the tool arguments were not valid JSON", True)
        args = dict(call.input)
        guard = self.guards.get(tool.server)
        if guard is not None and (stopped := guard.before(tool.tool, args)) is not None:
            return await self._refuse_browsing(call, tool, *stopped)
        if refused := await self._gated(call, tool, args):
            return refused
        conn = self._connections.get(tool.server)
        if conn is None or conn.session is None:
            return ToolResult(
                call.id, f"error: MCP server {tool.server} is not connected", is_error=True
            )
        text, is_error = await self._run(conn, conn.session, tool, args)
        if guard is not None:
            if (escaped := guard.after(text)) is not None:
                with contextlib.suppress(Exception):  # leave the page; the refusal stands anyway
                    await conn.session.call_tool(
                        "browser_navigate", {"url": BLANK}, read_timeout_seconds=conn.timeout
                    )
                return await self._refuse_browsing(call, tool, *escaped)
            await self._record(
                RuntimeEvent(
                    action="runtime.browser.fetch",
                    targets={"tool": tool.name[:100], "url": guard.target(args, text)[:500]},
                    detail={"server": tool.server},
                    outcome="failed" if is_error else "ok",
                )
            )
        # Nothing secret-shaped reaches the model's context, whatever a server returned.
        return ToolResult(call.id, redact(text), is_error)

    async def _refuse_browsing(
        self, call: ToolCall, tool: McpTool, rule: str, url: str
    ) -> ToolResult:
        """A browser call refused by the agent's allowlist: audited, answered as an error."""
        await self._record(
            RuntimeEvent(
                action="runtime.browser.refused",
                targets={"tool": tool.name[:100], "url": url[:500]},
                detail={"rule": rule[:500], "server": tool.server},
                outcome="refused",
            )
        )
        return ToolResult(call.id, redact(f"refused: {rule}"), is_error=True)

    async def _record(self, event: RuntimeEvent) -> None:
        if self.audit is not None:
            await self.audit(event)

    async def _gated(
        self, call: ToolCall, tool: McpTool, args: dict[str, Any]
    ) -> ToolResult | None:
        """A writing tool's call through the gate (its approval argument taken out of
        ``args``): None to go on, else the refusal as an error result."""
        if not tool.writes:
            return None
        approval = args.pop(APPROVAL_ARG, None)
        if self.gate is None:
            return None
        if approval is not None and (isinstance(approval, bool) or not isinstance(approval, int)):
            return ToolResult(call.id, f"error: {APPROVAL_ARG} must be an integer", True)
        try:
            await self.gate(call.name, mcp_payload(call.name, args), approval)
        except McosError as e:
            return ToolResult(call.id, redact(f"error: {e.message}"), is_error=True)
        except (httpx.HTTPError, OSError) as e:  # Mission Control unreachable: not allowed
            return ToolResult(call.id, redact(f"error: {e.__class__.__name__}: {e}"), True)
        return None

    async def _run(
        self, conn: _Connection, session: ClientSession, tool: McpTool, args: dict[str, object]
    ) -> tuple[str, bool]:
        source = f"MCP server {tool.server}"
        try:
            async with asyncio.timeout(conn.timeout + 5):  # backstop for a stuck transport
                result = await session.call_tool(tool.tool, args, read_timeout_seconds=conn.timeout)
        except MCPError as e:
            return self._failed(e, conn, tool), True
        except TimeoutError:
            return f"error: {tool.tool} of {source} timed out after {conn.timeout:g}s", True
        except Exception as e:  # a tool's failure goes to the model, never up into the runtime
            why = _reason(e)
            log.warning("MCP call %s failed: %s", tool.name, why, agent=self.agent)
            return f"error: {source}: {why}", True
        text = untrusted(source, result_text(result)[:_ROOM])
        if result.is_error:
            return f"error from {tool.tool}:\n{text}", True
        return text, False

    def _failed(self, error: MCPError, conn: _Connection, tool: McpTool) -> str:
        """What the model reads when the call failed at the protocol level."""
        source = f"MCP server {tool.server}"
        if error.code == mcp_types.REQUEST_TIMEOUT:
            return f"error: {tool.tool} of {source} timed out after {conn.timeout:g}s"
        if error.code == mcp_types.CONNECTION_CLOSED:
            log.warning("%s closed the connection", source, agent=self.agent)
            return f"error: {source} is gone (connection closed); its tools fail until restart"
        # The server's own error message is outside content too.
        return f"error: {source} refused {tool.tool}:\n{untrusted(source, error.message[:_ROOM])}"

    @staticmethod
    async def _stop(conn: _Connection, *, at_once: bool = False) -> None:
        """End a connection's task: let it close its session, or cancel it (a server still
        starting, or one that does not close in time); the SDK stops a stdio child either way."""
        conn.closing.set()
        task = conn.task
        if task is None:
            return
        if not at_once:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await asyncio.shield(task)
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def aclose(self) -> None:
        """Close every session; stdio servers are stopped (and killed if they linger)."""
        connections = list(self._connections.values())
        self._connections.clear()
        self.tools.clear()
        await asyncio.gather(*(self._stop(c) for c in connections))
