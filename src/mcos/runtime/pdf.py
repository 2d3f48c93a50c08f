"""Markdown or HTML to a PDF in the agent's workspace, printed by Chromium through Playwright.

Only a path inside the workspace, ending in ``.pdf``, is written (symbolic links resolved
first: no escape through one). The document is printed offline with scripts off: whatever it
links to (images, fonts, trackers) is not fetched, so rendering text an outsider wrote cannot
reach the network. Markdown goes through markdown-it-py (CommonMark, tables, raw HTML
escaped). The file is written beside its target then renamed, so a reader never sees half a
PDF; its page count is read back with pypdf.
"""

from __future__ import annotations

import asyncio
import html
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from markdown_it import MarkdownIt
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Route, async_playwright
from pypdf import PdfReader
from pypdf.errors import PdfReadError

from mcos.exceptions import RenderFailed, RenderRefused

CHROMIUM = "/usr/bin/chromium"
"""Debian's Chromium (``make system-deps``); ``MCOS_CHROMIUM`` points elsewhere. Nothing is
ever downloaded."""
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking")
TIMEOUT = 60.0
"""Seconds one render may take, browser start included."""
MAX_PATH = 300

_STYLE = """
@page { size: A4; margin: 22mm 20mm; }
body { font-family: "DejaVu Serif", "Liberation Serif", serif; font-size: 11pt;
       line-height: 1.45; color: #111; }
h1, h2, h3 { font-family: "DejaVu Sans", "Liberation Sans", sans-serif; line-height: 1.2; }
table { border-collapse: collapse; } td, th { border: 1px solid #999; padding: 3px 6px; }
pre, code { font-family: "DejaVu Sans Mono", monospace; font-size: 9.5pt; }
"""


@dataclass(frozen=True)
class Rendered:
    """A PDF written into the workspace."""

    path: Path
    relative: str
    """As the agent named it, inside its workspace."""
    pages: int
    size: int
    """Bytes."""


def target(root: Path, relative: str) -> tuple[Path, str]:
    """Where ``relative`` lands inside ``root`` (and its normalised name), or ``RenderRefused``."""
    name = relative.strip()
    if not name or len(name) > MAX_PATH:
        raise RenderRefused(relative, f"give a relative path of 1 to {MAX_PATH} characters")
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or name.startswith("~"):
        raise RenderRefused(relative, "give a path relative to your workspace")
    if ".." in pure.parts:
        raise RenderRefused(relative, "'..' would leave your workspace")
    if pure.suffix.lower() != ".pdf":
        raise RenderRefused(relative, "the file name must end in .pdf")
    if any(part.startswith(".") for part in pure.parts):
        raise RenderRefused(relative, "hidden files and folders (.name) are mcos's own")
    base = root.resolve()
    path = (base / pure).resolve()  # follows symbolic links, so one cannot lead out
    if not path.is_relative_to(base):
        raise RenderRefused(relative, "it resolves outside your workspace (a symbolic link)")
    return path, str(pure)


def document(content: str, fmt: Literal["markdown", "html"], title: str = "") -> str:
    """The HTML page to print: Markdown converted, HTML as given (wrapped if a fragment)."""
    if fmt == "html" and "<html" in content[:2_000].lower():
        return content
    body = (
        MarkdownIt("commonmark", {"html": False}).enable("table").render(content)
        if fmt == "markdown"
        else content
    )
    return (
        '<!doctype html><html><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body>{body}</body></html>"
    )


def chromium() -> str:
    """The Chromium to print with (``MCOS_CHROMIUM`` or Debian's)."""
    return os.environ.get("MCOS_CHROMIUM", CHROMIUM)


async def _refuse(route: Route) -> None:
    await route.abort("blockedbyclient")


def _prepare(path: Path, relative: str) -> str:
    """The Chromium to use, once the target's folder exists."""
    executable = chromium()
    if not Path(executable).exists():
        raise RenderFailed(
            relative,
            f"no Chromium at {executable} (make system-deps installs Debian's; MCOS_CHROMIUM "
            "points at another)",
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    return executable


def _finish(partial: Path, path: Path) -> tuple[int, int]:
    """Pages and bytes of the printed file, once it replaced the target."""
    pages = len(PdfReader(partial).pages)
    partial.replace(path)
    return pages, path.stat().st_size


async def render(page_html: str, path: Path, relative: str, *, title: str = "") -> Rendered:
    """Print ``page_html`` to ``path`` (already checked with :func:`target`)."""
    executable = await asyncio.to_thread(_prepare, path, relative)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        async with asyncio.timeout(TIMEOUT), async_playwright() as p:
            browser = await p.chromium.launch(executable_path=executable, args=list(FLAGS))
            try:
                context = await browser.new_context(java_script_enabled=False, offline=True)
                await context.route("**/*", _refuse)  # nothing it links to is fetched
                page = await context.new_page()
                await page.set_content(page_html, wait_until="load")
                await page.pdf(
                    path=str(partial),
                    format="A4",
                    print_background=True,
                    display_header_footer=bool(title),
                    header_template="<span></span>",
                    footer_template=(
                        '<div style="font-size:8pt;width:100%;text-align:center">'
                        f'{html.escape(title)} — <span class="pageNumber"></span>/'
                        '<span class="totalPages"></span></div>'
                    ),
                    margin={"top": "22mm", "bottom": "22mm", "left": "20mm", "right": "20mm"},
                )
            finally:
                await browser.close()
        pages, size = await asyncio.to_thread(_finish, partial, path)
    except TimeoutError:
        raise RenderFailed(relative, f"the browser took longer than {TIMEOUT:g}s") from None
    except (PlaywrightError, PdfReadError, OSError) as e:
        raise RenderFailed(relative, f"{e.__class__.__name__}: {str(e)[:300]}") from None
    finally:
        partial.unlink(missing_ok=True)
    return Rendered(path, relative, pages, size)
