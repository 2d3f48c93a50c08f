"""How long browsing and printing take: @playwright/mcp on Debian's chromium, and render_pdf.

Runs the Playwright MCP server from ``tools/browser`` (``make browser-mcp``) over stdio with the
flags the runtime gives an agent (``--allowed-origins`` for 127.0.0.1), against a page served on
loopback, and ``mcos.runtime.pdf`` on a one-page letter and a long report. Prints the median and
worst of ``--runs`` runs of each step.

    .venv/bin/python benchmarks/browser_pdf.py [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from mcos.runtime import pdf
from mcos.runtime.browser import BrowserGuard

REPO = Path(__file__).resolve().parents[1]
PLAYWRIGHT_MCP = REPO / "tools" / "browser" / "node_modules" / ".bin" / "playwright-mcp"
LETTER = "# Demand for payment\n\n" + "We ask you to settle invoice 2291 within 14 days.\n\n" * 8
REPORT = "# Quarterly report\n\n" + "\n\n".join(f"## Section {i}\n\n" + "Text. " * 300
                                               for i in range(12))  # fmt: skip


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def _serve(root: Path) -> tuple[ThreadingHTTPServer, int]:
    (root / "page.html").write_text(
        "<html><head><title>Numbers</title></head><body><h1>Quarterly numbers</h1>"
        + "<p>Revenue rose 12%.</p>" * 50
        + "</body></html>"
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


async def _browse(port: int, output: Path) -> dict[str, float]:
    """One browser session: start to tools listed, first navigate (Chromium starts), a second
    navigate, a snapshot."""
    guard = BrowserGuard("browser", ("127.0.0.1",))
    args = ["--headless", "--no-sandbox", "--isolated", "--executable-path", "/usr/bin/chromium"]
    params = StdioServerParameters(
        command=str(PLAYWRIGHT_MCP), args=[*args, *guard.args(output)], cwd=str(output)
    )
    url = f"http://127.0.0.1:{port}/page.html"
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        await session.list_tools()
        times["server start, tools listed"] = time.perf_counter() - t0
        for label in ("first navigate (Chromium starts)", "next navigate"):
            t = time.perf_counter()
            result = await session.call_tool("browser_navigate", {"url": url})
            assert not result.is_error, result
            times[label] = time.perf_counter() - t
        t = time.perf_counter()
        await session.call_tool("browser_snapshot", {})
        times["snapshot"] = time.perf_counter() - t
    return times


async def _print(root: Path, name: str, markdown: str) -> tuple[float, int]:
    path, relative = pdf.target(root, name)
    t = time.perf_counter()
    made = await pdf.render(pdf.document(markdown, "markdown", "Bench"), path, relative)
    return time.perf_counter() - t, made.pages


async def main(runs: int) -> None:
    rows: dict[str, list[float]] = {}
    pages: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="mcos-bench-browser-") as tmp:
        root = Path(tmp)
        server, port = _serve(root)
        try:
            for _ in range(runs):
                for label, seconds in (await _browse(port, root)).items():
                    rows.setdefault(f"browser: {label}", []).append(seconds)
                for label, text in (("letter", LETTER), ("report", REPORT)):
                    seconds, count = await _print(root, f"{label}.pdf", text)
                    rows.setdefault(f"render_pdf: {label}", []).append(seconds)
                    pages[f"render_pdf: {label}"] = count
        finally:
            server.shutdown()
    print(f"| step ({runs} runs) | median | worst |")
    print("|---|---:|---:|")
    for label, values in rows.items():
        extra = f" ({pages[label]} pages)" if label in pages else ""
        print(f"| {label}{extra} | {statistics.median(values):.2f} s | {max(values):.2f} s |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    asyncio.run(main(parser.parse_args().runs))
