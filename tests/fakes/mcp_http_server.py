"""A small real MCP server over streamable HTTP, for the MCP client tests.

``python -m tests.fakes.mcp_http_server PORT`` serves ``http://127.0.0.1:PORT/mcp`` with the
official SDK's ``MCPServer``: ``add`` answers, ``explode`` raises (an error result), ``slow``
sleeps longer than a test's timeout, ``picture`` returns an image block.
"""

from __future__ import annotations

import asyncio
import base64
import sys

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.utilities.types import Image

server = MCPServer("calc")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def explode(reason: str) -> str:
    """Always fails, with the reason given."""
    raise ToolError(f"exploded: {reason}")


@server.tool()
async def slow(seconds: float) -> str:
    """Answer after ``seconds``."""
    await asyncio.sleep(seconds)
    return "finally"


@server.tool()
def picture() -> Image:
    """A 1x1 PNG."""
    png = base64.b64decode(
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
    )
    return Image(data=png, format="png")


if __name__ == "__main__":
    server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[1]))
