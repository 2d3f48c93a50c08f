"""``render_pdf``: Markdown or HTML printed by Debian's chromium into the agent's workspace — a
valid PDF whose text pypdf extracts, nothing it links to fetched, paths that leave the workspace
refused, every render and refusal audited."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader

from mcos.client import Calls
from mcos.models.base import ToolCall
from mcos.runtime import pdf
from mcos.runtime.agent import AgentRuntime
from tests.conftest import IN_CI
from tests.runtime.conftest import Rig, RigFactory

LETTER = """# Demand for payment

**To:** Acme Supplies Ltd
**Re:** Invoice 2291, unpaid since 1 March

| Item | Amount |
|---|---|
| Invoice 2291 | 4,200.00 EUR |

Dear Sir or Madam,

We ask you to settle the amount above within fourteen days.

<script>document.title = "owned"</script>
"""


def need_chromium() -> None:
    """Skip without Debian's chromium (fail under CI: ``make system-deps`` installs it)."""
    if not Path(pdf.chromium()).exists():
        if IN_CI:
            pytest.fail(f"{pdf.chromium()} is missing (make system-deps installs it)")
        pytest.skip(f"{pdf.chromium()} is missing (make system-deps installs it)")


@pytest.fixture
def gene(rig_factory: RigFactory) -> tuple[Rig, AgentRuntime]:
    need_chromium()
    rig = rig_factory({"gene": 'allowed_tools = ["render_pdf", "memory_write"]'})
    return rig, rig.runtime("gene")


class _Quiet(SimpleHTTPRequestHandler):
    hits: list[str]

    def log_message(self, format: str, *args: Any) -> None:
        self.hits.append(self.path)


@pytest.fixture
def tracker() -> Iterator[tuple[str, list[str]]]:
    """A server that remembers every request: (its URL, paths requested)."""
    hits: list[str] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("T", (_Quiet,), {"hits": hits}))
    thread = threading.Thread(target=server.serve_forever, name="tracker", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()


async def test_markdown_becomes_a_pdf_in_the_workspace(
    gene: tuple[Rig, AgentRuntime], tracker: tuple[str, list[str]]
) -> None:
    """The tool answers with path and page count; pypdf reads the file and its text; the
    letter's script did not run and its image was not fetched; the render is audited."""
    rig, agent = gene
    url, hits = tracker
    content = LETTER + f"\n![logo]({url}/logo.png)\n\n<img src='{url}/pixel.gif'>\n"
    done = await agent.tools.call(
        ToolCall("r1", "render_pdf", {"path": "letters/acme.pdf", "content": content,
                                      "title": "Demand to Acme"})
    )  # fmt: skip
    assert not done.is_error, done.content
    path = agent.workspace.root / "letters" / "acme.pdf"
    assert done.content.startswith("wrote letters/acme.pdf in your workspace")
    assert "1 page," in done.content
    reader = PdfReader(path)
    assert len(reader.pages) == 1
    text = reader.pages[0].extract_text()
    assert "Demand for payment" in text
    assert "4,200.00 EUR" in text
    assert "<script>" in text  # raw HTML in Markdown is shown as text, never run
    assert "Demand to Acme" in text  # the footer
    assert hits == []  # nothing the letter links to was fetched
    assert not list(path.parent.glob(".*partial"))
    audit = await rig.client().do(Calls.audit(action="runtime.pdf.render"))
    assert [(e.actor, e.targets, e.detail["pages"], e.outcome) for e in audit] == [
        ("agent:gene", {"path": "letters/acme.pdf"}, 1, "ok")
    ]


async def test_html_is_printed_with_scripts_off(gene: tuple[Rig, AgentRuntime]) -> None:
    """A whole HTML page is printed as given, without running its scripts; a long one spans
    pages."""
    _, agent = gene
    page = (
        "<html><body><p id='x'>static</p><script>document.getElementById('x').textContent"
        "='scripted'</script>" + "<p>line</p>" * 200 + "</body></html>"
    )
    done = await agent.tools.call(
        ToolCall("r2", "render_pdf", {"path": "report.pdf", "content": page, "format": "html"})
    )
    assert not done.is_error, done.content
    reader = PdfReader(agent.workspace.root / "report.pdf")
    assert len(reader.pages) > 1
    assert f"{len(reader.pages)} pages" in done.content
    first = reader.pages[0].extract_text()
    assert "static" in first
    assert "scripted" not in first


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("../outside.pdf", "'..' would leave your workspace"),
        ("/tmp/x.pdf", "relative to your workspace"),
        ("~/x.pdf", "relative to your workspace"),
        ("notes/AGENTS.md", "must end in .pdf"),
        (".mcos/x.pdf", "hidden files"),
        ("link/x.pdf", "resolves outside your workspace"),
    ],
)
async def test_paths_that_leave_the_workspace_are_refused(
    gene: tuple[Rig, AgentRuntime], tmp_path: Path, path: str, why: str
) -> None:
    """Each escape is an error the model reads, audited, and nothing is written."""
    rig, agent = gene
    outside = tmp_path / "outside"
    outside.mkdir()
    (agent.workspace.root / "link").symlink_to(outside)
    refused = await agent.tools.call(
        ToolCall("r3", "render_pdf", {"path": path, "content": "# hi"})
    )
    assert refused.is_error
    assert refused.content.startswith(f"error: refused to write {path!r}: ")
    assert why in refused.content
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "outside.pdf").exists()
    audit = await rig.client().do(Calls.audit(action="runtime.pdf.refused"))
    assert [(e.targets, e.outcome) for e in audit] == [({"path": path}, "refused")]


async def test_no_chromium_is_a_readable_error(
    gene: tuple[Rig, AgentRuntime], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a browser the model is told what is missing and how to install it."""
    rig, agent = gene
    monkeypatch.setenv("MCOS_CHROMIUM", "/nonexistent/chromium")
    failed = await agent.tools.call(
        ToolCall("r4", "render_pdf", {"path": "x.pdf", "content": "# hi"})
    )
    assert failed.is_error
    assert "no Chromium at /nonexistent/chromium (make system-deps" in failed.content
    audit = await rig.client().do(Calls.audit(action="runtime.pdf.render"))
    assert [e.outcome for e in audit] == ["failed"]
